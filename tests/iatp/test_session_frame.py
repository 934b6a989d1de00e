"""Session frames (iatp.md §15): envelopes encrypted and authenticated inside a session."""

from __future__ import annotations

import msgpack
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
