"""A secured mesh for tests: ``mesh init`` output, a real nats-server running it, credentials.

with SecureMesh.create(tmp_path) as mesh:          # init + server + provision
    alice = mesh.member(Role.AGENT)                  # identity + user JWT
    transport = mesh.transport(alice)                # connected via nkey + JWT
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from agentmesh.broker.authority import AUTHORITY_JWT, MeshAuthority, init_mesh, read_jwt
from agentmesh.broker.config import SERVER_CONFIG_FILE, Limits, MeshSecurityConfig
from agentmesh.broker.credentials import BrokerCredentials
from agentmesh.broker.provision import provision
from agentmesh.broker.subject_map import Role, TopicGrants
from agentmesh.transport.nats import NatsConfig, NatsTransport
from iatp.identity import AgentIdentity
from tests.natsserver import NatsServerProcess

PASSPHRASE = "test-passphrase"


@dataclass(frozen=True, slots=True)
class Member:
    """An identity of the mesh and the user JWT its authority issued."""

    identity: AgentIdentity
    role: Role
    user_jwt: str

    @property
    def did(self) -> str:
        return self.identity.did

    @property
    def key(self) -> str:
        return self.identity.did.removeprefix("did:key:")

    def credentials(self) -> BrokerCredentials:
        return BrokerCredentials(self.identity, self.user_jwt)


class SecureMesh:
    """A mesh made by ``init_mesh`` in ``directory``, served by a real nats-server."""

    def __init__(self, directory: Path, *, mesh: str = "sec", limits: Limits | None = None) -> None:
        self.directory = directory
        self.authority_identity = AgentIdentity.generate()
        self.config: MeshSecurityConfig = init_mesh(
            directory, self.authority_identity, PASSPHRASE, mesh=mesh, limits=limits
        )
        self.powers = MeshAuthority(self.config, self.authority_identity)
        self.authority = Member(
            self.authority_identity, Role.AUTHORITY, read_jwt(directory / AUTHORITY_JWT)
        )
        self.server = NatsServerProcess(
            jetstream=False, config_file=str(directory / SERVER_CONFIG_FILE)
        )
        self._transports: list[NatsTransport] = []

    @property
    def mesh(self) -> str:
        return self.config.mesh

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> Self:
        self.server.start()
        asyncio.run(self._provision())
        return self

    async def astart(self) -> Self:
        """:meth:`start` from inside an event loop."""
        await asyncio.to_thread(self.server.start)
        await self._provision()
        return self

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.aclose_transports()
        finally:
            self.close()

    async def _provision(self) -> None:
        transport = self.build(self.authority, name="provision")
        await transport.connect()
        try:
            await provision(transport, self.powers.subjects)
        finally:
            await transport.aclose()

    def member(
        self,
        role: Role = Role.AGENT,
        *,
        identity: AgentIdentity | None = None,
        topics: TopicGrants | None = None,
        expires_in: float | None = None,
    ) -> Member:
        identity = identity or AgentIdentity.generate()
        token = self.powers.issue_user(identity.did, role, topics=topics, expires_in=expires_in)
        return Member(identity, role, token)

    def build(
        self, member: Member, *, name: str = "t", base: NatsConfig | None = None
    ) -> NatsTransport:
        """A transport (not connected) authenticated as ``member``; closed by :meth:`close`."""
        transport = NatsTransport(
            self.url, name=name, config=member.credentials().nats_config(base)
        )
        self._transports.append(transport)
        return transport

    async def connect(self, member: Member, *, name: str = "t") -> NatsTransport:
        transport = self.build(member, name=name)
        await transport.connect(timeout=5.0)
        return transport

    async def aclose_transports(self) -> None:
        for transport in reversed(self._transports):
            await transport.aclose()
        self._transports.clear()

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["PASSPHRASE", "Member", "SecureMesh"]
