"""The authority's connections to its secured mesh: the mesh account and the system account."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from agentmesh.broker.authority import (
    AUTHORITY_JWT,
    AUTHORITY_SYSTEM_JWT,
    MeshAuthority,
    read_jwt,
)
from agentmesh.broker.config import MeshSecurityConfig
from agentmesh.broker.credentials import BrokerCredentials
from agentmesh.broker.revocation_sync import broker_revocations, push_account_jwt
from agentmesh.directory.revocations import RevocationList
from agentmesh.transport.nats import NatsTransport
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities


@dataclass(slots=True)
class AuthoritySession:
    """The authority, connected: ``mesh`` to the mesh account, ``system`` to the system account."""

    powers: MeshAuthority
    mesh: NatsTransport
    system: NatsTransport

    journal: Path | None = None

    def revocation_list(self) -> RevocationList:
        """The mesh's revocation list, trusting this authority (not started).

        What it issues goes to the mesh directory's journal too.
        """
        return RevocationList(
            self.mesh,
            mesh=self.powers.config.mesh,
            authorities=RevocationAuthorities(mesh=frozenset({self.powers.identity.did})),
            node=self.powers.identity.did,
            journal=self.journal,
        )


@contextlib.asynccontextmanager
async def authority_session(
    directory: str | Path,
    identity: AgentIdentity,
    *,
    url: str | None = None,
    timeout: float = 5.0,
) -> AsyncIterator[AuthoritySession]:
    """Connect as the mesh authority of the mesh in ``directory``.

    Raises:
        MeshSecurityError: The directory is not a mesh, or ``identity`` is not its authority.
        AuthenticationFailed: The server does not run this mesh's configuration.
        NotConnected: The server is unreachable.
    """
    base = Path(directory)
    config = MeshSecurityConfig.load(base)
    powers = MeshAuthority(config, identity, directory=base)
    server = url or config.url
    mesh_credentials = BrokerCredentials(identity, read_jwt(base / AUTHORITY_JWT))
    system_credentials = BrokerCredentials(identity, read_jwt(base / AUTHORITY_SYSTEM_JWT))
    mesh = NatsTransport(server, name="authority", config=mesh_credentials.nats_config())
    system = NatsTransport(server, name="authority-system", config=system_credentials.nats_config())
    try:
        await mesh.connect(timeout=timeout)
        await system.connect(timeout=timeout)
        yield AuthoritySession(powers, mesh, system, base / "revocations.journal.jsonl")
    finally:
        await system.aclose()
        await mesh.aclose()


async def push_revocations(
    directory: str | Path,
    identity: AgentIdentity,
    revocations: RevocationList,
    *,
    url: str | None = None,
    timeout: float = 5.0,
) -> dict[str, int]:
    """Re-issue the account JWT from ``revocations`` and push it once; returns what it revokes.

    Raises:
        MeshSecurityError: ``identity`` is not the mesh's authority.
        ClaimsUpdateFailed: The server refused the account JWT.
        TransportError: The system account could not be reached.
    """
    base = Path(directory)
    config = MeshSecurityConfig.load(base)
    powers = MeshAuthority(config, identity, directory=base)
    credentials = BrokerCredentials(identity, read_jwt(base / AUTHORITY_SYSTEM_JWT))
    system = NatsTransport(
        url or config.url, name="authority-system", config=credentials.nats_config()
    )
    async with system:
        wanted = broker_revocations(revocations)
        await push_account_jwt(system, powers.account_jwt(wanted), timeout=timeout)
    return wanted


__all__ = ["AuthoritySession", "authority_session", "push_revocations"]
