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
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import msgpack
from nacl.exceptions import BadSignatureError

from iatp.clock import Clock
from iatp.did import verify_key_for_did
from iatp.errors import (
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


@dataclass(frozen=True, slots=True)
class Frame:
    """The outer frame after parsing, before the signature is checked."""

    version: int
    sender: str
    payload: bytes
    signature: bytes


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
    envelope = Envelope(
        type=type,
        id=envelope_id if envelope_id is not None else new_envelope_id(),
        sender=sender,
        recipient=recipient,
        issued_at_ms=now_ms,
        expires_at_ms=now_ms + lifetime_ms,
        correlation_id=correlation_id,
        headers=tuple(sorted((headers or {}).items())),
        body=body,
    )
    _check_payload_fields(envelope, DEFAULT_LIMITS)
    return envelope


def encode_payload(envelope: Envelope) -> bytes:
    """The canonical payload bytes (the part that is signed)."""
    return msgpack.packb(envelope.payload_fields(), use_bin_type=True)


def encode_frame(sender: str, payload: bytes, signature: bytes) -> bytes:
    return msgpack.packb([IATP_VERSION, sender, payload, signature], use_bin_type=True)


def seal_envelope(envelope: Envelope, identity: AgentIdentity) -> bytes:
    """Encode and sign ``envelope`` with ``identity``; returns the frame bytes."""
    if envelope.sender != identity.did:
        raise SenderMismatch(
            "the envelope names another sender than the signing identity",
            envelope_id=envelope.id,
            sender=envelope.sender,
        )
    payload = encode_payload(envelope)
    return encode_frame(identity.did, payload, identity.sign(SIGNING_DOMAIN + payload))


def _unpack(data: bytes, limit: int) -> object:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=limit,
            max_str_len=limit,
            max_array_len=64,
            max_map_len=64,
            max_ext_len=0,
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
    if encode_frame(sender, payload, signature) != data:
        raise NonCanonicalEncoding("frame is not in canonical msgpack form", sender=sender)
    return Frame(version, sender, payload, signature)


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
    try:
        key.verify(SIGNING_DOMAIN + frame.payload, frame.signature)
    except BadSignatureError:
        raise InvalidSignature("signature does not verify", sender=frame.sender) from None


def decode_payload(frame: Frame, limits: EnvelopeLimits = DEFAULT_LIMITS) -> Envelope:
    """Strictly decode the (already verified) payload into an :class:`Envelope`.

    Raises:
        MalformedEnvelope (and subclasses), SenderMismatch.
    """
    fields = _unpack(frame.payload, limits.max_frame_bytes)
    if not isinstance(fields, list):
        raise FieldTypeError("payload is a msgpack array", sender=frame.sender)
    if len(fields) < PAYLOAD_FIELDS:
        raise MissingFields(f"payload has {len(fields)} fields; expected {PAYLOAD_FIELDS}")
    if len(fields) > PAYLOAD_FIELDS:
        raise ExtraFields(f"payload has {len(fields)} fields; expected {PAYLOAD_FIELDS}")
    type_, id_, sender, recipient, issued, expires, correlation, headers, body = fields
    if not isinstance(headers, dict):
        raise FieldTypeError("headers must be a map", sender=frame.sender)
    envelope = Envelope(
        type=type_,
        id=id_,
        sender=sender,
        recipient=recipient,
        issued_at_ms=issued,
        expires_at_ms=expires,
        correlation_id=correlation,
        headers=tuple(headers.items()),
        body=body,
    )
    _check_payload_fields(envelope, limits)
    if list(headers) != sorted(headers) or encode_payload(envelope) != frame.payload:
        raise NonCanonicalEncoding(
            "payload is not in canonical msgpack form", envelope_id=id_, sender=frame.sender
        )
    if sender != frame.sender:
        raise SenderMismatch(
            "payload sender differs from the frame sender", envelope_id=id_, sender=frame.sender
        )
    return envelope


def _is_int64(value: object) -> bool:
    return type(value) is int and 0 <= value < 2**63


def _check_payload_fields(e: Envelope, limits: EnvelopeLimits) -> None:
    def bad(what: str) -> FieldTypeError:
        return FieldTypeError(what, sender=e.sender if isinstance(e.sender, str) else None)

    if not isinstance(e.type, str) or not (0 < len(e.type) <= MAX_TYPE_LENGTH):
        raise bad(f"type must be a string of 1..{MAX_TYPE_LENGTH} characters")
    if not _TYPE_PATTERN.match(e.type):
        raise bad("type may hold only letters, digits and . _ : / -")
    if not isinstance(e.id, bytes) or len(e.id) != ID_BYTES:
        raise bad(f"id must be {ID_BYTES} bytes of binary")
    if not isinstance(e.sender, str):
        raise bad("sender must be a string")
    if not isinstance(e.recipient, str) or not (0 < len(e.recipient) <= MAX_RECIPIENT_LENGTH):
        raise bad(f"recipient must be a string of 1..{MAX_RECIPIENT_LENGTH} characters")
    if not _is_int64(e.issued_at_ms) or not _is_int64(e.expires_at_ms):
        raise bad("issued_at_ms and expires_at_ms must be non-negative 64-bit integers")
    if e.correlation_id is not None and (
        not isinstance(e.correlation_id, bytes) or len(e.correlation_id) != ID_BYTES
    ):
        raise bad(f"correlation_id must be nil or {ID_BYTES} bytes of binary")
    if len(e.headers) > limits.max_headers:
        raise bad(f"more than {limits.max_headers} headers")
    for key, value in e.headers:
        if not isinstance(key, str) or not isinstance(value, str):
            raise bad("header names and values must be strings")
        if not key or len(key) > MAX_HEADER_FIELD_LENGTH or len(value) > MAX_HEADER_FIELD_LENGTH:
            raise bad(f"header names are 1..{MAX_HEADER_FIELD_LENGTH} characters, values at most")
    if not isinstance(e.body, bytes):
        raise bad("body must be binary")


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
    limits: EnvelopeLimits = DEFAULT_LIMITS,
    replay: ReplayCache | None = None,
) -> Envelope:
    """The whole receive path in order: size, frame, signature, payload, rules, replay.

    Raises:
        EnvelopeError: the subclass names the first rule the frame broke.
    """
    frame = parse_frame(data, limits)
    verify_frame(frame)
    envelope = decode_payload(frame, limits)
    now = clock.now_ms()
    check_validity(envelope, now_ms=now, audience=audience, limits=limits)
    if replay is not None:
        replay.remember(envelope.sender, envelope.id, envelope.expires_at_ms, now_ms=now)
    return envelope
