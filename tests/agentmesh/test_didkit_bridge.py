"""The didkit seam: JWKs, DID derivation and resolution through the real didkit."""

from __future__ import annotations

import base64
import json

import didkit
import pytest

from agentmesh.didkit_bridge import (
    cross_check,
    didkit_did_for,
    didkit_resolve_public_key,
    identity_jwk,
)
from iatp.base58 import b58encode
from iatp.errors import InvalidDID
from iatp.identity import AgentIdentity

SEED = bytes(range(32))
# did:key spec example of a secp256k1 key: resolvable, but not Ed25519.
SECP256K1_DID = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_public_jwk_holds_the_public_key_and_no_secret() -> None:
    identity = AgentIdentity.from_seed(SEED)
    jwk = json.loads(identity_jwk(identity))
    assert jwk == {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]}
    assert _b64url_decode(jwk["x"]) == identity.public_key
    assert "=" not in jwk["x"]


def test_private_jwk_holds_the_seed() -> None:
    identity = AgentIdentity.from_seed(SEED)
    jwk = json.loads(identity_jwk(identity, private=True))
    assert _b64url_decode(jwk["d"]) == SEED
    assert _b64url_decode(jwk["x"]) == identity.public_key


def test_didkit_derives_the_same_did_from_the_private_jwk() -> None:
    identity = AgentIdentity.from_seed(SEED)
    assert didkit.key_to_did("key", identity_jwk(identity, private=True)) == identity.did


def test_didkit_generated_key_gives_the_same_did_in_iatp() -> None:
    # The other direction: a key made by didkit, read back by iatp.
    jwk = json.loads(didkit.generate_ed25519_key())
    identity = AgentIdentity.from_seed(_b64url_decode(jwk["d"]))
    assert identity.public_key == _b64url_decode(jwk["x"])
    assert identity.did == didkit.key_to_did("key", json.dumps(jwk))


def test_didkit_did_for_and_cross_check_agree() -> None:
    for _ in range(25):
        identity = AgentIdentity.generate()
        assert didkit_did_for(identity) == identity.did
        assert cross_check(identity) is True


async def test_resolve_returns_the_ed25519_public_key() -> None:
    identity = AgentIdentity.from_seed(SEED)
    assert await didkit_resolve_public_key(identity.did) == identity.public_key


async def test_resolve_of_a_non_ed25519_did_key_raises_invalid_did() -> None:
    with pytest.raises(InvalidDID, match="Ed25519"):
        await didkit_resolve_public_key(SECP256K1_DID)


@pytest.mark.parametrize(
    "did",
    [
        "did:key:zbad0",
        "did:key:",
        "not a did",
        "did:key:z" + b58encode(b"\xed\x01" + b"\x00" * 5),
    ],
)
async def test_resolve_of_garbage_raises_invalid_did(did: str) -> None:
    with pytest.raises(InvalidDID) as info:
        await didkit_resolve_public_key(did)
    assert info.value.did == did
