"""Connect to a secured mesh with an agent's own key and the user JWT its authority issued.

The nkey seed handed to nats-py is the agent's Ed25519 seed spelled as an nkey
(``SU...``); it lives only in memory, next to the identity it came from. The
user JWT is public (it names the key and its permissions, signed by the
authority), so ``--jwt`` files need no protection beyond integrity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from agentmesh.broker.authority import role_of
from agentmesh.broker.errors import MeshSecurityError
from agentmesh.broker.jwt import decode_jwt
from agentmesh.broker.nkeys import KeyRole, encode_seed, user_nkey_for_did
from agentmesh.broker.subject_map import Role, inbox_prefix
from agentmesh.transport.nats import NatsConfig, NkeyAuth
from iatp.identity import AgentIdentity


@dataclass(frozen=True, slots=True)
class BrokerCredentials:
    """An identity and the user JWT that names its key on the broker.

    Raises:
        MeshSecurityError: The JWT names another key than ``identity``'s, or is
            not a valid user JWT.
    """

    identity: AgentIdentity
    user_jwt: str

    def __post_init__(self) -> None:
        try:
            token = decode_jwt(self.user_jwt, kind="user")
        except Exception as exc:
            raise MeshSecurityError(f"not a usable user JWT: {exc}") from None
        if token.subject != user_nkey_for_did(self.identity.did):
            raise MeshSecurityError(
                f"the user JWT was issued for another key, not for {self.identity.did}: "
                "ask the mesh authority for this DID's ('agentmesh mesh add-agent DID')"
            )

    @property
    def role(self) -> Role:
        return role_of(self.user_jwt)

    def nats_config(self, base: NatsConfig | None = None) -> NatsConfig:
        """``base`` (or the defaults) with nkey + JWT auth and the identity's inbox prefix."""
        seed = encode_seed(KeyRole.USER, self.identity.seed())
        return dataclasses.replace(
            base or NatsConfig(),
            nkey=NkeyAuth(seed=seed, user_jwt=self.user_jwt),
            inbox_prefix=inbox_prefix(self.identity.did),
        )


def creds_file(identity: AgentIdentity, user_jwt: str) -> str:
    """A nats ``.creds`` file: the user JWT and the identity's seed as an nkey.

    For a *server* that must present a key on its own (a leaf-node remote's
    ``credentials``); agents never need one. The file holds a secret: write it 0600.
    """
    seed = encode_seed(KeyRole.USER, identity.seed())
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n"
    )


__all__ = ["BrokerCredentials", "creds_file"]
