"""Session frames: envelopes encrypted and authenticated under a handshake session's keys.

After a mutual handshake (:mod:`iatp.handshake`) both sides hold directional
keys. A session frame carries the same canonical envelope payload as a signed
frame, encrypted with XChaCha20-Poly1305 (an AEAD) under the sender's send key
(the receiver's receive key) instead of signed: a few microseconds instead of
~15 µs to sign and ~40 µs to verify, and nobody but the two parties can read it.
The AEAD tag convinces only the two session parties, so session frames are for
traffic between them; anything that becomes evidence, audit or saga state must
stay signed (``docs/iatp.md`` section 15).

Wire form, canonical msgpack::

    [1, sender DID (str), session id (bin 16), nonce (bin 24), ciphertext (bin)]
    ciphertext = XChaCha20-Poly1305-Encrypt(
        key   = K_sender->receiver,
        nonce = 24 random bytes, never reused under a key,
        aad   = "iatp/1/session\\0" || session id || sender DID (UTF-8),
        plaintext = payload)

Keys are directional, so a frame reflected back to its sender does not open.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, fields

import nacl.bindings
import nacl.exceptions

from iatp.envelope import (
    DEFAULT_LIMITS,
    IATP_VERSION,
    Envelope,
    EnvelopeLimits,
    encode_payload,
)
from iatp.envelope import _pack as _canonical_pack
from iatp.envelope import _unpack as _strict_unpack
from iatp.errors import (
    ExtraFields,
    FieldTypeError,
    InvalidSessionMAC,
    MissingFields,
    NonCanonicalEncoding,
    OversizedEnvelope,
    SenderMismatch,
    UnknownSession,
    UnsupportedVersion,
)
from iatp.handshake import SessionKeys

SESSION_DOMAIN = b"iatp/1/session\x00"
SESSION_FRAME_FIELDS = 5
SESSION_ID_BYTES = 16
NONCE_BYTES = 24
TAG_BYTES = 16

__all__ = [
    "NONCE_BYTES",
    "SESSION_DOMAIN",
    "TAG_BYTES",
    "OpenedSessionFrame",
    "SessionFrame",
    "open_session_payload",
    "parse_session_frame",
    "seal_session_frame",
    "seal_session_payload",
    "verify_session_frame",
]


@dataclass(frozen=True, slots=True)
class SessionFrame:
    """A parsed session frame; nothing in it is trusted (or readable) until it is opened."""

    sender: str
    session_id: bytes
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class OpenedSessionFrame:
    """A session frame that decrypted and authenticated: what ``decode_payload`` reads."""

    sender: str
    session_id: bytes
    payload: bytes


# Fast constructors (as ``iatp.envelope._make_frame``): a frozen dataclass's
# ``__init__`` sets each field through ``object.__setattr__``; writing the slots
# builds the identical object in a fraction of the time, on every frame.
_new_object = object.__new__
_SET_FRAME = tuple(
    SessionFrame.__dict__[name].__set__ for name in ("sender", "session_id", "nonce", "ciphertext")
)
_SET_OPENED = tuple(
    OpenedSessionFrame.__dict__[name].__set__ for name in ("sender", "session_id", "payload")
)
assert tuple(f.name for f in fields(SessionFrame)) == (
    "sender",
    "session_id",
    "nonce",
    "ciphertext",
)
assert tuple(f.name for f in fields(OpenedSessionFrame)) == ("sender", "session_id", "payload")


def _make_session_frame(
    sender: str, session_id: bytes, nonce: bytes, ciphertext: bytes
) -> SessionFrame:
    frame: SessionFrame = _new_object(SessionFrame)
    set_sender, set_session, set_nonce, set_ciphertext = _SET_FRAME
    set_sender(frame, sender)
    set_session(frame, session_id)
    set_nonce(frame, nonce)
    set_ciphertext(frame, ciphertext)
    return frame


def _make_opened(sender: str, session_id: bytes, payload: bytes) -> OpenedSessionFrame:
    opened: OpenedSessionFrame = _new_object(OpenedSessionFrame)
    set_sender, set_session, set_payload = _SET_OPENED
    set_sender(opened, sender)
    set_session(opened, session_id)
    set_payload(opened, payload)
    return opened


def _aad(session_id: bytes, sender: str) -> bytes:
    return SESSION_DOMAIN + session_id + sender.encode()


# PyNaCl's public AEAD wrappers check every argument and build their error texts
# (``str.format``) on every call: about 2.7 µs each, more than the AEAD of a
# small payload. Our arguments have fixed, checked sizes (a 32-byte session key,
# a 24-byte nonce, a ciphertext of at least the tag), so the hot path calls the
# same libsodium functions through PyNaCl's own cffi module, and falls back to the
# public wrappers (which raise their own errors) for anything else.
_KEY_BYTES = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES
try:
    from nacl._sodium import ffi as _ffi  # type: ignore[import-not-found,unused-ignore]
    from nacl._sodium import lib as _lib  # type: ignore[import-not-found,unused-ignore]

    _encrypt = _lib.crypto_aead_xchacha20poly1305_ietf_encrypt
    _decrypt = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt
    _new, _buffer, _NULL = _ffi.new, _ffi.buffer, _ffi.NULL
except (ImportError, AttributeError):  # pragma: no cover (a PyNaCl without them)
    _encrypt = None


def seal_session_payload(
    key: bytes, session_id: bytes, sender: str, nonce: bytes, payload: bytes
) -> bytes:
    """The ciphertext (payload + 16-byte tag) of ``payload`` in ``session_id`` under ``key``."""
    aad = _aad(session_id, sender)
    if (
        _encrypt is not None
        and type(payload) is bytes
        and type(nonce) is bytes
        and len(nonce) == NONCE_BYTES
        and type(key) is bytes
        and len(key) == _KEY_BYTES
    ):
        size = len(payload) + TAG_BYTES
        out, out_len = _new("unsigned char[]", size), _new("unsigned long long *")
        if _encrypt(out, out_len, payload, len(payload), aad, len(aad), _NULL, nonce, key) == 0:
            return bytes(_buffer(out, out_len[0]))
    return bytes(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(payload, aad, nonce, key))


def open_session_payload(
    key: bytes, session_id: bytes, sender: str, nonce: bytes, ciphertext: bytes
) -> bytes:
    """The payload inside ``ciphertext``.

    Raises:
        InvalidSessionMAC: the tag does not verify (wrong key, session, sender or bytes).
    """
    aad = _aad(session_id, sender)
    if (
        _encrypt is not None
        and type(ciphertext) is bytes
        and len(ciphertext) >= TAG_BYTES
        and type(nonce) is bytes
        and len(nonce) == NONCE_BYTES
        and type(key) is bytes
        and len(key) == _KEY_BYTES
    ):
        size = len(ciphertext) - TAG_BYTES
        out, out_len = _new("unsigned char[]", max(size, 1)), _new("unsigned long long *")
        if _decrypt(out, out_len, _NULL, ciphertext, len(ciphertext), aad, len(aad), nonce, key):
            raise InvalidSessionMAC("session frame does not authenticate", sender=sender)
        return bytes(_buffer(out, out_len[0]))
    if len(ciphertext) < TAG_BYTES:  # no tag at all (a parsed frame always has one)
        raise InvalidSessionMAC("session frame does not authenticate", sender=sender)
    try:
        return bytes(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, key)
        )
    except nacl.exceptions.CryptoError:
        raise InvalidSessionMAC("session frame does not authenticate", sender=sender) from None


def seal_session_frame(
    envelope: Envelope, session: SessionKeys, *, nonce: bytes | None = None
) -> bytes:
    """Encode ``envelope``, encrypt it under ``session``'s send key.

    ``nonce``: only for test vectors; by default 24 fresh random bytes (with
    192-bit nonces, random ones do not repeat in practice under one key).

    Raises:
        SenderMismatch: the envelope is not addressed to the session's peer.
    """
    if envelope.recipient != session.peer.did:
        raise SenderMismatch(
            "a session frame can only be addressed to the session's peer",
            envelope_id=envelope.id,
            sender=envelope.sender,
        )
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    ciphertext = seal_session_payload(
        session.send_key, session.session_id, envelope.sender, nonce, encode_payload(envelope)
    )
    return _canonical_pack([IATP_VERSION, envelope.sender, session.session_id, nonce, ciphertext])


def parse_session_frame(data: bytes, limits: EnvelopeLimits = DEFAULT_LIMITS) -> SessionFrame:
    """Size limit and strict decoding of the outer session frame. Trusts nothing yet.

    Raises:
        OversizedEnvelope, MalformedEnvelope (and its subclasses).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FieldTypeError("a frame is bytes")
    if len(data) > limits.max_frame_bytes:
        raise OversizedEnvelope(f"frame is {len(data)} bytes; limit {limits.max_frame_bytes}")
    raw = bytes(data)
    fields = _strict_unpack(raw, limits.max_frame_bytes)
    if not isinstance(fields, list):
        raise FieldTypeError("a session frame is a msgpack array")
    if fields and type(fields[0]) is int and fields[0] != IATP_VERSION:
        raise UnsupportedVersion(f"IATP version {fields[0]} is not supported (only 1)")
    if len(fields) < SESSION_FRAME_FIELDS:
        raise MissingFields(f"session frame has {len(fields)} fields; expected 5")
    if len(fields) > SESSION_FRAME_FIELDS:
        raise ExtraFields(f"session frame has {len(fields)} fields; expected 5")
    version, sender, session_id, nonce, ciphertext = fields
    if type(version) is not int:
        raise FieldTypeError("version must be an integer")
    if not isinstance(sender, str):
        raise FieldTypeError("sender must be a string")
    if not isinstance(session_id, bytes) or len(session_id) != SESSION_ID_BYTES:
        raise FieldTypeError(f"session id must be {SESSION_ID_BYTES} bytes of binary")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise FieldTypeError(f"nonce must be {NONCE_BYTES} bytes of binary")
    if not isinstance(ciphertext, bytes) or len(ciphertext) < TAG_BYTES:
        raise FieldTypeError(f"ciphertext must be binary of at least {TAG_BYTES} bytes")
    if _canonical_pack(fields) != raw:
        raise NonCanonicalEncoding("session frame is not in canonical msgpack form")
    return _make_session_frame(sender, session_id, nonce, ciphertext)


def verify_session_frame(frame: SessionFrame, session: SessionKeys | None) -> OpenedSessionFrame:
    """Check that ``frame`` belongs to ``session`` and open it.

    Args:
        frame: the parsed frame.
        session: the receiver's session with ``frame.sender`` (``None``: there is none).

    Raises:
        UnknownSession: no session with the sender, or another session id.
        InvalidSessionMAC: the frame does not decrypt and authenticate under the
            session's receive key.
    """
    if (
        session is None
        or session.peer.did != frame.sender
        or not hmac.compare_digest(session.session_id, frame.session_id)
    ):
        raise UnknownSession(
            "no handshake session with this sender under this session id; "
            "the sender must handshake again",
            sender=frame.sender,
        )
    payload = open_session_payload(
        session.receive_key, frame.session_id, frame.sender, frame.nonce, frame.ciphertext
    )
    return _make_opened(frame.sender, frame.session_id, payload)
