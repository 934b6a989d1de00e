"""The IATP envelope: one canonical msgpack encoding, signed over the exact bytes.

Wire format (normative text and test vectors: ``docs/iatp.md``, ``tests/vectors``)::

    frame   = msgpack([version=1, sender_did, payload: bin, signature: bin(64)])
    payload = msgpack([type, id: bin(16), sender_did, recipient, issued_at_ms,
                       expires_at_ms, correlation_id: bin(16) | nil,
                       headers: {str: str} sorted by key, body: bin])
    signature = Ed25519(sender_key, b"iatp/1/envelope\\x00" || payload)

A receiver looks at nothing but ``version`` and ``sender_did`` before the
signature over the received payload bytes has verified. Every rejection is a
distinct :class:`~iatp.errors.EnvelopeError` subclass.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from typing import Protocol

import msgpack
from nacl.exceptions import BadSignatureError

from iatp.clock import Clock
from iatp.did import verify_key_for_did
from iatp.errors import (
    EnvelopeError,
    ExpiredEnvelope,
    ExtraFields,
    FieldTypeError,
    InvalidDID,
    InvalidSenderDID,
    InvalidSignature,
    IssuedInFuture,
    LifetimeTooLong,
    MalformedEnvelope,
    MissingFields,
    NonCanonicalEncoding,
    OversizedEnvelope,
    SenderMismatch,
    TrailingBytes,
    UnsupportedVersion,
    WrongAudience,
)
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache

IATP_VERSION = 1
SIGNING_DOMAIN = b"iatp/1/envelope\x00"
ID_BYTES = 16
SIGNATURE_BYTES = 64
FRAME_FIELDS = 4
PAYLOAD_FIELDS = 9
MAX_TYPE_LENGTH = 128
# The decoder refuses any msgpack array or map longer than this (so max_headers <= it).
MAX_MSGPACK_CONTAINER = 64
MAX_RECIPIENT_LENGTH = 256
MAX_HEADER_FIELD_LENGTH = 1024
_TYPE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*\Z")


@dataclass(frozen=True, slots=True)
class EnvelopeLimits:
    """Receiver-side limits. All times in milliseconds.

    An envelope is accepted when ``issued_at - skew <= now < expires_at + skew``
    and ``0 < expires_at - issued_at <= max_lifetime_ms``.
    """

    max_frame_bytes: int = 1_048_576
    max_lifetime_ms: int = 300_000
    clock_skew_ms: int = 30_000
    max_headers: int = 32

    def __post_init__(self) -> None:
        if not 0 <= self.max_headers <= MAX_MSGPACK_CONTAINER:
            raise ValueError(f"max_headers must be within 0..{MAX_MSGPACK_CONTAINER}")
        if self.max_frame_bytes <= 0 or self.max_lifetime_ms <= 0 or self.clock_skew_ms < 0:
            raise ValueError("limits must be positive (clock_skew_ms may be 0)")

    def retention_ms(self) -> int:
        """How long a replay-cache entry must live at most past ``issued_at``."""
        return self.max_lifetime_ms + self.clock_skew_ms


DEFAULT_LIMITS = EnvelopeLimits()


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded (or to-be-sealed) IATP message. ``headers`` is sorted by key."""

    type: str
    id: bytes
    sender: str
    recipient: str
    issued_at_ms: int
    expires_at_ms: int
    correlation_id: bytes | None
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def payload_fields(self) -> list[object]:
        return [
            self.type,
            self.id,
            self.sender,
            self.recipient,
            self.issued_at_ms,
            self.expires_at_ms,
            self.correlation_id,
            dict(self.headers),
            self.body,
        ]


class AuthenticatedFrame(Protocol):
    """What :func:`decode_payload` reads: a sender and the payload bytes it authenticated.

    A signed :class:`Frame` and a session frame (``iatp.session_frame``) both fit.
    """

    @property
    def sender(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Frame:
    """The outer frame after parsing, before the signature is checked."""

    version: int
    sender: str
    payload: bytes
    signature: bytes


# Fast constructors. A frozen dataclass's generated ``__init__`` sets each field
# through ``object.__setattr__`` by name (~1.9 µs for nine keyword arguments);
# writing the slots directly builds the identical object in ~0.4 µs. Only used
# where every field is given, so there are no defaults or ``__post_init__`` to run.
_new_object = object.__new__
_ENVELOPE_FIELDS = (
    "type",
    "id",
    "sender",
    "recipient",
    "issued_at_ms",
    "expires_at_ms",
    "correlation_id",
    "headers",
    "body",
)
_FRAME_FIELDS = ("version", "sender", "payload", "signature")
assert tuple(f.name for f in fields(Envelope)) == _ENVELOPE_FIELDS
assert tuple(f.name for f in fields(Frame)) == _FRAME_FIELDS


def _slot_setters(
    cls: type, names: tuple[str, ...]
) -> tuple[Callable[[object, object], None], ...]:
    return tuple(cls.__dict__[name].__set__ for name in names)


(
    _set_type,
    _set_id,
    _set_sender,
    _set_recipient,
    _set_issued,
    _set_expires,
    _set_correlation,
    _set_headers,
    _set_body,
) = _slot_setters(Envelope, _ENVELOPE_FIELDS)
_set_version, _set_frame_sender, _set_payload, _set_signature = _slot_setters(Frame, _FRAME_FIELDS)


def _make_envelope(
    type_: str,
    id_: bytes,
    sender: str,
    recipient: str,
    issued_at_ms: int,
    expires_at_ms: int,
    correlation_id: bytes | None,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
) -> Envelope:
    """``Envelope(...)`` with every field given positionally, without ``__init__``."""
    envelope: Envelope = _new_object(Envelope)
    _set_type(envelope, type_)
    _set_id(envelope, id_)
    _set_sender(envelope, sender)
    _set_recipient(envelope, recipient)
    _set_issued(envelope, issued_at_ms)
    _set_expires(envelope, expires_at_ms)
    _set_correlation(envelope, correlation_id)
    _set_headers(envelope, headers)
    _set_body(envelope, body)
    return envelope


def _make_frame(version: int, sender: str, payload: bytes, signature: bytes) -> Frame:
    """``Frame(...)`` with every field given positionally, without ``__init__``."""
    frame: Frame = _new_object(Frame)
    _set_version(frame, version)
    _set_frame_sender(frame, sender)
    _set_payload(frame, payload)
    _set_signature(frame, signature)
    return frame


# One msgpack Packer per thread: ``msgpack.packb`` builds (and frees) a new Packer
# on every call, which costs more than packing a whole envelope. A Packer holds a
# buffer, so it is not shared between threads.
_thread_state = threading.local()


def _packer() -> msgpack.Packer:
    try:
        packer: msgpack.Packer = _thread_state.packer
    except AttributeError:
        packer = _thread_state.packer = msgpack.Packer(use_bin_type=True)
    return packer


def _pack(obj: object) -> bytes:
    data: bytes = _packer().pack(obj)
    return data


def new_envelope_id() -> bytes:
    return os.urandom(ID_BYTES)


def new_envelope(
    *,
    sender: str,
    type: str,
    recipient: str,
    body: bytes,
    now_ms: int,
    lifetime_ms: int = 60_000,
    correlation_id: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    envelope_id: bytes | None = None,
) -> Envelope:
    """Build an envelope with a fresh random id, valid for ``lifetime_ms``."""
    envelope = _make_envelope(
        type,
        envelope_id if envelope_id is not None else new_envelope_id(),
        sender,
        recipient,
        now_ms,
        now_ms + lifetime_ms,
        correlation_id,
        tuple(sorted(headers.items())) if headers else (),
        body,
    )
    _check_payload_fields(envelope, DEFAULT_LIMITS)
    return envelope


def encode_payload(envelope: Envelope) -> bytes:
    """The canonical payload bytes (the part that is signed)."""
    return _pack(envelope.payload_fields())


def encode_frame(sender: str, payload: bytes, signature: bytes) -> bytes:
    return _pack([IATP_VERSION, sender, payload, signature])


def seal_envelope(envelope: Envelope, identity: AgentIdentity) -> bytes:
    """Encode and sign ``envelope`` with ``identity``; returns the frame bytes."""
    if envelope.sender != identity.did:
        raise SenderMismatch(
            "the envelope names another sender than the signing identity",
            envelope_id=envelope.id,
            sender=envelope.sender,
        )
    # encode_payload + encode_frame, with one Packer lookup.
    packer = _packer()
    payload: bytes = packer.pack(envelope.payload_fields())
    signature = identity.sign(SIGNING_DOMAIN + payload)
    frame: bytes = packer.pack([IATP_VERSION, identity.did, payload, signature])
    return frame


def _reject_ext(code: int, data: bytes) -> object:
    # No extension type is part of IATP; reject every one (even zero-length) as malformed.
    raise ValueError(f"msgpack extension type {code} is not allowed")


def _unpack(data: bytes, limit: int) -> object:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=limit,
            max_str_len=limit,
            max_array_len=MAX_MSGPACK_CONTAINER,
            max_map_len=MAX_MSGPACK_CONTAINER,
            max_ext_len=0,
            ext_hook=_reject_ext,
        )
    except msgpack.ExtraData:
        raise TrailingBytes("bytes follow the msgpack value") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        raise MalformedEnvelope("not a valid msgpack value") from None


def parse_frame(data: bytes, limits: EnvelopeLimits = DEFAULT_LIMITS) -> Frame:
    """Size limit and outer-frame decoding. Trusts nothing yet.

    Raises:
        OversizedEnvelope, MalformedEnvelope (and its subclasses).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FieldTypeError("a frame is bytes")
    if len(data) > limits.max_frame_bytes:
        raise OversizedEnvelope(f"frame is {len(data)} bytes; limit {limits.max_frame_bytes}")
    fields = _unpack(bytes(data), limits.max_frame_bytes)
    if not isinstance(fields, list):
        raise FieldTypeError("a frame is a msgpack array")
    if fields and type(fields[0]) is int and fields[0] != IATP_VERSION:
        raise UnsupportedVersion(f"IATP version {fields[0]} is not supported (only 1)")
    if len(fields) < FRAME_FIELDS:
        raise MissingFields(f"frame has {len(fields)} fields; expected {FRAME_FIELDS}")
    if len(fields) > FRAME_FIELDS:
        raise ExtraFields(f"frame has {len(fields)} fields; expected {FRAME_FIELDS}")
    version, sender, payload, signature = fields
    if type(version) is not int:
        raise FieldTypeError("version must be an integer")
    if not isinstance(sender, str):
        raise FieldTypeError("sender must be a string")
    if not isinstance(payload, bytes):
        raise FieldTypeError("payload must be binary")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise FieldTypeError(f"signature must be {SIGNATURE_BYTES} bytes of binary")
    if _pack(fields) != data:  # fields is exactly [version, sender, payload, signature]
        raise NonCanonicalEncoding("frame is not in canonical msgpack form", sender=sender)
    return _make_frame(version, sender, payload, signature)


def verify_frame(frame: Frame) -> None:
    """Check the signature over the exact received payload bytes.

    CPU-bound (~90 µs); PyNaCl releases the GIL, so call it from a thread pool
    to verify on several cores.

    Raises:
        InvalidSenderDID: the sender is not a valid Ed25519 did:key.
        InvalidSignature: the signature does not verify.
    """
    try:
        key = verify_key_for_did(frame.sender)
    except InvalidDID as exc:
        raise InvalidSenderDID(f"sender is not a valid DID: {exc.reason}") from None
    signature = frame.signature
    try:
        if type(signature) is bytes and len(signature) == SIGNATURE_BYTES:
            # The combined form PyNaCl would build itself, minus its argument checks.
            key.verify(signature + SIGNING_DOMAIN + frame.payload)
        else:
            key.verify(SIGNING_DOMAIN + frame.payload, signature)
    except BadSignatureError:
        raise InvalidSignature("signature does not verify", sender=frame.sender) from None


def decode_payload(frame: AuthenticatedFrame, limits: EnvelopeLimits = DEFAULT_LIMITS) -> Envelope:
    """Strictly decode the (already verified) payload into an :class:`Envelope`.

    Raises:
        MalformedEnvelope (and subclasses), SenderMismatch.
    """
    try:
        fields = _unpack(frame.payload, limits.max_frame_bytes)
    except EnvelopeError as exc:  # authenticated by now: name the sender in audit records
        exc.sender = frame.sender
        raise
    if not isinstance(fields, list):
        raise FieldTypeError("payload is a msgpack array", sender=frame.sender)
    if len(fields) < PAYLOAD_FIELDS:
        raise MissingFields(f"payload has {len(fields)} fields; expected {PAYLOAD_FIELDS}")
    if len(fields) > PAYLOAD_FIELDS:
        raise ExtraFields(f"payload has {len(fields)} fields; expected {PAYLOAD_FIELDS}")
    type_, id_, sender, recipient, issued, expires, correlation, headers, body = fields
    if not isinstance(headers, dict):
        raise FieldTypeError("headers must be a map", sender=frame.sender)
    envelope = _make_envelope(
        type_, id_, sender, recipient, issued, expires, correlation, tuple(headers.items()), body
    )
    _check_payload_fields(envelope, limits)
    # ``fields`` is exactly ``envelope.payload_fields()`` (the same objects, the
    # headers dict in received order), so packing it is ``encode_payload(envelope)``.
    if (headers and list(headers) != sorted(headers)) or _pack(fields) != frame.payload:
        raise NonCanonicalEncoding(
            "payload is not in canonical msgpack form", envelope_id=id_, sender=frame.sender
        )
    if sender != frame.sender:
        raise SenderMismatch(
            "payload sender differs from the frame sender", envelope_id=id_, sender=frame.sender
        )
    return envelope


def _bad_field(e: Envelope, what: str) -> FieldTypeError:
    return FieldTypeError(what, sender=e.sender if isinstance(e.sender, str) else None)


# Message types that already passed the length and pattern checks: a mesh uses a
# handful, and a set lookup is cheaper than the regex. Bounded; exact str only.
_KNOWN_TYPES: set[str] = set()
_MAX_KNOWN_TYPES = 1024


def _check_payload_fields(e: Envelope, limits: EnvelopeLimits) -> None:
    type_ = e.type
    if type(type_) is not str or type_ not in _KNOWN_TYPES:
        if not isinstance(type_, str) or not (0 < len(type_) <= MAX_TYPE_LENGTH):
            raise _bad_field(e, f"type must be a string of 1..{MAX_TYPE_LENGTH} characters")
        if not _TYPE_PATTERN.match(type_):
            raise _bad_field(e, "type may hold only letters, digits and . _ : / -")
        if type(type_) is str and len(_KNOWN_TYPES) < _MAX_KNOWN_TYPES:
            _KNOWN_TYPES.add(type_)
    id_ = e.id
    if not isinstance(id_, bytes) or len(id_) != ID_BYTES:
        raise _bad_field(e, f"id must be {ID_BYTES} bytes of binary")
    if not isinstance(e.sender, str):
        raise _bad_field(e, "sender must be a string")
    recipient = e.recipient
    if not isinstance(recipient, str) or not (0 < len(recipient) <= MAX_RECIPIENT_LENGTH):
        raise _bad_field(e, f"recipient must be a string of 1..{MAX_RECIPIENT_LENGTH} characters")
    issued, expires = e.issued_at_ms, e.expires_at_ms
    if not (type(issued) is int and 0 <= issued < 2**63) or not (
        type(expires) is int and 0 <= expires < 2**63
    ):
        raise _bad_field(e, "issued_at_ms and expires_at_ms must be non-negative 64-bit integers")
    correlation = e.correlation_id
    if correlation is not None and (
        not isinstance(correlation, bytes) or len(correlation) != ID_BYTES
    ):
        raise _bad_field(e, f"correlation_id must be nil or {ID_BYTES} bytes of binary")
    if len(e.headers) > limits.max_headers:
        raise _bad_field(e, f"more than {limits.max_headers} headers")
    for key, value in e.headers:
        if not isinstance(key, str) or not isinstance(value, str):
            raise _bad_field(e, "header names and values must be strings")
        if not key or len(key) > MAX_HEADER_FIELD_LENGTH or len(value) > MAX_HEADER_FIELD_LENGTH:
            raise _bad_field(
                e, f"header names are 1..{MAX_HEADER_FIELD_LENGTH} characters, values at most"
            )
    if not isinstance(e.body, bytes):
        raise _bad_field(e, "body must be binary")


def check_validity(
    envelope: Envelope,
    *,
    now_ms: int,
    audience: str | Collection[str],
    limits: EnvelopeLimits = DEFAULT_LIMITS,
) -> None:
    """Lifetime, clock skew, expiry and audience rules.

    Raises:
        LifetimeTooLong, IssuedInFuture, ExpiredEnvelope, WrongAudience.
    """
    e = envelope
    lifetime = e.expires_at_ms - e.issued_at_ms
    if lifetime <= 0 or lifetime > limits.max_lifetime_ms:
        raise LifetimeTooLong(
            f"lifetime {lifetime} ms is outside (0, {limits.max_lifetime_ms}]",
            envelope_id=e.id,
            sender=e.sender,
        )
    if e.issued_at_ms - limits.clock_skew_ms > now_ms:
        raise IssuedInFuture(
            f"issued {e.issued_at_ms - now_ms} ms in the future (skew {limits.clock_skew_ms} ms)",
            envelope_id=e.id,
            sender=e.sender,
        )
    if now_ms >= e.expires_at_ms + limits.clock_skew_ms:
        raise ExpiredEnvelope(
            f"expired {now_ms - e.expires_at_ms} ms ago", envelope_id=e.id, sender=e.sender
        )
    accepted = (audience,) if isinstance(audience, str) else audience
    if e.recipient not in accepted:
        raise WrongAudience(
            f"addressed to {e.recipient!r}, not to this receiver", envelope_id=e.id, sender=e.sender
        )


def open_envelope(
    data: bytes,
    *,
    clock: Clock,
    audience: str | Collection[str],
    replay: ReplayCache | None,
    limits: EnvelopeLimits = DEFAULT_LIMITS,
) -> Envelope:
    """The whole receive path in order: size, frame, signature, payload, rules, replay.

    ``replay`` is required: a receiver MUST keep a replay cache (docs/iatp.md).
    Passing ``None`` explicitly skips only that step, for stateless inspection.

    Raises:
        EnvelopeError: the subclass names the first rule the frame broke.
    """
    frame = parse_frame(data, limits)
    verify_frame(frame)
    envelope = decode_payload(frame, limits)
    now = clock.now_ms()
    check_validity(envelope, now_ms=now, audience=audience, limits=limits)
    if replay is not None:
        replay.remember(
            envelope.sender,
            envelope.id,
            envelope.expires_at_ms,
            now_ms=now,
            clock_skew_ms=limits.clock_skew_ms,
            issued_at_ms=envelope.issued_at_ms,
        )
    return envelope
