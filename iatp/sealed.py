"""Sealed frames: a signed envelope encrypted to its recipient's DID, without a session.

For a message that must stay confidential when the two parties have no
handshake session: the sender signs the envelope as usual (section 6), then
encrypts the whole signed frame to the recipient's key (**sign then encrypt**).
The recipient's X25519 key is derived from its Ed25519 ``did:key`` (the standard
birational map); the sender uses a fresh ephemeral X25519 key per frame, so it
needs no key of its own for the encryption and nothing links two sealed frames.

Wire form, canonical msgpack::

    [1, recipient DID (str), ephemeral public key (bin 32), nonce (bin 24), ciphertext (bin)]

    R      = X25519 public key of the recipient's Ed25519 key
    shared = X25519(ephemeral secret, R)                 (all-zero: refused)
    key    = BLAKE2b-256(key = shared, "iatp/1/sealed\\0" || ephemeral public || R)
    ciphertext = XChaCha20-Poly1305-Encrypt(key, nonce,
                     aad = "iatp/1/sealed\\0" || UTF-8(recipient DID) || ephemeral public,
                     plaintext = the signed frame (section 6.1))

What is bound: the inner frame is signed by its sender over a payload that names
the recipient, so a recipient that re-seals it to someone else gets it refused
there as ``wrong_audience``; the outer frame binds the ciphertext to the
recipient DID and the ephemeral key. What is visible: the recipient DID (also in
the subject), the sizes. The sender's DID, the type and the body are not.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from iatp.did import public_key_from_did
from iatp.envelope import DEFAULT_LIMITS, IATP_VERSION, EnvelopeLimits
from iatp.envelope import _pack as _canonical_pack
from iatp.envelope import _unpack as _strict_unpack
from iatp.errors import (
    ExtraFields,
    FieldTypeError,
    InvalidSeal,
    MissingFields,
    NonCanonicalEncoding,
    OversizedEnvelope,
    UnsupportedVersion,
    WrongAudience,
)
from iatp.identity import AgentIdentity

SEALED_DOMAIN = b"iatp/1/sealed\x00"
SEALED_FRAME_FIELDS = 5
KEY_BYTES = 32
NONCE_BYTES = 24
TAG_BYTES = 16
# The sealed frame's own overhead on top of the inner frame, at most.
SEALED_OVERHEAD = 160

__all__ = [
    "SEALED_DOMAIN",
    "SEALED_OVERHEAD",
    "SealedFrame",
    "open_sealed_frame",
    "parse_sealed_frame",
    "seal_frame_to",
    "x25519_public_for_did",
]


@dataclass(frozen=True, slots=True)
class SealedFrame:
    """A parsed sealed frame: nothing in it is trusted or readable until opened."""

    recipient: str
    ephemeral_public: bytes
    nonce: bytes
    ciphertext: bytes


@functools.lru_cache(maxsize=16_384)
def x25519_public_for_did(did: str) -> bytes:
    """The X25519 public key of an Ed25519 ``did:key`` (cached: DIDs are immutable).

    Raises:
        InvalidDID: ``did`` is not an Ed25519 did:key.
    """
    return bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key_from_did(did)))


def _x25519_secret(identity: AgentIdentity) -> bytes:
    ed_secret = identity.seed() + identity.public_key
    return bytes(nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(ed_secret))


def _key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    if shared == bytes(KEY_BYTES):
        raise InvalidSeal("the ephemeral key is a low-order point")
    digest = hashlib.blake2b(key=shared, digest_size=KEY_BYTES)
    digest.update(SEALED_DOMAIN + ephemeral_public + recipient_public)
    return digest.digest()


def _aad(recipient: str, ephemeral_public: bytes) -> bytes:
    return SEALED_DOMAIN + recipient.encode() + ephemeral_public


def seal_frame_to(
    recipient: str,
    frame: bytes,
    *,
    ephemeral_secret: bytes | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt a signed ``frame`` to ``recipient``'s DID.

    ``ephemeral_secret`` and ``nonce`` are for test vectors only; by default both
    are fresh random bytes.

    Raises:
        InvalidDID: ``recipient`` is not an Ed25519 did:key.
    """
    secret = os.urandom(KEY_BYTES) if ephemeral_secret is None else ephemeral_secret
    ephemeral_public = bytes(nacl.bindings.crypto_scalarmult_base(secret))
    recipient_public = x25519_public_for_did(recipient)
    shared = bytes(nacl.bindings.crypto_scalarmult(secret, recipient_public))
    key = _key(shared, ephemeral_public, recipient_public)
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        frame, _aad(recipient, ephemeral_public), nonce, key
    )
    return _canonical_pack([IATP_VERSION, recipient, ephemeral_public, nonce, bytes(ciphertext)])


def parse_sealed_frame(data: bytes, limits: EnvelopeLimits = DEFAULT_LIMITS) -> SealedFrame:
    """Size limit and strict decoding of the outer sealed frame. Trusts nothing yet.

    Raises:
        OversizedEnvelope, MalformedEnvelope (and its subclasses).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FieldTypeError("a frame is bytes")
    limit = limits.max_frame_bytes + SEALED_OVERHEAD
    if len(data) > limit:
        raise OversizedEnvelope(f"sealed frame is {len(data)} bytes; limit {limit}")
    raw = bytes(data)
    fields = _strict_unpack(raw, limit)
    if not isinstance(fields, list):
        raise FieldTypeError("a sealed frame is a msgpack array")
    if fields and type(fields[0]) is int and fields[0] != IATP_VERSION:
        raise UnsupportedVersion(f"IATP version {fields[0]} is not supported (only 1)")
    if len(fields) < SEALED_FRAME_FIELDS:
        raise MissingFields(f"sealed frame has {len(fields)} fields; expected 5")
    if len(fields) > SEALED_FRAME_FIELDS:
        raise ExtraFields(f"sealed frame has {len(fields)} fields; expected 5")
    version, recipient, ephemeral_public, nonce, ciphertext = fields
    if type(version) is not int or not isinstance(recipient, str):
        raise FieldTypeError("version must be an integer and recipient a string")
    if not isinstance(ephemeral_public, bytes) or len(ephemeral_public) != KEY_BYTES:
        raise FieldTypeError(f"ephemeral key must be {KEY_BYTES} bytes of binary")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise FieldTypeError(f"nonce must be {NONCE_BYTES} bytes of binary")
    if not isinstance(ciphertext, bytes) or len(ciphertext) < TAG_BYTES:
        raise FieldTypeError(f"ciphertext must be binary of at least {TAG_BYTES} bytes")
    if _canonical_pack(fields) != raw:
        raise NonCanonicalEncoding("sealed frame is not in canonical msgpack form")
    return SealedFrame(recipient, ephemeral_public, nonce, ciphertext)


def open_sealed_frame(frame: SealedFrame, identity: AgentIdentity) -> bytes:
    """The signed frame inside ``frame`` (verify it as any signed frame next).

    Raises:
        WrongAudience: sealed to another DID.
        InvalidSeal: does not decrypt and authenticate under ``identity``'s key.
    """
    if frame.recipient != identity.did:
        raise WrongAudience("the frame is sealed to another recipient")
    secret = _x25519_secret(identity)
    try:
        shared = bytes(nacl.bindings.crypto_scalarmult(secret, frame.ephemeral_public))
    except nacl.exceptions.RuntimeError:
        raise InvalidSeal("the ephemeral key is a low-order point") from None
    key = _key(shared, frame.ephemeral_public, x25519_public_for_did(identity.did))
    try:
        return bytes(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                frame.ciphertext, _aad(frame.recipient, frame.ephemeral_public), frame.nonce, key
            )
        )
    except nacl.exceptions.CryptoError:
        raise InvalidSeal("sealed frame does not decrypt under the recipient's key") from None
