"""AgentIdentity: key pair, DID, signing, and no secret in repr."""

from __future__ import annotations

import base64
import os

import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from iatp.did import did_from_public_key
from iatp.identity import AgentIdentity

# RFC 8032, section 7.1, test 1 (empty message).
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_repr_and_str_do_not_contain_the_seed() -> None:
    identity = AgentIdentity.from_seed(RFC8032_SEED)
    for text in (repr(identity), str(identity), f"{identity!r:>200}"):
        assert RFC8032_SEED.hex() not in text.lower()
        assert RFC8032_SEED.hex()[:16] not in text.lower()
        assert base64.b64encode(RFC8032_SEED).decode() not in text
        assert identity.did in text


def test_identity_has_no_instance_dict_to_leak_through() -> None:
    identity = AgentIdentity.generate()
    assert not hasattr(identity, "__dict__")
    assert "seed" not in repr(identity).lower()


def test_from_seed_is_deterministic() -> None:
    seed = os.urandom(32)
    a, b = AgentIdentity.from_seed(seed), AgentIdentity.from_seed(seed)
    assert a.did == b.did
    assert a.public_key == b.public_key
    assert a.seed() == b.seed() == seed
    # Ed25519 signatures are deterministic too.
    assert a.sign(b"message") == b.sign(b"message")


def test_different_seeds_give_different_dids() -> None:
    dids = {AgentIdentity.from_seed(os.urandom(32)).did for _ in range(50)}
    assert len(dids) == 50


def test_generate_gives_fresh_identities() -> None:
    assert AgentIdentity.generate().did != AgentIdentity.generate().did


def test_rfc8032_vector_public_key_and_signature() -> None:
    identity = AgentIdentity.from_seed(RFC8032_SEED)
    assert identity.public_key == RFC8032_PUBLIC
    assert identity.sign(b"") == RFC8032_SIGNATURE
    assert identity.did == did_from_public_key(RFC8032_PUBLIC)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_from_seed_refuses_wrong_length(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        AgentIdentity.from_seed(b"\x07" * size)


def test_signature_verifies_under_the_identity_key_only() -> None:
    identity, other = AgentIdentity.generate(), AgentIdentity.generate()
    signature = identity.sign(b"payload")
    assert len(signature) == 64
    assert identity.verify_key.verify(b"payload", signature) == b"payload"
    assert VerifyKey(identity.public_key).verify(b"payload", signature) == b"payload"
    with pytest.raises(BadSignatureError):
        identity.verify_key.verify(b"payloaD", signature)
    with pytest.raises(BadSignatureError):
        other.verify_key.verify(b"payload", signature)


def test_did_matches_public_key() -> None:
    identity = AgentIdentity.generate()
    assert identity.did == did_from_public_key(identity.public_key)
    assert bytes(identity.verify_key) == identity.public_key
