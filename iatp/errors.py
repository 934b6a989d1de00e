"""Errors raised by the IATP layer.

Every error the project raises derives from :class:`AgentMeshError`. The root
lives here, in layer 0, because ``iatp`` imports nothing else of ours; the other
packages re-export it. Each rejection class carries a stable ``code`` used by
counters, audit records and the JSON test vectors (``tests/vectors``)::

    AgentMeshError
    └── IATPError
        ├── InvalidDID                     code "invalid_did"
        ├── KeystoreError
        │   ├── KeystoreFormatError        code "keystore_format"
        │   └── KeystoreDecryptError       code "keystore_decrypt"
        ├── RotationError                  code "invalid_rotation"
        ├── HandshakeError                 code "handshake_failed"
        └── EnvelopeError                  (fields: envelope_id, sender)
            ├── OversizedEnvelope          code "oversized"
            ├── MalformedEnvelope          code "malformed"
            │   ├── UnsupportedVersion     code "unsupported_version"
            │   ├── FieldTypeError         code "field_type"
            │   ├── MissingFields          code "missing_fields"
            │   ├── ExtraFields            code "extra_fields"
            │   ├── TrailingBytes          code "trailing_bytes"
            │   ├── InvalidSenderDID       code "invalid_sender"
            │   └── NonCanonicalEncoding   code "non_canonical"
            ├── InvalidSignature           code "bad_signature"
            ├── InvalidSessionMAC          code "bad_mac"
            ├── InvalidSeal                code "bad_seal"
            ├── UnknownSession             code "unknown_session"
            ├── SessionExpired             code "session_expired"
            ├── SenderMismatch             code "sender_mismatch"
            ├── ExpiredEnvelope            code "expired"
            ├── IssuedInFuture             code "issued_in_future"
            ├── LifetimeTooLong            code "lifetime_too_long"
            ├── WrongAudience              code "wrong_audience"
            ├── ReplayedEnvelope           code "replayed"
            ├── IssuedBeforeStart          code "issued_before_start"
            └── ReplayCacheFull            code "replay_cache_full"
"""

from __future__ import annotations


class AgentMeshError(Exception):
    """Root of every error raised by agentmesh, iatp, trust and registry."""

    code: str = "error"


class IATPError(AgentMeshError):
    """An identity, key, envelope or handshake failed an IATP rule."""

    code = "iatp_error"


class InvalidDID(IATPError):
    """A DID string is not a well-formed Ed25519 ``did:key``."""

    code = "invalid_did"

    def __init__(self, did: str, reason: str) -> None:
        super().__init__(f"invalid DID {did[:80]!r}: {reason}")
        self.did = did
        self.reason = reason


class KeystoreError(IATPError):
    """An identity file could not be read or written."""

    code = "keystore_error"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"keystore {path}: {reason}")
        self.path = path
        self.reason = reason


class KeystoreFormatError(KeystoreError):
    """The file is not an agentmesh keystore, or a field is malformed."""

    code = "keystore_format"


class KeystoreDecryptError(KeystoreError):
    """Decryption failed: the passphrase is wrong or the file was tampered with."""

    code = "keystore_decrypt"


class RotationError(IATPError):
    """A key rotation statement is malformed or its signatures do not hold."""

    code = "invalid_rotation"


class HandshakeError(IATPError):
    """A handshake message is malformed, forged, replayed or spliced."""

    code = "handshake_failed"


class EnvelopeError(IATPError):
    """An envelope was rejected. ``envelope_id``/``sender`` are set when known."""

    code = "envelope_error"

    def __init__(
        self, message: str, *, envelope_id: bytes | None = None, sender: str | None = None
    ) -> None:
        super().__init__(message)
        self.envelope_id = envelope_id
        self.sender = sender


class OversizedEnvelope(EnvelopeError):
    code = "oversized"


class MalformedEnvelope(EnvelopeError):
    code = "malformed"


class UnsupportedVersion(MalformedEnvelope):
    code = "unsupported_version"


class FieldTypeError(MalformedEnvelope):
    code = "field_type"


class MissingFields(MalformedEnvelope):
    code = "missing_fields"


class ExtraFields(MalformedEnvelope):
    code = "extra_fields"


class TrailingBytes(MalformedEnvelope):
    code = "trailing_bytes"


class InvalidSenderDID(MalformedEnvelope):
    code = "invalid_sender"


class NonCanonicalEncoding(MalformedEnvelope):
    code = "non_canonical"


class InvalidSignature(EnvelopeError):
    code = "bad_signature"


class InvalidSessionMAC(EnvelopeError):
    """A session frame does not decrypt and authenticate under the session's receive key."""

    code = "bad_mac"


class InvalidSeal(EnvelopeError):
    """A sealed frame does not decrypt and authenticate under the recipient's key."""

    code = "bad_seal"


class UnknownSession(EnvelopeError):
    """A session frame names no session this receiver holds with its sender."""

    code = "unknown_session"


class SessionExpired(EnvelopeError):
    """A session frame names a session past its age or message limit: handshake again."""

    code = "session_expired"


class SenderMismatch(EnvelopeError):
    code = "sender_mismatch"


class ExpiredEnvelope(EnvelopeError):
    code = "expired"


class IssuedInFuture(EnvelopeError):
    code = "issued_in_future"


class LifetimeTooLong(EnvelopeError):
    code = "lifetime_too_long"


class WrongAudience(EnvelopeError):
    code = "wrong_audience"


class ReplayedEnvelope(EnvelopeError):
    code = "replayed"


class IssuedBeforeStart(EnvelopeError):
    """Issued before this node (re)started: its replay cache cannot vouch for it.

    A node's replay cache lives in memory, so after a restart it would accept a
    captured envelope again. Refusing everything issued before the start closes
    that window: such an envelope was addressed to the previous run.
    """

    code = "issued_before_start"


class ReplayCacheFull(EnvelopeError):
    """The replay cache is at capacity; the envelope is refused (fail closed)."""

    code = "replay_cache_full"
