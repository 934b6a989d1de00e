"""``did:key`` for Ed25519 keys: derivation and strict, cached resolution.

An Ed25519 ``did:key`` is ``"did:key:z" + base58btc(0xed 0x01 || public_key)``:
multibase prefix ``z`` (base58btc), the unsigned-varint multicodec ``0xed``
(ed25519-pub, encoded as the two bytes ``ed 01``), then the 32-byte key. This is
exactly what didkit derives (cross-checked by ``tests/iatp/test_did_didkit.py``).
"""

from __future__ import annotations

from functools import lru_cache

from nacl.signing import VerifyKey

from iatp.base58 import Base58Error, b58decode, b58encode
from iatp.errors import InvalidDID

DID_KEY_PREFIX = "did:key:"
ED25519_MULTICODEC = b"\xed\x01"
ED25519_KEY_BYTES = 32
# Every Ed25519 did:key is 56 characters: "did:key:z" + 47 base58 digits ("z6Mk...").
MAX_DID_LENGTH = 128


def did_from_public_key(public_key: bytes) -> str:
    """The ``did:key`` of a 32-byte Ed25519 public key."""
    if len(public_key) != ED25519_KEY_BYTES:
        raise InvalidDID(public_key.hex(), "an Ed25519 public key is 32 bytes")
    return DID_KEY_PREFIX + "z" + b58encode(ED25519_MULTICODEC + public_key)


def public_key_from_did(did: str) -> bytes:
    """The 32-byte Ed25519 public key named by ``did``.

    Raises:
        InvalidDID: wrong method or prefix, multibase other than ``z``, bad
            base58, wrong multicodec, wrong length, or a non-canonical encoding.
    """
    if not isinstance(did, str):
        raise InvalidDID(repr(did), "a DID is a string")
    if len(did) > MAX_DID_LENGTH:
        raise InvalidDID(did, f"longer than {MAX_DID_LENGTH} characters")
    if not did.startswith(DID_KEY_PREFIX):
        raise InvalidDID(did, "only the did:key method is supported")
    multibase = did[len(DID_KEY_PREFIX) :]
    if not multibase.startswith("z"):
        raise InvalidDID(did, "multibase prefix must be 'z' (base58btc)")
    try:
        raw = b58decode(multibase[1:])
    except Base58Error as exc:
        raise InvalidDID(did, f"bad base58: {exc}") from None
    if raw[:2] != ED25519_MULTICODEC:
        raise InvalidDID(did, "multicodec is not ed25519-pub (0xed01)")
    key = raw[2:]
    if len(key) != ED25519_KEY_BYTES:
        raise InvalidDID(did, f"key is {len(key)} bytes, expected {ED25519_KEY_BYTES}")
    if b58encode(raw) != multibase[1:]:
        raise InvalidDID(did, "non-canonical base58 encoding")
    return key


def verify_key_for_did(did: str) -> VerifyKey:
    """The PyNaCl verify key for ``did``, cached (DIDs are immutable names).

    Raises:
        InvalidDID: see :func:`public_key_from_did`.
    """
    # Checked before the cache: an unhashable value would raise TypeError there.
    if not isinstance(did, str):
        raise InvalidDID(repr(did), "a DID is a string")
    return _cached_verify_key(did)


@lru_cache(maxsize=65_536)
def _cached_verify_key(did: str) -> VerifyKey:
    return VerifyKey(public_key_from_did(did))


def is_did(text: str) -> bool:
    """True when ``text`` is a well-formed Ed25519 ``did:key``."""
    try:
        verify_key_for_did(text)
    except InvalidDID:
        return False
    return True
