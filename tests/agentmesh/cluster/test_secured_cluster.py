"""A secured mesh on a 3-server cluster: every server enforces the agents' own keys.

The servers run what ``agentmesh mesh cluster-init --mesh-dir`` writes from the
mesh's ``nats-server.conf``: operator mode, the same accounts, limits and JWTs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentmesh.broker.authority import AUTHORITY_JWT, MeshAuthority, init_mesh, read_jwt
from agentmesh.broker.config import SERVER_CONFIG_FILE, Limits, MiB
from agentmesh.broker.provision import provision
from agentmesh.broker.revocation_sync import BrokerRevoker
from agentmesh.broker.session import authority_session
from agentmesh.broker.subject_map import Role
from agentmesh.errors import AuthenticationFailed
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.transport.base import TransportState
from agentmesh.transport.nats import NatsTransport
from iatp.identity import AgentIdentity
from registry.revocation import RevocationKind, sign_revocation
from tests.agentmesh.broker.securemesh import PASSPHRASE, Member
from tests.natscluster import NatsCluster

pytestmark = pytest.mark.nats


@dataclass
class SecuredCluster:
    directory: Path
    powers: MeshAuthority
    authority: Member
    cluster: NatsCluster

    @property
    def mesh(self) -> str:
        return self.powers.config.mesh

    def member(self) -> Member:
        identity = AgentIdentity.generate()
        return Member(identity, Role.AGENT, self.powers.issue_user(identity.did, Role.AGENT))


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredCluster]:
    directory = tmp_path_factory.mktemp("secured-mesh")
    identity = AgentIdentity.generate()
    # Three replicas of every store count three times against the account's disk.
    limits = Limits(store_bytes=64 * MiB)
    config = init_mesh(directory, identity, PASSPHRASE, mesh="secl", limits=limits)
    authority = Member(identity, Role.AUTHORITY, read_jwt(directory / AUTHORITY_JWT))
    cluster = NatsCluster(secured=(directory / SERVER_CONFIG_FILE).read_text())
    with cluster:
        made = SecuredCluster(directory, MeshAuthority(config, identity), authority, cluster)

        async def provision_stores() -> None:
            transport = NatsTransport(
                cluster.urls, name="provision", config=authority.credentials().nats_config()
            )
            await transport.connect()
            try:
                await provision(transport, made.powers.subjects)
            finally:
                await transport.aclose()

        asyncio.run(provision_stores())
        yield made


@pytest.fixture
async def connections() -> AsyncIterator[list[NatsTransport]]:
    made: list[NatsTransport] = []
    try:
        yield made
    finally:
        for transport in reversed(made):
            await transport.aclose()


async def connect(
    made: list[NatsTransport], member: Member, url: str, name: str = "t"
) -> NatsTransport:
    transport = NatsTransport(url, name=name, config=member.credentials().nats_config())
    made.append(transport)
    await transport.connect(timeout=5.0)
    return transport


async def test_every_server_refuses_a_client_without_a_key(secured: SecuredCluster) -> None:
    for index in range(3):
        stranger = NatsTransport(secured.cluster.url(index), name="stranger")
        with pytest.raises(AuthenticationFailed):
            await stranger.connect(timeout=3.0)
        await stranger.aclose()


async def test_agents_on_different_servers_talk_over_replicated_stores(
    secured: SecuredCluster, connections: list[NatsTransport]
) -> None:
    alice, bob = secured.member(), secured.member()
    on_s1 = await connect(connections, alice, secured.cluster.url(0), "alice")
    on_s3 = await connect(connections, bob, secured.cluster.url(2), "bob")
    config = NodeConfig(mesh=secured.mesh)
    async with (
        MeshNode(alice.identity, on_s1, config=config) as a,
        MeshNode(bob.identity, on_s3, config=config) as b,
    ):

        async def echo(message: object) -> bytes:
            return b"ok"

        b.handle("echo", echo)
        assert (await a.request(b.did, "echo", b"x", timeout=5.0)).body == b"ok"
    admin = await connect(connections, secured.authority, secured.cluster.urls, "admin")
    streams = await admin.js.streams_info()
    assert len(streams) >= 5  # the provisioned buckets and streams
    assert {info.config.name: info.config.num_replicas for info in streams} == {
        info.config.name: 3 for info in streams
    }


async def test_a_revocation_pushed_through_one_server_disconnects_the_agent_on_another(
    secured: SecuredCluster, connections: list[NatsTransport]
) -> None:
    victim = secured.member()
    connection = await connect(connections, victim, secured.cluster.url(2), "victim")
    async with authority_session(
        secured.directory, secured.authority.identity, url=secured.cluster.url(0)
    ) as session:
        revocations = session.revocation_list()
        async with revocations:
            revoker = BrokerRevoker(session.powers, session.system, revocations)
            await revocations.issue(
                sign_revocation(
                    secured.authority.identity,
                    subject=victim.did,
                    kind=RevocationKind.REVOKED,
                    reason="revoked",
                    issued_at_ms=int(time.time() * 1000),
                    sequence=0,
                )
            )
            assert await revoker.sync()
            started = time.monotonic()
            while connection.state is not TransportState.CLOSED:
                assert time.monotonic() - started < 3.0, "the agent on s3 is still connected"
                await asyncio.sleep(0.01)
    for index in (1, 2):  # nor can it come back through another server
        again = NatsTransport(
            secured.cluster.url(index), name="again", config=victim.credentials().nats_config()
        )
        with pytest.raises(AuthenticationFailed):
            await again.connect(timeout=3.0)
        await again.aclose()
