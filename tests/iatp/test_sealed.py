"""Sealed frames (iatp.md §16): a signed envelope encrypted to its recipient's DID."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iatp.clock import ManualClock
from iatp.envelope import new_envelope, open_envelope, seal_envelope
from iatp.errors import FieldTypeError, IATPError, InvalidSeal, WrongAudience
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache
from iatp.sealed import open_sealed_frame, parse_sealed_frame, seal_frame_to

NOW = 1_800_000_000_000
ALICE, BOB, CAROL = (AgentIdentity.generate() for _ in range(3))
SECRET = b"the launch code is 0000-TOP-SECRET"


def signed(recipient: str = BOB.did, body: bytes = SECRET) -> bytes:
    envelope = new_envelope(
        sender=ALICE.did, type="vault.open", recipient=recipient, body=body, now_ms=NOW
    )
    return seal_envelope(envelope, ALICE)


def receive(frame: bytes, me: AgentIdentity) -> bytes:
    """The recipient's whole path: open the seal, then the signed frame as always."""
    inner = open_sealed_frame(parse_sealed_frame(frame), me)
    envelope = open_envelope(inner, clock=ManualClock(NOW), audience=me.did, replay=ReplayCache())
    return envelope.body


def test_only_the_recipient_reads_it_and_the_signature_still_holds() -> None:
    frame = seal_frame_to(BOB.did, signed())
    assert receive(frame, BOB) == SECRET
    for visible in (SECRET, ALICE.did.encode(), b"vault.open"):
        assert visible not in frame  # neither body, sender nor type shows
    with pytest.raises(WrongAudience):
        receive(frame, CAROL)
    forged = parse_sealed_frame(frame)
    with pytest.raises(InvalidSeal):  # Carol rewrites the recipient field: no key of hers opens it
        open_sealed_frame(
            type(forged)(CAROL.did, forged.ephemeral_public, forged.nonce, forged.ciphertext), CAROL
        )


def test_every_frame_has_its_own_ephemeral_key() -> None:
    one, two = seal_frame_to(BOB.did, signed()), seal_frame_to(BOB.did, signed())
    assert parse_sealed_frame(one).ephemeral_public != parse_sealed_frame(two).ephemeral_public


def test_a_recipient_cannot_forward_it_as_if_it_were_for_someone_else() -> None:
    """Sign then encrypt: Bob re-seals Alice's signed frame to Carol; Carol refuses it."""
    inner = open_sealed_frame(parse_sealed_frame(seal_frame_to(BOB.did, signed())), BOB)
    forwarded = seal_frame_to(CAROL.did, inner)
    with pytest.raises(WrongAudience):  # the signed payload names Bob
        receive(forwarded, CAROL)


@pytest.mark.parametrize("where", [-1, -30, -200])
def test_tampering_with_the_ciphertext_breaks_the_seal(where: int) -> None:
    frame = bytearray(seal_frame_to(BOB.did, signed()))
    frame[where] ^= 0x01  # inside the ciphertext (or its tag, for -1)
    with pytest.raises(InvalidSeal):
        receive(bytes(frame), BOB)


def test_a_low_order_ephemeral_key_is_refused() -> None:
    good = parse_sealed_frame(seal_frame_to(BOB.did, signed()))
    zero = msgpack.packb([1, BOB.did, bytes(32), good.nonce, good.ciphertext], use_bin_type=True)
    with pytest.raises(InvalidSeal):
        open_sealed_frame(parse_sealed_frame(zero), BOB)


def test_strict_outer_form() -> None:
    good = msgpack.unpackb(seal_frame_to(BOB.did, signed()), raw=False)
    with pytest.raises(FieldTypeError):
        parse_sealed_frame(msgpack.packb([1, BOB.did, b"short", good[3], good[4]]))
    with pytest.raises(FieldTypeError):
        parse_sealed_frame(msgpack.packb([1, BOB.did, good[2], good[3], b"\0" * 15]))


GOOD = seal_frame_to(BOB.did, signed())


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.tuples(st.integers(0, len(GOOD) - 1), st.integers(1, 255)).map(
            lambda m: GOOD[: m[0]] + bytes([GOOD[m[0]] ^ m[1]]) + GOOD[m[0] + 1 :]
        ),
    )
)
def test_fuzzed_frames_only_raise_iatp_errors(data: bytes) -> None:
    try:
        receive(data, BOB)
    except IATPError:
        return
    assert data == GOOD
