"""An agent's identity: an Ed25519 signing key and the DID derived from it."""

from __future__ import annotations

from nacl.signing import SigningKey, VerifyKey

from iatp.did import did_from_public_key

SEED_BYTES = 32


class AgentIdentity:
    """An Ed25519 key pair and its ``did:key``.

    The secret never appears in ``repr`` or ``str``. Create one with
    :meth:`generate`, :meth:`from_seed`, or load one with
    :func:`iatp.keystore.load_identity`.
    """

    __slots__ = ("_did", "_signing_key")

    def __init__(self, signing_key: SigningKey) -> None:
        self._signing_key = signing_key
        self._did = did_from_public_key(bytes(signing_key.verify_key))

    @classmethod
    def generate(cls) -> AgentIdentity:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> AgentIdentity:
        """Deterministic identity from a 32-byte seed (test vectors, simulations)."""
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
        return cls(SigningKey(seed))

    @property
    def did(self) -> str:
        return self._did

    @property
    def verify_key(self) -> VerifyKey:
        return self._signing_key.verify_key

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    def seed(self) -> bytes:
        """The 32-byte secret seed. Handle with care: only the keystore needs it."""
        return bytes(self._signing_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of ``message``."""
        return self._signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"AgentIdentity(did={self._did!r})"
