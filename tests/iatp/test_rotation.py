"""Key rotation statements: both keys must sign, nothing may be changed afterwards."""

from __future__ import annotations

import dataclasses
import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iatp.errors import RotationError
from iatp.identity import AgentIdentity
from iatp.rotation import (
    MAX_STATEMENT_BYTES,
    ROTATION_ACCEPT_DOMAIN,
    ROTATION_DOMAIN,
    RotationStatement,
    decode_rotation,
    rotate,
    verify_rotation,
)

OLD = AgentIdentity.from_seed(b"\x01" * 32)
NEW = AgentIdentity.from_seed(b"\x02" * 32)
MALLORY = AgentIdentity.from_seed(b"\x03" * 32)
ISSUED_AT = 1_700_000_000_000


def _valid() -> RotationStatement:
    return rotate(OLD, NEW, sequence=1, issued_at_ms=ISSUED_AT)


def _claim(old_did: object, new_did: object, sequence: object, issued_at: object) -> bytes:
    return msgpack.packb([old_did, new_did, sequence, issued_at], use_bin_type=True)


def _hand_signed(
    *,
    old_signer: AgentIdentity,
    new_signer: AgentIdentity,
    old_did: str = OLD.did,
    new_did: str = NEW.did,
    sequence: object = 1,
    issued_at: object = ISSUED_AT,
) -> RotationStatement:
    claim = _claim(old_did, new_did, sequence, issued_at)
    old_sig = old_signer.sign(ROTATION_DOMAIN + claim)
    new_sig = new_signer.sign(ROTATION_ACCEPT_DOMAIN + claim + old_sig)
    return RotationStatement(old_did, new_did, sequence, issued_at, old_sig, new_sig)  # type: ignore[arg-type]


def _refused(statement: RotationStatement) -> None:
    with pytest.raises(RotationError):
        verify_rotation(statement)
    # And the same bytes are refused on the wire.
    try:
        encoded = statement.encode()
    except (TypeError, ValueError, OverflowError):
        return  # not even encodable
    with pytest.raises(RotationError):
        decode_rotation(encoded)


# -- accepted --------------------------------------------------------------------


def test_valid_statement_verifies() -> None:
    statement = _valid()
    assert verify_rotation(statement) is statement
    assert statement.old_did == OLD.did
    assert statement.new_did == NEW.did


def test_valid_statement_round_trips_through_encode_and_decode() -> None:
    statement = _valid()
    encoded = statement.encode()
    assert len(encoded) <= MAX_STATEMENT_BYTES
    decoded = decode_rotation(encoded)
    assert decoded == statement
    assert decoded.encode() == encoded


def test_hand_built_statement_matches_rotate() -> None:
    # The documented signing input is exactly what rotate() signs.
    assert _hand_signed(old_signer=OLD, new_signer=NEW) == _valid()


def test_large_sequence_and_timestamps_verify() -> None:
    for sequence in (0, 2**32, 2**63 - 1):
        statement = rotate(OLD, NEW, sequence=sequence, issued_at_ms=2**63 - 1)
        assert decode_rotation(statement.encode()) == statement


# -- refused: signatures ---------------------------------------------------------------


def test_statement_signed_by_the_new_key_alone_is_refused() -> None:
    _refused(_hand_signed(old_signer=NEW, new_signer=NEW))


def test_statement_signed_by_the_old_key_alone_is_refused() -> None:
    _refused(_hand_signed(old_signer=OLD, new_signer=OLD))


def test_old_signature_by_an_unrelated_key_is_refused() -> None:
    _refused(_hand_signed(old_signer=MALLORY, new_signer=NEW))


def test_countersignature_by_an_unrelated_key_is_refused() -> None:
    _refused(_hand_signed(old_signer=OLD, new_signer=MALLORY))


def test_hijack_naming_the_victim_as_old_key_is_refused() -> None:
    # Mallory claims OLD hands over to Mallory, signing everything herself.
    _refused(_hand_signed(old_signer=MALLORY, new_signer=MALLORY, new_did=MALLORY.did))


def test_signatures_swapped_are_refused() -> None:
    s = _valid()
    _refused(dataclasses.replace(s, old_signature=s.new_signature, new_signature=s.old_signature))


def test_countersignature_not_covering_the_old_signature_is_refused() -> None:
    claim = _claim(OLD.did, NEW.did, 1, ISSUED_AT)
    old_sig = OLD.sign(ROTATION_DOMAIN + claim)
    new_sig = NEW.sign(ROTATION_ACCEPT_DOMAIN + claim)
    _refused(RotationStatement(OLD.did, NEW.did, 1, ISSUED_AT, old_sig, new_sig))


def test_signatures_under_the_wrong_domain_are_refused() -> None:
    claim = _claim(OLD.did, NEW.did, 1, ISSUED_AT)
    old_sig = OLD.sign(ROTATION_ACCEPT_DOMAIN + claim)
    new_sig = NEW.sign(ROTATION_DOMAIN + claim + old_sig)
    _refused(RotationStatement(OLD.did, NEW.did, 1, ISSUED_AT, old_sig, new_sig))


def test_a_countersignature_from_another_rotation_is_refused() -> None:
    one = _valid()
    two = rotate(OLD, NEW, sequence=2, issued_at_ms=ISSUED_AT)
    _refused(dataclasses.replace(one, new_signature=two.new_signature))


@pytest.mark.parametrize("field", ["old_signature", "new_signature"])
@pytest.mark.parametrize("byte_index", [0, 31, 63])
def test_flipped_bit_in_a_signature_is_refused(field: str, byte_index: int) -> None:
    s = _valid()
    sig = bytearray(getattr(s, field))
    sig[byte_index] ^= 0x80
    _refused(dataclasses.replace(s, **{field: bytes(sig)}))


@pytest.mark.parametrize("field", ["old_signature", "new_signature"])
@pytest.mark.parametrize("value", [b"", b"\x00" * 63, b"\x00" * 65, b"\x00" * 64])
def test_signature_of_wrong_length_or_zero_is_refused(field: str, value: bytes) -> None:
    _refused(dataclasses.replace(_valid(), **{field: value}))


# -- refused: fields changed after signing ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("old_did", MALLORY.did),
        ("new_did", MALLORY.did),
        ("sequence", 2),
        ("sequence", 0),
        ("issued_at_ms", ISSUED_AT + 1),
        ("issued_at_ms", ISSUED_AT - 1),
    ],
)
def test_field_changed_after_signing_is_refused(field: str, value: object) -> None:
    _refused(dataclasses.replace(_valid(), **{field: value}))


def test_old_and_new_swapped_is_refused() -> None:
    s = _valid()
    _refused(dataclasses.replace(s, old_did=s.new_did, new_did=s.old_did))


def test_rotate_refuses_the_same_key_twice() -> None:
    with pytest.raises(RotationError):
        rotate(OLD, OLD, sequence=1, issued_at_ms=ISSUED_AT)


def test_statement_with_old_equal_to_new_is_refused_even_if_signed() -> None:
    _refused(_hand_signed(old_signer=OLD, new_signer=OLD, new_did=OLD.did))


# -- refused: malformed fields and encodings ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sequence", -1),
        ("sequence", 2**63),
        ("sequence", "1"),
        ("sequence", 1.0),
        ("sequence", None),
        ("issued_at_ms", -1),
        ("issued_at_ms", 2**64),
        ("issued_at_ms", "now"),
        ("old_did", "did:web:example.com"),
        ("new_did", "not a did"),
        ("old_did", None),
        ("new_did", b"did:key:z6Mk"),
        ("old_did", ["did:key:z6Mk"]),
        ("old_signature", "a" * 64),
        ("new_signature", None),
    ],
)
def test_wrong_typed_or_invalid_field_is_refused(field: str, value: object) -> None:
    _refused(dataclasses.replace(_valid(), **{field: value}))


def test_boolean_sequence_is_refused_even_when_validly_signed() -> None:
    # msgpack encodes True as a boolean, not as the integer 1: it is not a sequence.
    _refused(_hand_signed(old_signer=OLD, new_signer=NEW, sequence=True))


def test_negative_sequence_is_refused_even_when_validly_signed() -> None:
    _refused(_hand_signed(old_signer=OLD, new_signer=NEW, sequence=-5))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved byte"),
        pytest.param(b"garbage bytes", id="garbage"),
        pytest.param(msgpack.packb([1, 2, 3]), id="three ints"),
        pytest.param(msgpack.packb({"old": "x"}), id="map"),
        pytest.param(msgpack.packb("did:key:z6Mk"), id="string"),
        pytest.param(b"\x96" + b"\xc0" * 6, id="six nils"),
        pytest.param(b"\x91" * 1000, id="deep nesting"),
        pytest.param(b"\x00" * (MAX_STATEMENT_BYTES + 1), id="oversized"),
    ],
)
def test_garbage_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(RotationError):
        decode_rotation(data)


def test_every_truncation_is_refused() -> None:
    encoded = _valid().encode()
    for cut in range(len(encoded)):
        with pytest.raises(RotationError):
            decode_rotation(encoded[:cut])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(RotationError):
        decode_rotation(_valid().encode() + b"\x00")


def test_non_string_input_is_refused() -> None:
    with pytest.raises(RotationError):
        decode_rotation("not bytes")  # type: ignore[arg-type]


def test_wrong_field_count_is_refused() -> None:
    s = _valid()
    fields = [s.old_did, s.new_did, s.sequence, s.issued_at_ms, s.old_signature, s.new_signature]
    for bad in (fields[:5], [*fields, b""]):
        with pytest.raises(RotationError, match="6 fields"):
            decode_rotation(msgpack.packb(bad, use_bin_type=True))


def test_wrong_types_on_the_wire_are_refused() -> None:
    s = _valid()
    fields: list[object] = [
        s.old_did,
        s.new_did,
        s.sequence,
        s.issued_at_ms,
        s.old_signature,
        s.new_signature,
    ]
    replacements: list[tuple[int, object]] = [
        (0, s.old_did.encode()),  # DID as bin
        (1, s.new_did.encode()),
        (2, str(s.sequence)),
        (2, True),
        (3, float(s.issued_at_ms)),
        (4, s.old_signature.hex()),  # signature as str
        (5, None),
    ]
    for index, value in replacements:
        mutated = list(fields)
        mutated[index] = value
        with pytest.raises(RotationError, match="wrong type"):
            decode_rotation(msgpack.packb(mutated, use_bin_type=True))


def test_signatures_as_msgpack_str_are_refused() -> None:
    s = _valid()
    # use_bin_type=False encodes bytes as raw str: the wrong wire type.
    data = msgpack.packb(
        [s.old_did, s.new_did, s.sequence, s.issued_at_ms, s.old_signature, s.new_signature],
        use_bin_type=False,
    )
    with pytest.raises(RotationError):
        decode_rotation(data)


def test_non_canonical_wide_integer_is_refused() -> None:
    s = _valid()
    # sequence 1 as uint64 (0xcf) instead of positive fixint.
    head = b"\x96" + msgpack.packb(s.old_did) + msgpack.packb(s.new_did)
    tail = msgpack.packb(s.issued_at_ms) + msgpack.packb(s.old_signature, use_bin_type=True)
    tail += msgpack.packb(s.new_signature, use_bin_type=True)
    canonical = head + msgpack.packb(1) + tail
    assert decode_rotation(canonical) == s
    with pytest.raises(RotationError, match="canonical"):
        decode_rotation(head + b"\xcf" + struct.pack(">Q", 1) + tail)


def test_non_canonical_array_header_is_refused() -> None:
    encoded = _valid().encode()
    assert encoded[0] == 0x96
    with pytest.raises(RotationError, match="canonical"):
        decode_rotation(b"\xdc\x00\x06" + encoded[1:])


def test_non_canonical_string_header_is_refused() -> None:
    s = _valid()
    encoded = s.encode()
    did = s.old_did.encode()
    # A 56-character str is str8 (0xd9 0x38); re-encode it as str16.
    assert encoded[1:3] == b"\xd9" + bytes([len(did)])
    wide = encoded[:1] + b"\xda" + struct.pack(">H", len(did)) + encoded[3:]
    with pytest.raises(RotationError, match="canonical"):
        decode_rotation(wide)


def test_non_canonical_bin_header_is_refused() -> None:
    s = _valid()
    encoded = s.encode()
    marker = b"\xc4\x40" + s.old_signature
    assert marker in encoded
    wide = encoded.replace(marker, b"\xc5\x00\x40" + s.old_signature)
    with pytest.raises(RotationError, match="canonical"):
        decode_rotation(wide)


# -- fuzz ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_STATEMENT_BYTES + 10))
def test_random_bytes_raise_only_rotation_error(data: bytes) -> None:
    try:
        decode_rotation(data)
    except RotationError:
        return
    raise AssertionError("random bytes decoded to a valid rotation statement")


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_statement_is_refused_unless_unchanged(data: st.DataObject) -> None:
    encoded = bytearray(_valid().encode())
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(encoded) - 1))
        encoded[index] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode_rotation(bytes(encoded))
    except RotationError:
        return
    except Exception as exc:
        raise AssertionError(f"leaked {type(exc).__name__}: {exc}") from exc
    assert decoded.encode() == bytes(encoded) == _valid().encode()
