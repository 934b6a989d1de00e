"""Session frames (iatp.md §15): envelopes encrypted and authenticated inside a session."""

from __future__ import annotations

import msgpack
import nacl.bindings
import nacl.exceptions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iatp.clock import ManualClock
from iatp.envelope import decode_payload, encode_payload, new_envelope
from iatp.errors import (
    FieldTypeError,
    IATPError,
    InvalidSessionMAC,
    NonCanonicalEncoding,
    SenderMismatch,
    UnknownSession,
)
from iatp.handshake import HandshakeInitiator, HandshakeResponder, SessionKeys
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache
from iatp.session_frame import (
    NONCE_BYTES,
    SESSION_DOMAIN,
    TAG_BYTES,
    open_session_payload,
    parse_session_frame,
    seal_session_frame,
    seal_session_payload,
    verify_session_frame,
)

NOW = 1_800_000_000_000


def handshake(a: AgentIdentity, b: AgentIdentity) -> tuple[SessionKeys, SessionKeys]:
    clock = ManualClock(NOW)
    initiator = HandshakeInitiator(a, b.did, clock=clock)
    responder = HandshakeResponder(b, clock=clock, seen_hellos=ReplayCache())
    responder.receive_hello(initiator.hello())
    confirm, a_keys = initiator.finish(responder.accept())
    return a_keys, responder.confirm(confirm)


ALICE, BOB, MALLORY = AgentIdentity.generate(), AgentIdentity.generate(), AgentIdentity.generate()
A_KEYS, B_KEYS = handshake(ALICE, BOB)


def envelope(sender: str = ALICE.did, recipient: str = BOB.did, body: bytes = b"hello"):  # type: ignore[no-untyped-def]
    return new_envelope(sender=sender, type="echo", recipient=recipient, body=body, now_ms=NOW)


def test_round_trip_both_directions() -> None:
    sent = envelope()
    frame = parse_session_frame(seal_session_frame(sent, A_KEYS))
    assert decode_payload(verify_session_frame(frame, B_KEYS)) == sent
    back = envelope(BOB.did, ALICE.did, b"reply")
    frame = parse_session_frame(seal_session_frame(back, B_KEYS))
    assert decode_payload(verify_session_frame(frame, A_KEYS)).body == b"reply"


def test_nothing_of_the_envelope_is_readable_in_the_frame() -> None:
    secret = b"the launch code is 0000-TOP-SECRET"
    sent = envelope(body=secret)
    data = seal_session_frame(sent, A_KEYS)
    assert secret not in data
    assert encode_payload(sent) not in data
    assert b"echo" not in data  # the type too
    # Every frame has its own nonce: the same envelope twice looks unrelated.
    again = seal_session_frame(sent, A_KEYS)
    assert parse_session_frame(again).nonce != parse_session_frame(data).nonce
    assert parse_session_frame(again).ciphertext != parse_session_frame(data).ciphertext


def test_a_reflected_frame_does_not_open() -> None:
    """Keys are directional: Alice's frame bounced back to Alice is refused."""
    frame = parse_session_frame(seal_session_frame(envelope(), A_KEYS))
    forged_back = type(frame)(BOB.did, frame.session_id, frame.nonce, frame.ciphertext)
    with pytest.raises(InvalidSessionMAC):
        verify_session_frame(forged_back, A_KEYS)


@pytest.mark.parametrize("field", ["nonce", "ciphertext", "tag"])
def test_tampering_breaks_the_tag(field: str) -> None:
    frame = parse_session_frame(seal_session_frame(envelope(), A_KEYS))
    nonce, ciphertext = bytearray(frame.nonce), bytearray(frame.ciphertext)
    if field == "nonce":
        nonce[3] ^= 0x01
    elif field == "ciphertext":
        ciphertext[len(ciphertext) // 2] ^= 0x01
    else:
        ciphertext[-1] ^= 0x01
    tampered = type(frame)(frame.sender, frame.session_id, bytes(nonce), bytes(ciphertext))
    with pytest.raises(InvalidSessionMAC) as caught:
        verify_session_frame(tampered, B_KEYS)
    assert caught.value.code == "bad_mac"


def test_unknown_or_foreign_sessions_are_refused() -> None:
    frame = parse_session_frame(seal_session_frame(envelope(), A_KEYS))
    with pytest.raises(UnknownSession):
        verify_session_frame(frame, None)
    _, other_b = handshake(ALICE, BOB)  # a newer session replaced the old one
    with pytest.raises(UnknownSession):
        verify_session_frame(frame, other_b)
    m_keys, _ = handshake(MALLORY, BOB)
    with pytest.raises(UnknownSession):  # Bob's session with Mallory is not Alice's
        verify_session_frame(frame, handshake(BOB, MALLORY)[1])
    assert m_keys.peer.did == BOB.did


def test_a_session_party_cannot_speak_for_someone_else() -> None:
    """Mallory holds a session with Bob, but a payload naming Alice is refused."""
    m_keys, b_keys = handshake(MALLORY, BOB)
    claimed = envelope(sender=ALICE.did)
    payload = encode_payload(claimed)
    nonce = bytes(NONCE_BYTES)
    sealed = seal_session_payload(m_keys.send_key, m_keys.session_id, MALLORY.did, nonce, payload)
    raw = msgpack.packb([1, MALLORY.did, m_keys.session_id, nonce, sealed], use_bin_type=True)
    opened = verify_session_frame(parse_session_frame(raw), b_keys)  # Mallory's own key: opens
    with pytest.raises(SenderMismatch):
        decode_payload(opened)


def test_sealing_to_someone_outside_the_session_is_refused() -> None:
    with pytest.raises(SenderMismatch):
        seal_session_frame(envelope(recipient=MALLORY.did), A_KEYS)


def test_strict_outer_form() -> None:
    good = seal_session_frame(envelope(), A_KEYS)
    fields = msgpack.unpackb(good, raw=False)
    with pytest.raises(FieldTypeError):
        parse_session_frame(msgpack.packb([1, ALICE.did, b"short", fields[3], fields[4]]))
    with pytest.raises(FieldTypeError):  # a 23-byte nonce
        parse_session_frame(msgpack.packb([1, ALICE.did, fields[2], b"\0" * 23, fields[4]]))
    with pytest.raises(FieldTypeError):  # shorter than a tag
        parse_session_frame(msgpack.packb([1, ALICE.did, fields[2], fields[3], b"\0" * 15]))
    # The same values with a non-minimal integer encoding of the version (0xcc 0x01).
    non_canonical = b"\x95\xcc\x01" + good[2:]
    with pytest.raises(NonCanonicalEncoding):
        parse_session_frame(non_canonical)
    assert SESSION_DOMAIN.endswith(b"\0")


GOOD = seal_session_frame(envelope(), A_KEYS)


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=600),
        st.tuples(st.integers(0, len(GOOD) - 1), st.integers(1, 255)).map(
            lambda m: GOOD[: m[0]] + bytes([GOOD[m[0]] ^ m[1]]) + GOOD[m[0] + 1 :]
        ),
    )
)
def test_fuzzed_frames_only_raise_iatp_errors(data: bytes) -> None:
    try:
        decode_payload(verify_session_frame(parse_session_frame(data), B_KEYS))
    except IATPError:
        return
    assert data == GOOD  # only the untouched frame may pass


# -- the AEAD fast path (PyNaCl's cffi module) against PyNaCl's public wrappers -----------


@settings(max_examples=200, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES),
    session_id=st.binary(min_size=16, max_size=16),
    sender=st.text(max_size=80),
    payload=st.binary(max_size=2048),
)
def test_the_fast_aead_is_the_public_one(
    key: bytes, nonce: bytes, session_id: bytes, sender: str, payload: bytes
) -> None:
    aad = SESSION_DOMAIN + session_id + sender.encode()
    sealed = seal_session_payload(key, session_id, sender, nonce, payload)
    assert sealed == nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        payload, aad, nonce, key
    )
    assert open_session_payload(key, session_id, sender, nonce, sealed) == payload


@settings(max_examples=100, deadline=None)
@given(
    payload=st.binary(max_size=512),
    flip=st.integers(min_value=0),
    what=st.sampled_from(["ciphertext", "key", "nonce", "session", "sender"]),
)
def test_the_fast_aead_refuses_every_change(payload: bytes, flip: int, what: str) -> None:
    key, nonce, sid, sender = bytes(range(32)), bytes(range(24)), bytes(16), "did:key:z6Mk"
    sealed = seal_session_payload(key, sid, sender, nonce, payload)

    def flipped(data: bytes) -> bytes:
        index = flip % len(data)
        return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]

    args = {"key": key, "session_id": sid, "sender": sender, "nonce": nonce}
    ciphertext = sealed
    if what == "ciphertext":
        ciphertext = flipped(sealed)
    elif what == "session":
        args["session_id"] = flipped(sid)
    elif what == "sender":
        args["sender"] = sender + "x"
    else:
        args[what] = flipped(args[what])  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionMAC):
        open_session_payload(ciphertext=ciphertext, **args)  # type: ignore[arg-type]


def test_a_truncated_or_odd_sized_input_takes_the_checked_path() -> None:
    key, nonce, sid = bytes(32), bytes(24), bytes(16)
    with pytest.raises(InvalidSessionMAC):
        open_session_payload(key, sid, "s", nonce, bytes(TAG_BYTES - 1))
    with pytest.raises(InvalidSessionMAC):
        open_session_payload(key, sid, "s", nonce, bytes(TAG_BYTES))  # empty payload, bad tag
    assert (
        open_session_payload(key, sid, "s", nonce, seal_session_payload(key, sid, "s", nonce, b""))
        == b""
    )
    with pytest.raises(nacl.exceptions.TypeError):
        seal_session_payload(bytes(31), sid, "s", nonce, b"x")  # a wrong key size is PyNaCl's error
