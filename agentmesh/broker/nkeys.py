"""NATS nkeys: the same Ed25519 key as a ``did:key``, spelled the way nats-server reads it.

An nkey public key is one prefix byte (its role: operator ``O``, account ``A``,
user ``U``), the 32 raw key bytes and a CRC-16 (XMODEM, little-endian), in base32
without padding. A seed is two prefix bytes (``S`` plus the role), the 32-byte
Ed25519 seed and the CRC. So an agent's ``did:key:z6Mk...`` and its NATS user key
``U...`` name the same 32 bytes: the server's nonce challenge and the peers'
envelope checks prove the same key.

Pure functions over bytes; cross-checked against the ``nkeys`` package in tests.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools

from agentmesh.broker.errors import InvalidNkey
from iatp.did import DID_KEY_PREFIX, did_from_public_key, public_key_from_did

KEY_BYTES = 32
_SEED_PREFIX = 18 << 3  # "S"


class KeyRole(enum.Enum):
    """What a key is to nats-server; the value is its prefix byte."""

    OPERATOR = 14 << 3  # "O"
    ACCOUNT = 0  # "A"
    USER = 20 << 3  # "U"

    @property
    def letter(self) -> str:
        return base64.b32encode(bytes([self.value, 0, 0, 0, 0]))[0:1].decode()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM (polynomial 0x1021, initial 0), as nkeys uses."""
    return binascii.crc_hqx(data, 0)


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


def _unb32(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 8)
    try:
        return base64.b32decode(padded.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise InvalidNkey(f"not base32: {text[:12]!r}...") from exc


def _with_crc(payload: bytes) -> str:
    return _b32(payload + crc16(payload).to_bytes(2, "little"))


def _checked(text: str) -> bytes:
    raw = _unb32(text)
    if len(raw) < 3:
        raise InvalidNkey("too short to be an nkey")
    payload, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if crc16(payload) != crc:
        raise InvalidNkey(f"CRC mismatch in {text[:12]!r}...")
    return payload


def encode_public(role: KeyRole, public_key: bytes) -> str:
    """The nkey public key (``O...``/``A...``/``U...``) of 32 raw Ed25519 bytes.

    Raises:
        InvalidNkey: ``public_key`` is not 32 bytes.
    """
    if len(public_key) != KEY_BYTES:
        raise InvalidNkey(f"an Ed25519 public key is {KEY_BYTES} bytes, got {len(public_key)}")
    return _with_crc(bytes([role.value]) + public_key)


def decode_public(nkey: str, role: KeyRole | None = None) -> tuple[KeyRole, bytes]:
    """(role, raw key) of an nkey public key, checking its CRC and, if given, its role.

    Raises:
        InvalidNkey: Not base32, wrong length, bad CRC, unknown or unexpected role.
    """
    payload = _checked(nkey)
    if len(payload) != 1 + KEY_BYTES:
        raise InvalidNkey(f"{nkey[:12]!r}... is not a public nkey (wrong length)")
    try:
        found = KeyRole(payload[0])
    except ValueError:
        raise InvalidNkey(f"{nkey[:12]!r}... has an unknown role prefix") from None
    if role is not None and found is not role:
        raise InvalidNkey(f"{nkey[:12]!r}... is an {found.name.lower()} key, not {role.name}")
    return found, payload[1:]


def encode_seed(role: KeyRole, seed: bytes) -> str:
    """The nkey seed (``SO...``/``SA...``/``SU...``) of a 32-byte Ed25519 seed.

    Raises:
        InvalidNkey: ``seed`` is not 32 bytes.
    """
    if len(seed) != KEY_BYTES:
        raise InvalidNkey(f"an Ed25519 seed is {KEY_BYTES} bytes, got {len(seed)}")
    prefix = bytes([_SEED_PREFIX | (role.value >> 5), (role.value & 31) << 3])
    return _with_crc(prefix + seed)


def decode_seed(text: str) -> tuple[KeyRole, bytes]:
    """(role, 32-byte seed) of an nkey seed.

    Raises:
        InvalidNkey: Not a seed, bad CRC or unknown role.
    """
    payload = _checked(text)
    if len(payload) != 2 + KEY_BYTES or payload[0] & 0xF8 != _SEED_PREFIX:
        raise InvalidNkey("not an nkey seed")
    value = ((payload[0] & 7) << 5) | (payload[1] >> 3)
    try:
        return KeyRole(value), payload[2:]
    except ValueError:
        raise InvalidNkey("an nkey seed with an unknown role") from None


@functools.lru_cache(maxsize=65_536)
def user_nkey_for_did(did: str) -> str:
    """The NATS user public key of an agent's ``did:key`` (the same 32 bytes; cached).

    Raises:
        InvalidDID: ``did`` is not an Ed25519 did:key.
    """
    return encode_public(KeyRole.USER, public_key_from_did(did))


def did_for_nkey(nkey: str) -> str:
    """The ``did:key`` of any public nkey (user, account or operator role).

    Raises:
        InvalidNkey: ``nkey`` is malformed.
    """
    _, raw = decode_public(nkey)
    did = did_from_public_key(raw)
    assert did.startswith(DID_KEY_PREFIX)
    return did


__all__ = [
    "KEY_BYTES",
    "KeyRole",
    "crc16",
    "decode_public",
    "decode_seed",
    "did_for_nkey",
    "encode_public",
    "encode_seed",
    "user_nkey_for_did",
]
