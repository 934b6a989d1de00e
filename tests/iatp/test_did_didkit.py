"""iatp's own did:key derivation must agree with didkit, the reference implementation."""

from __future__ import annotations

import os

from agentmesh.didkit_bridge import didkit_did_for, didkit_resolve_public_key
from iatp.did import did_from_public_key, public_key_from_did
from iatp.identity import AgentIdentity


def test_did_from_public_key_equals_didkit_for_200_random_keys() -> None:
    for _ in range(200):
        identity = AgentIdentity.from_seed(os.urandom(32))
        assert did_from_public_key(identity.public_key) == didkit_did_for(identity)
        assert identity.did == didkit_did_for(identity)


def test_did_from_public_key_equals_didkit_for_edge_case_keys() -> None:
    # Seeds whose public keys we do not choose, plus the RFC 8032 key.
    seeds = [b"\x00" * 32, b"\xff" * 32, bytes(range(32))]
    seeds.append(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    for seed in seeds:
        identity = AgentIdentity.from_seed(seed)
        assert identity.did == didkit_did_for(identity)


async def test_didkit_resolves_iatp_dids_to_the_same_public_key() -> None:
    for _ in range(20):
        identity = AgentIdentity.generate()
        resolved = await didkit_resolve_public_key(identity.did)
        assert resolved == identity.public_key
        assert resolved == public_key_from_did(identity.did)
