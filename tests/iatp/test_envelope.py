"""The signed IATP envelope: round trips and every rejection as its own error class.

Malformed payloads are built by hand with ``msgpack.packb`` (or raw bytes for
non-canonical encodings) and re-signed with the sender's real key, so that the
signature is valid and only the rule under test is broken.
"""

from __future__ import annotations

import struct
from collections.abc import Collection

import msgpack
import pytest

from iatp.clock import ManualClock
from iatp.did import did_from_public_key
from iatp.envelope import (
    DEFAULT_LIMITS,
    IATP_VERSION,
    ID_BYTES,
    MAX_HEADER_FIELD_LENGTH,
    MAX_RECIPIENT_LENGTH,
    MAX_TYPE_LENGTH,
    SIGNING_DOMAIN,
    Envelope,
    EnvelopeLimits,
    check_validity,
    decode_payload,
    encode_frame,
    encode_payload,
    new_envelope,
    new_envelope_id,
    open_envelope,
    parse_frame,
    seal_envelope,
    verify_frame,
)
from iatp.errors import (
    EnvelopeError,
    ExpiredEnvelope,
    ExtraFields,
    FieldTypeError,
    InvalidSenderDID,
    InvalidSignature,
    IssuedInFuture,
    LifetimeTooLong,
    MalformedEnvelope,
    MissingFields,
    NonCanonicalEncoding,
    OversizedEnvelope,
    ReplayedEnvelope,
    SenderMismatch,
    TrailingBytes,
    UnsupportedVersion,
    WrongAudience,
)
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache

ALICE = AgentIdentity.from_seed(b"\xa1" * 32)
BOB = AgentIdentity.from_seed(b"\xb0" * 32)
MALLORY = AgentIdentity.from_seed(b"\x66" * 32)
T0 = 1_700_000_000_000
LIFETIME = 60_000
SKEW = DEFAULT_LIMITS.clock_skew_ms
ENVELOPE_ID = bytes(range(16))
CORRELATION_ID = bytes(range(16, 32))


def make_envelope(**overrides: object) -> Envelope:
    kwargs: dict[str, object] = {
        "sender": ALICE.did,
        "type": "task.request",
        "recipient": BOB.did,
        "body": b"hello bob",
        "now_ms": T0,
        "lifetime_ms": LIFETIME,
        "envelope_id": ENVELOPE_ID,
    }
    kwargs.update(overrides)
    return new_envelope(**kwargs)  # type: ignore[arg-type]


def valid_fields() -> list[object]:
    return make_envelope(headers={"trace": "abc"}).payload_fields()


def sign_payload(
    payload: bytes, signer: AgentIdentity = ALICE, frame_sender: str | None = None
) -> bytes:
    signature = signer.sign(SIGNING_DOMAIN + payload)
    return encode_frame(frame_sender or signer.did, payload, signature)


def frame_of(fields: object, signer: AgentIdentity = ALICE) -> bytes:
    return sign_payload(msgpack.packb(fields, use_bin_type=True), signer)


def raw_payload(parts: list[bytes], header: bytes = b"\x99") -> bytes:
    """A payload array from individually encoded elements (for non-canonical forms)."""
    return header + b"".join(parts)


def canonical_parts(fields: list[object]) -> list[bytes]:
    return [msgpack.packb(f, use_bin_type=True) for f in fields]


def open_(
    frame: bytes,
    *,
    clock: ManualClock | None = None,
    audience: str | Collection[str] = BOB.did,
    limits: EnvelopeLimits = DEFAULT_LIMITS,
    replay: ReplayCache | None = None,
) -> Envelope:
    return open_envelope(
        frame, clock=clock or ManualClock(T0), audience=audience, limits=limits, replay=replay
    )


def expect(error: type[EnvelopeError], frame: bytes, **kwargs: object) -> EnvelopeError:
    """Open ``frame`` and require exactly ``error`` (not a parent or sibling class)."""
    with pytest.raises(EnvelopeError) as info:
        open_(frame, **kwargs)  # type: ignore[arg-type]
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert info.value.code == error.code
    return info.value


# -- round trips ------------------------------------------------------------------------


def test_seal_and_open_round_trip_with_headers_and_correlation_id() -> None:
    envelope = make_envelope(
        headers={"zeta": "last", "alpha": "first", "mid": ""}, correlation_id=CORRELATION_ID
    )
    opened = open_(seal_envelope(envelope, ALICE))
    assert opened == envelope
    assert opened.headers == (("alpha", "first"), ("mid", ""), ("zeta", "last"))
    assert opened.header("alpha") == "first"
    assert opened.header("missing") is None
    assert opened.correlation_id == CORRELATION_ID
    assert opened.sender == ALICE.did
    assert opened.body == b"hello bob"


def test_round_trip_without_correlation_id_or_headers() -> None:
    envelope = make_envelope()
    opened = open_(seal_envelope(envelope, ALICE))
    assert opened == envelope
    assert opened.correlation_id is None
    assert opened.headers == ()


def test_empty_body_round_trips() -> None:
    envelope = make_envelope(body=b"")
    assert open_(seal_envelope(envelope, ALICE)).body == b""


def test_large_body_round_trips() -> None:
    body = bytes(range(256)) * 4000  # 1,024,000 bytes, just under the 1 MiB frame limit
    frame = seal_envelope(make_envelope(body=body), ALICE)
    assert len(frame) <= DEFAULT_LIMITS.max_frame_bytes
    assert open_(frame).body == body


def test_unicode_headers_and_recipient_round_trip() -> None:
    envelope = make_envelope(recipient="équipe/日本", headers={"ключ": "значение ✓"})
    assert open_(seal_envelope(envelope, ALICE), audience="équipe/日本") == envelope


def test_maximum_sized_fields_round_trip() -> None:
    headers = {
        f"h{i:02d}": "v" * MAX_HEADER_FIELD_LENGTH for i in range(DEFAULT_LIMITS.max_headers)
    }
    envelope = make_envelope(
        type="t" * MAX_TYPE_LENGTH, recipient="r" * MAX_RECIPIENT_LENGTH, headers=headers
    )
    assert open_(seal_envelope(envelope, ALICE), audience="r" * MAX_RECIPIENT_LENGTH) == envelope


def test_seal_is_deterministic_and_canonical() -> None:
    envelope = make_envelope(headers={"b": "2", "a": "1"})
    frame = seal_envelope(envelope, ALICE)
    assert frame == seal_envelope(envelope, ALICE)
    parsed = parse_frame(frame)
    assert parsed.version == IATP_VERSION
    assert parsed.sender == ALICE.did
    assert parsed.payload == encode_payload(envelope)
    assert ALICE.verify_key.verify(SIGNING_DOMAIN + parsed.payload, parsed.signature)


def test_step_by_step_api_matches_open_envelope() -> None:
    frame = seal_envelope(make_envelope(), ALICE)
    parsed = parse_frame(frame)
    verify_frame(parsed)
    envelope = decode_payload(parsed)
    check_validity(envelope, now_ms=T0, audience=BOB.did)
    assert envelope == open_(frame)


def test_open_accepts_bytearray_and_memoryview() -> None:
    frame = seal_envelope(make_envelope(), ALICE)
    assert open_(bytearray(frame)) == open_(frame)
    assert open_(memoryview(frame)) == open_(frame)  # type: ignore[arg-type]


def test_new_envelope_ids_are_random_16_bytes() -> None:
    ids = {new_envelope_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == ID_BYTES for i in ids)
    a = new_envelope(sender=ALICE.did, type="t", recipient="r", body=b"", now_ms=T0)
    b = new_envelope(sender=ALICE.did, type="t", recipient="r", body=b"", now_ms=T0)
    assert a.id != b.id
    assert a.expires_at_ms == T0 + 60_000


def test_seal_refuses_an_envelope_naming_another_sender() -> None:
    with pytest.raises(SenderMismatch):
        seal_envelope(make_envelope(sender=ALICE.did), MALLORY)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", ""),
        ("type", "has space"),
        ("type", "t" * (MAX_TYPE_LENGTH + 1)),
        ("recipient", ""),
        ("body", "text"),
        ("envelope_id", b"short"),
        ("correlation_id", b"short"),
        ("headers", {"": "empty name"}),
    ],
)
def test_new_envelope_validates_fields(field: str, value: object) -> None:
    with pytest.raises(FieldTypeError):
        make_envelope(**{field: value})


# -- OversizedEnvelope ------------------------------------------------------------------


def test_frame_over_the_limit_is_oversized() -> None:
    frame = seal_envelope(make_envelope(), ALICE)
    assert open_(frame, limits=EnvelopeLimits(max_frame_bytes=len(frame))).body == b"hello bob"
    expect(OversizedEnvelope, frame, limits=EnvelopeLimits(max_frame_bytes=len(frame) - 1))


def test_default_limit_refuses_a_body_over_one_mebibyte() -> None:
    frame = seal_envelope(make_envelope(body=b"\x00" * DEFAULT_LIMITS.max_frame_bytes), ALICE)
    expect(OversizedEnvelope, frame)


def test_size_is_checked_before_anything_is_parsed() -> None:
    expect(OversizedEnvelope, b"\xc1" * (DEFAULT_LIMITS.max_frame_bytes + 1))


# -- UnsupportedVersion -----------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, 3, 127, 255, 2**32])
def test_frame_with_another_version_is_unsupported(version: int) -> None:
    payload = encode_payload(make_envelope())
    signature = ALICE.sign(SIGNING_DOMAIN + payload)
    frame = msgpack.packb([version, ALICE.did, payload, signature], use_bin_type=True)
    expect(UnsupportedVersion, frame)


def test_version_2_frame_with_another_layout_is_unsupported_not_malformed() -> None:
    expect(UnsupportedVersion, msgpack.packb([2, {"new": "layout"}], use_bin_type=True))
    expect(UnsupportedVersion, msgpack.packb([2], use_bin_type=True))


# -- FieldTypeError -------------------------------------------------------------------------


def _frame_with(index: int, value: object) -> bytes:
    good = make_envelope()
    fields: list[object] = [
        IATP_VERSION,
        ALICE.did,
        encode_payload(good),
        ALICE.sign(SIGNING_DOMAIN + encode_payload(good)),
    ]
    fields[index] = value
    return msgpack.packb(fields, use_bin_type=True)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        pytest.param(0, "1", id="version as str"),
        pytest.param(0, True, id="version as bool"),
        pytest.param(0, None, id="version nil"),
        pytest.param(0, 1.0, id="version as float"),
        pytest.param(1, 42, id="sender as int"),
        pytest.param(1, ALICE.did.encode(), id="sender as bin"),
        pytest.param(1, None, id="sender nil"),
        pytest.param(2, "payload as str", id="payload as str"),
        pytest.param(2, [1, 2], id="payload as array"),
        pytest.param(2, None, id="payload nil"),
        pytest.param(3, b"\x00" * 63, id="signature 63 bytes"),
        pytest.param(3, b"\x00" * 65, id="signature 65 bytes"),
        pytest.param(3, "s" * 64, id="signature as str"),
        pytest.param(3, None, id="signature nil"),
    ],
)
def test_frame_field_of_the_wrong_type_is_a_field_type_error(index: int, value: object) -> None:
    expect(FieldTypeError, _frame_with(index, value))


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(msgpack.packb({"version": 1}), id="map"),
        pytest.param(msgpack.packb(1), id="int"),
        pytest.param(msgpack.packb("frame"), id="str"),
        pytest.param(msgpack.packb(b"frame", use_bin_type=True), id="bin"),
        pytest.param(msgpack.packb(None), id="nil"),
    ],
)
def test_frame_that_is_not_an_array_is_a_field_type_error(frame: bytes) -> None:
    expect(FieldTypeError, frame)


def test_frame_that_is_not_bytes_is_a_field_type_error() -> None:
    frame = seal_envelope(make_envelope(), ALICE)
    with pytest.raises(FieldTypeError):
        open_(frame.hex())  # type: ignore[arg-type]


PAYLOAD_TYPE_CASES = [
    pytest.param(0, 42, id="type as int"),
    pytest.param(0, b"task.request", id="type as bin"),
    pytest.param(0, None, id="type nil"),
    pytest.param(0, "", id="type empty"),
    pytest.param(0, "t" * (MAX_TYPE_LENGTH + 1), id="type too long"),
    pytest.param(0, "task request", id="type with a space"),
    pytest.param(0, ".task", id="type starting with a dot"),
    pytest.param(0, "task\n", id="type with a trailing newline"),
    pytest.param(1, "0123456789abcdef", id="id as str"),
    pytest.param(1, b"\x00" * 15, id="id 15 bytes"),
    pytest.param(1, b"\x00" * 17, id="id 17 bytes"),
    pytest.param(1, 7, id="id as int"),
    pytest.param(1, None, id="id nil"),
    pytest.param(2, 42, id="sender as int"),
    pytest.param(2, None, id="sender nil"),
    pytest.param(2, ALICE.did.encode(), id="sender as bin"),
    pytest.param(3, 42, id="recipient as int"),
    pytest.param(3, "", id="recipient empty"),
    pytest.param(3, "r" * (MAX_RECIPIENT_LENGTH + 1), id="recipient too long"),
    pytest.param(3, BOB.did.encode(), id="recipient as bin"),
    pytest.param(4, str(T0), id="issued_at as str"),
    pytest.param(4, float(T0), id="issued_at as float"),
    pytest.param(4, -1, id="issued_at negative"),
    pytest.param(4, True, id="issued_at as bool"),
    pytest.param(4, None, id="issued_at nil"),
    pytest.param(4, 2**63, id="issued_at above int64"),
    pytest.param(5, str(T0 + LIFETIME), id="expires_at as str"),
    pytest.param(5, float(T0 + LIFETIME), id="expires_at as float"),
    pytest.param(5, -1, id="expires_at negative"),
    pytest.param(5, None, id="expires_at nil"),
    pytest.param(5, 2**64 - 1, id="expires_at uint64 max"),
    pytest.param(6, "c" * 16, id="correlation_id as str"),
    pytest.param(6, b"\x00" * 15, id="correlation_id 15 bytes"),
    pytest.param(6, 0, id="correlation_id as int"),
    pytest.param(6, False, id="correlation_id false"),
    pytest.param(7, [], id="headers as array"),
    pytest.param(7, None, id="headers nil"),
    pytest.param(7, "k=v", id="headers as str"),
    pytest.param(7, {"k": 1}, id="header value as int"),
    pytest.param(7, {"k": b"v"}, id="header value as bin"),
    pytest.param(7, {"k": None}, id="header value nil"),
    pytest.param(7, {b"k": "v"}, id="header name as bin"),
    pytest.param(7, {"": "v"}, id="header name empty"),
    pytest.param(7, {"k" * (MAX_HEADER_FIELD_LENGTH + 1): "v"}, id="header name too long"),
    pytest.param(7, {"k": "v" * (MAX_HEADER_FIELD_LENGTH + 1)}, id="header value too long"),
    pytest.param(
        7,
        {f"h{i:02d}": "v" for i in range(DEFAULT_LIMITS.max_headers + 1)},
        id="too many headers",
    ),
    pytest.param(8, "body as text", id="body as str"),
    pytest.param(8, None, id="body nil"),
    pytest.param(8, 5, id="body as int"),
    pytest.param(8, [b"chunk"], id="body as array"),
]


@pytest.mark.parametrize(("index", "value"), PAYLOAD_TYPE_CASES)
def test_payload_field_of_the_wrong_type_is_a_field_type_error(index: int, value: object) -> None:
    fields = valid_fields()
    fields[index] = value
    frame = frame_of(fields)
    # The signature is valid and the frame canonical: only the field type is wrong.
    parsed = parse_frame(frame)
    verify_frame(parsed)
    err = expect(FieldTypeError, frame)
    assert err.sender in (ALICE.did, None)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"type": "task"}, id="map"),
        pytest.param(42, id="int"),
        pytest.param("payload", id="str"),
        pytest.param(None, id="nil"),
    ],
)
def test_payload_that_is_not_an_array_is_a_field_type_error(payload: object) -> None:
    expect(FieldTypeError, frame_of(payload))


# -- MissingFields / ExtraFields ----------------------------------------------------------


def test_frame_with_too_few_fields_is_missing_fields() -> None:
    good = parse_frame(seal_envelope(make_envelope(), ALICE))
    expect(MissingFields, msgpack.packb([1, good.sender, good.payload], use_bin_type=True))
    expect(MissingFields, msgpack.packb([1], use_bin_type=True))
    expect(MissingFields, msgpack.packb([], use_bin_type=True))


def test_frame_with_too_many_fields_is_extra_fields() -> None:
    good = parse_frame(seal_envelope(make_envelope(), ALICE))
    fields = [1, good.sender, good.payload, good.signature]
    expect(ExtraFields, msgpack.packb([*fields, b""], use_bin_type=True))
    expect(ExtraFields, msgpack.packb([*fields, None, None], use_bin_type=True))


def test_payload_with_too_few_fields_is_missing_fields() -> None:
    fields = valid_fields()
    expect(MissingFields, frame_of(fields[:-1]))
    expect(MissingFields, frame_of([]))


def test_payload_with_too_many_fields_is_extra_fields() -> None:
    fields = valid_fields()
    expect(ExtraFields, frame_of([*fields, "extra"]))
    expect(ExtraFields, frame_of([*fields, None]))


# -- TrailingBytes --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [b"\x00", b"\xc0", b"\x90", b"garbage"])
def test_frame_with_trailing_bytes_is_refused(suffix: bytes) -> None:
    expect(TrailingBytes, seal_envelope(make_envelope(), ALICE) + suffix)


def test_payload_with_trailing_bytes_is_refused_even_when_signed() -> None:
    payload = encode_payload(make_envelope()) + b"\x00"
    expect(TrailingBytes, sign_payload(payload))


# -- NonCanonicalEncoding -----------------------------------------------------------------


def test_frame_with_array16_header_is_non_canonical() -> None:
    frame = seal_envelope(make_envelope(), ALICE)
    assert frame[0] == 0x94
    expect(NonCanonicalEncoding, b"\xdc\x00\x04" + frame[1:])


def test_frame_with_wide_version_integer_is_non_canonical() -> None:
    frame = seal_envelope(make_envelope(), ALICE)
    assert frame[1] == 0x01
    expect(NonCanonicalEncoding, frame[:1] + b"\xcc\x01" + frame[2:])
    expect(NonCanonicalEncoding, frame[:1] + b"\xd3" + struct.pack(">q", 1) + frame[2:])


def test_frame_with_wide_sender_string_is_non_canonical() -> None:
    parsed = parse_frame(seal_envelope(make_envelope(), ALICE))
    sender = parsed.sender.encode()
    rest = msgpack.packb(parsed.payload, use_bin_type=True) + msgpack.packb(
        parsed.signature, use_bin_type=True
    )
    wide = b"\x94\x01" + b"\xda" + struct.pack(">H", len(sender)) + sender + rest
    expect(NonCanonicalEncoding, wide)


def test_frame_with_wide_payload_and_signature_bin_is_non_canonical() -> None:
    parsed = parse_frame(seal_envelope(make_envelope(), ALICE))
    head = b"\x94\x01" + msgpack.packb(parsed.sender)
    payload = parsed.payload
    sig = parsed.signature
    wide_payload = b"\xc6" + struct.pack(">I", len(payload)) + payload
    wide_sig = b"\xc5" + struct.pack(">H", len(sig)) + sig
    good_payload = msgpack.packb(payload, use_bin_type=True)
    good_sig = msgpack.packb(sig, use_bin_type=True)
    assert open_(head + good_payload + good_sig).id == ENVELOPE_ID
    expect(NonCanonicalEncoding, head + wide_payload + good_sig)
    expect(NonCanonicalEncoding, head + good_payload + wide_sig)


def _non_canonical_payload(part_index: int, encoded: bytes) -> bytes:
    parts = canonical_parts(valid_fields())
    parts[part_index] = encoded
    return raw_payload(parts)


def _str8(text: str) -> bytes:
    data = text.encode()
    return b"\xd9" + bytes([len(data)]) + data


NON_CANONICAL_PAYLOADS = [
    pytest.param(
        raw_payload(canonical_parts(valid_fields()), b"\xdc\x00\x09"), id="array16 header"
    ),
    pytest.param(_non_canonical_payload(0, _str8("task.request")), id="type as str8 not fixstr"),
    pytest.param(
        _non_canonical_payload(1, b"\xc5\x00\x10" + ENVELOPE_ID), id="id as bin16 not bin8"
    ),
    pytest.param(
        _non_canonical_payload(3, b"\xda\x00\x38" + BOB.did.encode()), id="recipient as str16"
    ),
    pytest.param(
        _non_canonical_payload(4, b"\xd3" + struct.pack(">q", T0)), id="issued_at as int64"
    ),
    pytest.param(
        _non_canonical_payload(5, b"\xd3" + struct.pack(">q", T0 + LIFETIME)),
        id="expires_at as int64",
    ),
    pytest.param(
        _non_canonical_payload(7, b"\xde\x00\x01" + msgpack.packb("trace") + msgpack.packb("abc")),
        id="headers as map16",
    ),
    pytest.param(
        _non_canonical_payload(7, b"\x81" + _str8("trace") + msgpack.packb("abc")),
        id="header name as str8",
    ),
    pytest.param(
        _non_canonical_payload(8, b"\xc6" + struct.pack(">I", 9) + b"hello bob"),
        id="body as bin32",
    ),
]


@pytest.mark.parametrize("payload", NON_CANONICAL_PAYLOADS)
def test_non_canonical_payload_is_refused_even_when_signed(payload: bytes) -> None:
    # Sanity: it decodes to the same values as the canonical payload.
    assert msgpack.unpackb(payload, raw=False) == msgpack.unpackb(
        msgpack.packb(valid_fields(), use_bin_type=True), raw=False
    )
    expect(NonCanonicalEncoding, sign_payload(payload))


def test_small_integer_in_a_wider_type_is_non_canonical() -> None:
    # With a small clock value the canonical form is uint16; uint32 is refused.
    clock = ManualClock(start_ms=1_000)
    fields = make_envelope(now_ms=1_000, lifetime_ms=500).payload_fields()
    parts = canonical_parts(fields)
    assert parts[4] == b"\xcd\x03\xe8"
    assert open_(sign_payload(raw_payload(parts)), clock=clock).issued_at_ms == 1_000
    parts[4] = b"\xce" + struct.pack(">I", 1_000)
    expect(NonCanonicalEncoding, sign_payload(raw_payload(parts)), clock=clock)


def test_unsorted_headers_are_non_canonical() -> None:
    fields = valid_fields()
    fields[7] = {"zeta": "1", "alpha": "2"}  # dicts keep insertion order: unsorted on the wire
    payload = msgpack.packb(fields, use_bin_type=True)
    assert payload.index(b"zeta") < payload.index(b"alpha")
    expect(NonCanonicalEncoding, sign_payload(payload))
    fields[7] = {"alpha": "2", "zeta": "1"}
    assert open_(frame_of(fields)).headers == (("alpha", "2"), ("zeta", "1"))


def test_duplicate_header_names_are_non_canonical() -> None:
    map_ = (
        b"\x82" + msgpack.packb("k") + msgpack.packb("1") + msgpack.packb("k") + msgpack.packb("2")
    )
    expect(NonCanonicalEncoding, sign_payload(_non_canonical_payload(7, map_)))


# -- InvalidSignature ---------------------------------------------------------------------


def _flip_in_frame(frame: bytes, needle: bytes, offset: int) -> bytes:
    start = frame.index(needle)
    mutated = bytearray(frame)
    mutated[start + offset] ^= 0x01
    return bytes(mutated)


@pytest.mark.parametrize("offset", [0, 1, 20, -1])
def test_flipped_bit_in_payload_is_an_invalid_signature(offset: int) -> None:
    frame = seal_envelope(make_envelope(), ALICE)
    payload = parse_frame(frame).payload
    offset = offset % len(payload)
    err = expect(InvalidSignature, _flip_in_frame(frame, payload, offset))
    assert err.sender == ALICE.did


@pytest.mark.parametrize("offset", [0, 31, 32, 63])
def test_flipped_bit_in_signature_is_an_invalid_signature(offset: int) -> None:
    frame = seal_envelope(make_envelope(), ALICE)
    expect(InvalidSignature, _flip_in_frame(frame, parse_frame(frame).signature, offset))


def test_signed_by_another_key_claiming_the_victims_did_is_invalid_signature() -> None:
    payload = encode_payload(make_envelope(sender=ALICE.did))
    forged = sign_payload(payload, signer=MALLORY, frame_sender=ALICE.did)
    expect(InvalidSignature, forged)


def test_signature_without_the_domain_prefix_is_invalid() -> None:
    payload = encode_payload(make_envelope())
    frame = encode_frame(ALICE.did, payload, ALICE.sign(payload))
    expect(InvalidSignature, frame)


def test_signature_from_another_envelope_is_invalid() -> None:
    one = parse_frame(seal_envelope(make_envelope(body=b"one"), ALICE))
    two = parse_frame(seal_envelope(make_envelope(body=b"two"), ALICE))
    expect(InvalidSignature, encode_frame(ALICE.did, one.payload, two.signature))


def test_all_zero_signature_is_invalid() -> None:
    payload = encode_payload(make_envelope())
    expect(InvalidSignature, encode_frame(ALICE.did, payload, b"\x00" * 64))


def test_payload_is_not_looked_at_before_the_signature_verifies() -> None:
    # Garbage payload with a forged signature: the signature failure is reported,
    # not a decoding error, because nothing unauthenticated is parsed.
    garbage = b"\xc1\xc1\xc1"
    expect(InvalidSignature, sign_payload(garbage, signer=MALLORY, frame_sender=ALICE.did))
    # The same garbage, genuinely signed, is then a malformed payload.
    with pytest.raises(MalformedEnvelope):
        open_(sign_payload(garbage))


# -- InvalidSenderDID -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        "did:web:example.com",
        "",
        "alice",
        did_from_public_key(b"\x00" * 32)[:-1],
        "did:key:z" + "Q3s" + "1" * 44,
    ],
)
def test_frame_sender_that_is_not_an_ed25519_did_key_is_refused(sender: str) -> None:
    payload = encode_payload(make_envelope())
    frame = encode_frame(sender, payload, ALICE.sign(SIGNING_DOMAIN + payload))
    expect(InvalidSenderDID, frame)


# -- SenderMismatch -------------------------------------------------------------------------


def test_payload_sender_differing_from_frame_sender_is_sender_mismatch() -> None:
    # Mallory re-signs Alice's payload under her own DID: signature valid, sender not.
    payload = encode_payload(make_envelope(sender=ALICE.did))
    frame = sign_payload(payload, signer=MALLORY)
    err = expect(SenderMismatch, frame)
    assert err.sender == MALLORY.did
    assert err.envelope_id == ENVELOPE_ID


# -- validity window ------------------------------------------------------------------------


def test_expired_envelope_is_refused_after_expiry_plus_skew() -> None:
    frame = seal_envelope(make_envelope(), ALICE)
    clock = ManualClock(T0 + LIFETIME + SKEW - 1)
    assert open_(frame, clock=clock).id == ENVELOPE_ID
    clock.advance(1)
    err = expect(ExpiredEnvelope, frame, clock=clock)
    assert err.envelope_id == ENVELOPE_ID
    assert err.sender == ALICE.did
    expect(ExpiredEnvelope, frame, clock=ManualClock(T0 + 10 * LIFETIME))


def test_envelope_issued_beyond_the_skew_is_issued_in_future() -> None:
    frame = seal_envelope(make_envelope(now_ms=T0 + SKEW + 1), ALICE)
    expect(IssuedInFuture, frame, clock=ManualClock(T0))


def test_envelope_issued_in_the_future_within_the_skew_is_accepted() -> None:
    frame = seal_envelope(make_envelope(now_ms=T0 + SKEW), ALICE)
    assert open_(frame, clock=ManualClock(T0)).issued_at_ms == T0 + SKEW
    frame = seal_envelope(make_envelope(now_ms=T0 + 1), ALICE)
    assert open_(frame, clock=ManualClock(T0)).issued_at_ms == T0 + 1


def test_custom_skew_is_honoured() -> None:
    limits = EnvelopeLimits(clock_skew_ms=0)
    frame = seal_envelope(make_envelope(now_ms=T0 + 1), ALICE)
    expect(IssuedInFuture, frame, clock=ManualClock(T0), limits=limits)
    frame = seal_envelope(make_envelope(), ALICE)
    expect(ExpiredEnvelope, frame, clock=ManualClock(T0 + LIFETIME), limits=limits)


def test_lifetime_above_the_maximum_is_refused() -> None:
    limit = DEFAULT_LIMITS.max_lifetime_ms
    ok = seal_envelope(make_envelope(lifetime_ms=limit), ALICE)
    assert open_(ok).expires_at_ms == T0 + limit
    expect(LifetimeTooLong, seal_envelope(make_envelope(lifetime_ms=limit + 1), ALICE))
    expect(LifetimeTooLong, seal_envelope(make_envelope(lifetime_ms=2**40), ALICE))


@pytest.mark.parametrize("lifetime", [0, -1, -LIFETIME])
def test_zero_or_negative_lifetime_is_refused(lifetime: int) -> None:
    frame = seal_envelope(make_envelope(now_ms=T0 + LIFETIME, lifetime_ms=lifetime), ALICE)
    expect(LifetimeTooLong, frame, clock=ManualClock(T0 + LIFETIME))


# -- audience -------------------------------------------------------------------------------


def test_wrong_audience_is_refused() -> None:
    frame = seal_envelope(make_envelope(recipient=BOB.did), ALICE)
    err = expect(WrongAudience, frame, audience=MALLORY.did)
    assert err.envelope_id == ENVELOPE_ID
    expect(WrongAudience, frame, audience=[MALLORY.did, "team/ops"])
    expect(WrongAudience, frame, audience=set())


def test_audience_string_must_match_exactly_not_as_a_substring() -> None:
    frame = seal_envelope(make_envelope(recipient="ops"), ALICE)
    assert open_(frame, audience="ops").recipient == "ops"
    # "ops" is a substring of these: a naive `recipient in audience` would accept them.
    for audience in ("team/ops", "opsx", "devops", "ops "):
        expect(WrongAudience, frame, audience=audience)
    frame = seal_envelope(make_envelope(recipient="team/ops"), ALICE)
    for audience in ("ops", "team", "team/"):
        expect(WrongAudience, frame, audience=audience)


def test_audience_collection_accepts_any_member() -> None:
    frame = seal_envelope(make_envelope(recipient="team/ops"), ALICE)
    assert open_(frame, audience={BOB.did, "team/ops"}).recipient == "team/ops"
    assert open_(frame, audience=("team/ops",)).recipient == "team/ops"
    assert open_(frame, audience=frozenset({"team/ops"})).recipient == "team/ops"


# -- replay ---------------------------------------------------------------------------------


def test_second_open_of_the_same_frame_is_a_replay() -> None:
    cache = ReplayCache()
    clock = ManualClock(T0)
    frame = seal_envelope(make_envelope(), ALICE)
    open_(frame, clock=clock, replay=cache)
    err = expect(ReplayedEnvelope, frame, clock=clock, replay=cache)
    assert err.envelope_id == ENVELOPE_ID
    assert err.sender == ALICE.did
    clock.advance(LIFETIME)
    expect(ReplayedEnvelope, frame, clock=clock, replay=cache)


def test_resealed_envelope_with_the_same_id_is_a_replay() -> None:
    cache = ReplayCache()
    open_(seal_envelope(make_envelope(body=b"one"), ALICE), replay=cache)
    expect(ReplayedEnvelope, seal_envelope(make_envelope(body=b"two"), ALICE), replay=cache)


def test_same_id_from_another_sender_is_not_a_replay() -> None:
    cache = ReplayCache()
    open_(seal_envelope(make_envelope(sender=ALICE.did), ALICE), replay=cache)
    opened = open_(seal_envelope(make_envelope(sender=MALLORY.did), MALLORY), replay=cache)
    assert opened.sender == MALLORY.did
    assert len(cache) == 2


def test_rejected_envelopes_are_not_remembered() -> None:
    cache = ReplayCache()
    frame = seal_envelope(make_envelope(), ALICE)
    expect(WrongAudience, frame, audience="someone-else", replay=cache)
    expect(IssuedInFuture, frame, clock=ManualClock(T0 - SKEW - 1), replay=cache)
    assert len(cache) == 0
    assert open_(frame, replay=cache).id == ENVELOPE_ID


def test_replay_cache_with_a_shorter_skew_cannot_reopen_a_replay_window() -> None:
    # The envelope stays valid until expires + limits.skew; the cache must not
    # forget it before then, or the same frame could be accepted twice.
    limits = EnvelopeLimits(clock_skew_ms=60_000)
    cache = ReplayCache(clock_skew_ms=1_000)
    clock = ManualClock(T0)
    frame = seal_envelope(make_envelope(), ALICE)
    try:
        open_(frame, clock=clock, limits=limits, replay=cache)
    except ValueError:
        return  # refusing the inconsistent configuration up front is also safe
    clock.set(T0 + LIFETIME + 5_000)
    expect(ReplayedEnvelope, frame, clock=clock, limits=limits, replay=cache)


# -- precedence -----------------------------------------------------------------------------


def test_signature_is_checked_before_validity_rules() -> None:
    payload = encode_payload(make_envelope(lifetime_ms=10**9))
    forged = sign_payload(payload, signer=MALLORY, frame_sender=ALICE.did)
    expect(InvalidSignature, forged, clock=ManualClock(T0 + 10**10), audience="nobody")


def test_expiry_is_reported_before_replay() -> None:
    cache = ReplayCache()
    frame = seal_envelope(make_envelope(), ALICE)
    open_(frame, replay=cache)
    expect(ExpiredEnvelope, frame, clock=ManualClock(T0 + LIFETIME + SKEW), replay=cache)


def test_malformed_subclasses_are_malformed_envelopes() -> None:
    for cls in (
        UnsupportedVersion,
        FieldTypeError,
        MissingFields,
        ExtraFields,
        TrailingBytes,
        InvalidSenderDID,
        NonCanonicalEncoding,
    ):
        assert issubclass(cls, MalformedEnvelope)
    for cls in (InvalidSignature, SenderMismatch, ExpiredEnvelope, ReplayedEnvelope):
        assert not issubclass(cls, MalformedEnvelope)
