"""The mesh on a real 3-server nats-server cluster: replicas, failover, revocations, writes.

Every server runs the config ``agentmesh mesh cluster-init`` writes (sync_interval
always). Each test that kills a server leaves it to the autouse fixture to restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agentmesh.directory import RevocationInterceptor, RevocationList
from agentmesh.directory.watcher import bucket_name
from agentmesh.errors import NoResponders, RemoteError, RequestTimeout, StreamError, TransportError
from agentmesh.node.addressing import MeshAddressing
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import Stage
from agentmesh.node.node import MeshNode
from agentmesh.transport.nats import NatsConfig, NatsTransport
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities, RevocationKind, sign_revocation
from tests.natscluster import NatsCluster
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

AUTHORITY = AgentIdentity.from_seed(b"C" * 32)
AUTHORITIES = RevocationAuthorities(mesh=frozenset({AUTHORITY.did}))


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[NatsTransport]]]:
    made: list[NatsTransport] = []

    async def make(
        servers: str, name: str = "t", config: NatsConfig | None = None
    ) -> NatsTransport:
        transport = NatsTransport(servers, name=name, config=config)
        await transport.connect()
        made.append(transport)
        return transport

    try:
        yield make
    finally:
        for transport in reversed(made):
            await transport.aclose()


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> float:
    """Seconds until ``predicate`` holds; fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not predicate():
        if loop.time() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
    return loop.time() - started


async def leader_of(transport: NatsTransport, stream: str, cluster: NatsCluster) -> int:
    """Index of the server leading ``stream``, waiting out an election (up to 30 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        try:
            info = await asyncio.wait_for(transport.js.stream_info(stream), 1.0)
            if info.cluster is not None and info.cluster.leader:
                index = cluster.index_of(info.cluster.leader)
                if cluster.servers[index].running:
                    return index
        except Exception:
            pass
        assert loop.time() < deadline, f"{stream} has no leader after 30 s"
        await asyncio.sleep(0.1)


async def echo(message: object) -> bytes:
    return b"ok"


async def test_buckets_and_streams_get_three_replicas_on_a_cluster_and_one_alone(
    cluster: NatsCluster,
    nats_server: NatsServerProcess,
    connect: Callable[..., Awaitable[NatsTransport]],
    uid: str,
) -> None:
    on_cluster = await connect(cluster.urls)
    assert on_cluster.cluster_size == 3
    assert on_cluster.replicas == 3
    await on_cluster.key_value(f"rep-{uid}")
    await on_cluster.stream(f"REP_{uid}", [f"rep.{uid}.>"])
    for name in (f"KV_rep-{uid}", f"REP_{uid}"):
        info = await on_cluster.js.stream_info(name)
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2
    pinned = await connect(cluster.url(1), config=NatsConfig(replicas=1))
    await pinned.key_value(f"one-{uid}")
    assert (await pinned.js.stream_info(f"KV_one-{uid}")).config.num_replicas == 1
    alone = await connect(nats_server.url)
    assert alone.cluster_size == 1
    assert alone.replicas == 1
    await alone.key_value(f"alone-{uid}")
    assert (await alone.js.stream_info(f"KV_alone-{uid}")).config.num_replicas == 1


def test_replicas_outside_jetstreams_range_are_refused() -> None:
    with pytest.raises(ValueError, match=r"replicas must be within 1\.\.5"):
        NatsConfig(replicas=0)
    with pytest.raises(ValueError, match=r"replicas must be within 1\.\.5"):
        NatsConfig(replicas=7)


async def test_a_node_keeps_working_through_another_server_when_its_own_is_killed(
    cluster: NatsCluster, connect: Callable[..., Awaitable[NatsTransport]], uid: str
) -> None:
    alice_transport = await connect(cluster.urls, "alice")
    on = alice_transport.server_url
    assert on is not None
    killed = [cluster.url(i) for i in range(3)].index(on)
    bob_transport = await connect(cluster.url((killed + 1) % 3), "bob")
    config = NodeConfig(mesh=uid)
    async with (
        MeshNode(AgentIdentity.generate(), alice_transport, config=config) as alice,
        MeshNode(AgentIdentity.generate(), bob_transport, config=config) as bob,
    ):
        bob.handle("echo", echo)
        assert (await alice.request(bob.did, "echo", b"x")).body == b"ok"
        cluster.kill(killed)
        answered: list[bytes] = []

        async def ask() -> None:
            while not answered:
                try:
                    answered.append((await alice.request(bob.did, "echo", b"x", timeout=1.0)).body)
                except (TransportError, RemoteError, TimeoutError):
                    await asyncio.sleep(0.1)

        await asyncio.wait_for(ask(), timeout=20)
        assert answered == [b"ok"]
        assert alice_transport.server_url not in (None, on)


async def test_a_revocation_issued_just_before_its_leader_dies_is_enforced_everywhere(
    cluster: NatsCluster, connect: Callable[..., Awaitable[NatsTransport]], uid: str
) -> None:
    lists = []
    for i in range(3):
        revocations = RevocationList(
            await connect(cluster.url(i), f"n{i}"), mesh=uid, authorities=AUTHORITIES
        )
        await revocations.start()
        lists.append(revocations)
    victim = AgentIdentity.generate()
    try:
        issuer = lists[0]
        stream = f"KV_{bucket_name(MeshAddressing(uid).mesh, 'revocations')}"
        leader = await leader_of(await connect(cluster.urls, "probe"), stream, cluster)
        entry = sign_revocation(
            AUTHORITY,
            subject=victim.did,
            kind=RevocationKind.REVOKED,
            reason="test",
            issued_at_ms=1_000,
            sequence=1,
        )
        await issuer.issue(entry)  # acknowledged by a majority, fsynced
        cluster.kill(leader)
        survivors = [lists[i] for i in range(3) if i != leader]
        await until(
            lambda: all(rl.status(victim.did) is RevocationKind.REVOKED for rl in survivors)
        )
        # The list whose server died fails over and gets the revocation: its watch may
        # not have delivered it before the kill, so it arrives after the reconnect.
        await until(lambda: lists[leader].status(victim.did) is RevocationKind.REVOKED)
        # A node that starts after the leader died reads it from the new leader (a
        # node starting during the election fails to start: its supervisor retries).
        fresh_transport = await connect(cluster.url((leader + 1) % 3), "fresh")
        await leader_of(fresh_transport, stream, cluster)
        for attempt in range(3):  # as a supervisor would: a start that failed closed is retried
            fresh = RevocationList(fresh_transport, mesh=uid, authorities=AUTHORITIES)
            try:
                await fresh.start(timeout=5.0)
                break
            except TransportError:
                assert attempt < 2, "the fresh list could not start three times"
        try:
            assert fresh.status(victim.did) is RevocationKind.REVOKED
            # ... and its node refuses the revoked agent's messages.
            helper_transport = await connect(cluster.url((leader + 2) % 3), "victim")
            config = NodeConfig(mesh=uid)
            async with (
                MeshNode(AgentIdentity.generate(), fresh_transport, config=config) as guard,
                MeshNode(victim, helper_transport, config=config) as rogue,
            ):
                guard.add_interceptor(RevocationInterceptor(fresh), stage=Stage.REVOCATION)
                guard.handle("echo", echo)
                with pytest.raises(RemoteError) as refused:
                    await rogue.request(guard.did, "echo", b"x", timeout=5.0)
                assert refused.value.remote_code == "revoked"
        finally:
            await fresh.aclose()
    finally:
        for revocations in lists:
            await revocations.aclose()


async def test_acknowledged_writes_survive_leader_kills(
    cluster: NatsCluster, connect: Callable[..., Awaitable[NatsTransport]], uid: str
) -> None:
    """Append while the stream's leader is killed twice; every acknowledged write is kept."""
    writer = await connect(cluster.urls, "writer")
    stream = await writer.stream(f"ACK_{uid}", [f"ack.{uid}"])
    acknowledged: set[bytes] = set()
    refused = 0

    async def write(count: int) -> None:
        nonlocal refused
        for n in range(count):
            body = f"{len(acknowledged)}-{n}".encode()
            try:
                await stream.append(f"ack.{uid}", body, msg_id=body.decode(), timeout=1.0)
                acknowledged.add(body)
            except TransportError:
                refused += 1  # not acknowledged: the writer would retry
                await asyncio.sleep(0.05)

    for _ in range(2):
        await write(50)
        leader = await leader_of(writer, f"ACK_{uid}", cluster)
        cluster.kill(leader)
        await write(50)
        cluster.restart(leader)
    await write(50)
    reader = await connect(cluster.url(0), "reader")
    stored = await reader.stream(f"ACK_{uid}", [f"ack.{uid}"])
    kept: set[bytes] = set()
    last = await stored.last_seq(timeout=10.0)

    async def read_all() -> None:
        async for message in stored.read(start_seq=1):
            kept.add(message.data)
            if message.seq >= last:
                return

    await asyncio.wait_for(read_all(), timeout=15)
    lost = acknowledged - kept
    assert lost == set(), f"{len(lost)} acknowledged writes lost ({refused} refused while electing)"
    assert len(acknowledged) >= 50  # the phases with a leader were acknowledged


async def test_a_write_refused_during_an_election_is_retried_exactly_once(
    cluster: NatsCluster, connect: Callable[..., Awaitable[NatsTransport]], uid: str
) -> None:
    """Unacknowledged during the election; retried under its message id, stored once."""
    writer = await connect(cluster.urls, "writer")
    stream = await writer.stream(f"ELECT_{uid}", [f"elect.{uid}"])
    await stream.append(f"elect.{uid}", b"before", msg_id="before", timeout=2.0)
    cluster.kill(await leader_of(writer, f"ELECT_{uid}", cluster))
    with pytest.raises((StreamError, RequestTimeout)):
        await stream.append(f"elect.{uid}", b"during", msg_id="during", timeout=0.5)
    attempts = 1
    while True:
        attempts += 1
        try:
            ack = await stream.append(f"elect.{uid}", b"during", msg_id="during", timeout=1.0)
            break
        except (StreamError, RequestTimeout, NoResponders):
            assert attempts < 60, "no leader elected within a minute"
            await asyncio.sleep(0.2)
    assert ack.seq == 2  # the refused attempt was not stored beside the retry
    assert await stream.last_seq(timeout=5.0) == 2
