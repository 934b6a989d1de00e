"""Fuzzing the receive path: only IATP errors may escape, and no mutation is accepted.

Three generators: random bytes; valid frames mutated (bit flips, truncation,
insertion, splices of two frames); and structurally arbitrary payloads that are
genuinely signed, so that the decoder behind the signature check is exercised too.
"""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iatp.clock import ManualClock
from iatp.envelope import (
    SIGNING_DOMAIN,
    Envelope,
    EnvelopeLimits,
    encode_frame,
    encode_payload,
    new_envelope,
    open_envelope,
    seal_envelope,
)
from iatp.errors import IATPError
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache

ALICE = AgentIdentity.from_seed(b"\xa1" * 32)
BOB = AgentIdentity.from_seed(b"\xb0" * 32)
T0 = 1_700_000_000_000
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Generating nested msgpack values is slower than checking them: fewer examples.
FUZZ_STRUCTURED = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _frame(body: bytes, **extra: object) -> bytes:
    envelope = new_envelope(
        sender=ALICE.did,
        type="task.request",
        recipient=BOB.did,
        body=body,
        now_ms=T0,
        envelope_id=b"\x11" * 16,
        **extra,  # type: ignore[arg-type]
    )
    return seal_envelope(envelope, ALICE)


ORIGINALS = [
    _frame(b"hello"),
    _frame(b"", headers={"a": "1", "b": "2"}, correlation_id=b"\x22" * 16),
    _frame(bytes(range(256))),
]


def _open(data: bytes, limits: EnvelopeLimits | None = None) -> object:
    """Open ``data``; return the envelope, or None if an IATPError was raised."""
    try:
        return open_envelope(
            data,
            clock=ManualClock(T0),
            audience=BOB.did,
            limits=limits or EnvelopeLimits(),
            replay=ReplayCache(),
        )
    except IATPError:
        return None
    except Exception as exc:  # the property under test: nothing else may escape
        raise AssertionError(f"{type(exc).__name__} escaped open_envelope: {exc!r}") from exc


@st.composite
def mutated_frames(draw: st.DrawFn) -> tuple[bytes, bytes]:
    original = draw(st.sampled_from(ORIGINALS))
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "splice"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            other = draw(st.sampled_from(ORIGINALS))
            cut = draw(st.integers(0, len(other)))
            data = bytearray(bytes(data[:at]) + other[cut:])
    return original, bytes(data)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_iatp_errors(data: bytes) -> None:
    assert _open(data) is None


@FUZZ
@given(st.binary(max_size=64).map(lambda tail: b"\x94\x01" + tail))
def test_random_bytes_after_a_plausible_frame_header_raise_only_iatp_errors(data: bytes) -> None:
    assert _open(data) is None


@FUZZ
@given(mutated_frames())
def test_mutated_frames_raise_only_iatp_errors_and_are_never_accepted(
    case: tuple[bytes, bytes],
) -> None:
    _, mutated = case
    opened = _open(mutated)
    if opened is not None:
        # Accepted only if the mutations cancelled out (or a splice rebuilt a
        # whole genuine frame): byte-identical to a frame Alice really sealed.
        assert mutated in ORIGINALS


@FUZZ
@given(mutated_frames())
def test_mutated_frames_with_a_tight_size_limit_raise_only_iatp_errors(
    case: tuple[bytes, bytes],
) -> None:
    _, mutated = case
    _open(mutated, EnvelopeLimits(max_frame_bytes=200))


# Arbitrary msgpack values, to put behind a genuine signature.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=10)
        | st.dictionaries(st.text(max_size=10) | st.binary(max_size=4), children, max_size=5)
    ),
    max_leaves=8,
)

VALID_FIELDS = msgpack.unpackb(msgpack.unpackb(ORIGINALS[1], raw=False)[2], raw=False)


@FUZZ_STRUCTURED
@given(st.integers(0, 8), msgpack_values)
def test_signed_payload_with_one_arbitrary_field_raises_only_iatp_errors(
    index: int, value: object
) -> None:
    fields = list(VALID_FIELDS)
    fields[index] = value
    payload = msgpack.packb(fields, use_bin_type=True)
    frame = encode_frame(ALICE.did, payload, ALICE.sign(SIGNING_DOMAIN + payload))
    opened = _open(frame)
    if opened is not None:
        # Whatever was accepted re-encodes to exactly the signed payload bytes.
        assert isinstance(opened, Envelope)
        assert encode_payload(opened) == payload
        assert opened.sender == ALICE.did


@FUZZ_STRUCTURED
@given(msgpack_values)
def test_signed_arbitrary_payload_raises_only_iatp_errors(value: object) -> None:
    payload = msgpack.packb(value, use_bin_type=True)
    frame = encode_frame(ALICE.did, payload, ALICE.sign(SIGNING_DOMAIN + payload))
    assert _open(frame) is None


@FUZZ
@given(st.binary(max_size=300))
def test_signed_random_payload_bytes_raise_only_iatp_errors(payload: bytes) -> None:
    frame = encode_frame(ALICE.did, payload, ALICE.sign(SIGNING_DOMAIN + payload))
    assert _open(frame) is None


_GOOD_FRAME_FIELDS = msgpack.unpackb(ORIGINALS[0], raw=False)


@st.composite
def frame_arrays(draw: st.DrawFn) -> list[object]:
    """Frames whose elements are each either the genuine one or something arbitrary."""
    size = draw(st.integers(0, 6))
    fields: list[object] = []
    for i in range(size):
        genuine = _GOOD_FRAME_FIELDS[i] if i < len(_GOOD_FRAME_FIELDS) else None
        fields.append(draw(st.just(genuine) | msgpack_values))
    return fields


@FUZZ_STRUCTURED
@given(frame_arrays())
def test_arbitrary_frame_arrays_raise_only_iatp_errors(fields: list[object]) -> None:
    data = msgpack.packb(fields, use_bin_type=True)
    opened = _open(data)
    if opened is not None:
        assert data == ORIGINALS[0]
