"""After a server of a 3-server cluster is killed and restarted, every node agrees.

One member (directory, revocation list and trust service over its own transport)
is pinned to each server. Some cards and receipts are stored first; then one
server is killed (kill -9) and, while it is down, cards are registered, updated
and withdrawn, the mesh authority revokes, quarantines and releases agents, and
more signed receipts are published, through every member (the one whose server
died has failed over by then). The server is restarted (same port, same store)
and a fresh member starts on each server, the restarted one included. All six
must see exactly the cards, revocation statuses and directory answers the writes
imply, and their trust engines must agree bit for bit (they fold the same
receipt stream in the same order, as in the cross-process trust test).

Two variants: the killed server leads none of the mesh's streams (writes go on
during the outage), or it leads all of them (writes are refused until new leaders
are elected, so the writers retry, as a caller would).

Two narrower tests pin down what the outage does on the way: a revocation must
reach a node promptly even when the server that fed the node's watch died (its
own server being up), and an ``issue`` retried through an election must be
logged once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import pytest

from agentmesh.directory import Directory, RevocationList, bucket_name
from agentmesh.errors import TransportError
from agentmesh.node.addressing import MeshAddressing
from agentmesh.transport.nats import NatsTransport
from agentmesh.trustnet import MeshTrust
from iatp.identity import AgentIdentity
from registry.card import Capability
from registry.errors import RevocationError
from registry.revocation import (
    RevocationAuthorities,
    RevocationEntry,
    RevocationKind,
    sign_revocation,
)
from tests.agentmesh.trustnet.trust_peer import (
    PRE_TRUSTED,
    RECOMPUTE_EVERY,
    T0,
    result,
    world_receipts,
)
from tests.natscluster import NatsCluster

pytestmark = pytest.mark.nats

AUTHORITY = AgentIdentity.from_seed(b"H" * 32)
AUTHORITIES = RevocationAuthorities(mesh=frozenset({AUTHORITY.did}))
SEARCH = Capability(name="search", version="1", description="web search")
SUMMARIZE = Capability(name="summarize", version="1", description="summaries")
CARD_TTL_MS = 600_000  # no card expires during the test
AT_MS = T0 + 60_000  # when every engine is evaluated (after every receipt)
VICTIM = 2  # s3 is killed and restarted
AGREE_WITHIN = 20.0  # a watch fed by the killed server is silent for ~20 s (see the last test)
# Seconds a revocation may take to reach a node whose server is up but whose watch
# the dead server fed: two missed 1 s heartbeats, then a new consumer (20 s before
# the heartbeat was lowered from nats-py's 5 s; measured 6-8 s; the node fails closed meanwhile).
PROMPT = 12.0
_T = TypeVar("_T")


@dataclass
class Member:
    """One node's view of the mesh: directory, revocation list and trust, on one transport."""

    name: str
    transport: NatsTransport
    revocations: RevocationList
    directory: Directory
    trust: MeshTrust

    async def aclose(self) -> None:
        await self.trust.aclose()
        await self.directory.aclose()
        await self.revocations.aclose()
        await self.transport.aclose()


class Members:
    """Members started by a test, closed after it."""

    def __init__(self, cluster: NatsCluster, mesh: str) -> None:
        self.cluster = cluster
        self.mesh = mesh
        self.all: list[Member] = []
        self.start_failures: list[str] = []

    async def join(self, server: int, name: str) -> Member:
        """A member on ``server``, started; a start that failed closed is retried once more.

        Right after a server restarted, a node starting on it may read the stores
        from a replica that has not caught up yet (see ``start_failures``): the
        revocation list then refuses to start (its log looks truncated), and the
        node's supervisor starts it again, as here.
        """
        for attempt in range(3):
            member = await self._start(server, name)
            try:
                await member.revocations.start()
                await member.directory.start()
                await member.trust.start()
            except (TransportError, RevocationError) as exc:
                self.start_failures.append(f"{name} on s{server + 1}: {exc!r}")
                await member.aclose()
                assert attempt < 2, f"{name} could not start: {self.start_failures}"
                await asyncio.sleep(0.2)
                continue
            self.all.append(member)
            return member
        raise AssertionError("unreachable")

    async def _start(self, server: int, name: str) -> Member:
        transport = NatsTransport(self.cluster.url(server), name=name)
        await transport.connect()
        assert transport.server_url == self.cluster.url(server)
        revocations = RevocationList(transport, mesh=self.mesh, authorities=AUTHORITIES, node=name)
        directory = Directory(transport, mesh=self.mesh, revocations=revocations, node=name)
        trust = MeshTrust(
            transport,
            AgentIdentity.generate(),
            mesh=self.mesh,
            pre_trusted=PRE_TRUSTED,
            # Deterministic recomputes only (every K folded receipts, at receipt
            # time): every member passes through the same engine states.
            recompute_interval=None,
            recompute_every=RECOMPUTE_EVERY,
        )
        return Member(name, transport, revocations, directory, trust)

    async def aclose(self) -> None:
        for member in reversed(self.all):
            await member.aclose()


@pytest.fixture
async def members(cluster: NatsCluster, uid: str) -> AsyncIterator[Members]:
    made = Members(cluster, uid)
    try:
        yield made
    finally:
        await made.aclose()


async def retrying(write: Callable[[], Awaitable[_T]], refused: list[str], what: str) -> _T:
    """``write()``, again while the store is electing a leader (as a caller would)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        try:
            return await write()
        except TransportError as exc:
            refused.append(f"{what}: {exc.code}")
            assert loop.time() < deadline, f"{what} refused for 20 s: {refused[-3:]}"
            await asyncio.sleep(0.2)


async def leader(transport: NatsTransport, stream: str) -> str | None:
    info = await asyncio.wait_for(transport.js.stream_info(stream), 2.0)
    return info.cluster.leader if info.cluster is not None else None


async def lead_from(transport: NatsTransport, stream: str, server: str) -> None:
    """Move the JetStream leader of ``stream`` to ``server`` (a preferred stepdown)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while (now := await leader(transport, stream)) != server:
        assert loop.time() < deadline, f"{stream} still led by {now}, not {server}"
        if now is not None:
            await transport.request(
                f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}",
                json.dumps({"placement": {"preferred": server}}).encode(),
                timeout=2.0,
            )
        await asyncio.sleep(0.05)


async def mesh_streams(transport: NatsTransport, mesh: str) -> list[str]:
    """Every stream of the mesh: card, rotation, pin, revocation buckets, receipts."""
    infos = await transport.js.streams_info()
    names = sorted(
        info.config.name for info in infos if info.config.name and mesh in info.config.name
    )
    assert len(names) == 6, names  # 5 buckets and the receipt stream
    return names


def view(member: Member, subjects: list[str]) -> dict[str, Any]:
    """What the member's directory and revocation list say (local reads)."""
    directory, revocations = member.directory, member.revocations
    return {
        "cards": {card.did: card.encode().hex() for card in directory.cards()},
        "search": sorted(card.did for card in directory.find("search")),
        "summarize": sorted(card.did for card in directory.find("summarize")),
        "status": {did: getattr(revocations.status(did), "value", None) for did in subjects},
        "listed": {did: kind.value for did, kind in revocations.listed().items()},
        "incomplete": dict(revocations.incomplete),
    }


async def agree(
    members: list[Member], subjects: list[str], expected: dict[str, Any], timeout: float
) -> None:
    """Until every member's view is ``expected``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        views = {m.name: view(m, subjects) for m in members}
        wrong = {
            name: {k: v for k, v in seen.items() if v != expected[k]}
            for name, seen in views.items()
            if seen != expected
        }
        if not wrong:
            return
        if loop.time() > deadline:
            raise AssertionError(f"after {timeout}s, members differ from {expected}: {wrong}")
        await asyncio.sleep(0.05)


async def folded(members: list[Member], count: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not all(m.trust.ledger.folded >= count for m in members):
        if loop.time() > deadline:
            counts = {m.name: m.trust.ledger.folded for m in members}
            raise AssertionError(f"receipts folded after {timeout}s (of {count}): {counts}")
        await asyncio.sleep(0.05)


async def heal(cluster: NatsCluster, members: Members, *, victim_leads: bool) -> list[str]:
    """The whole scenario; returns the writes refused while a store had no leader."""
    refused: list[str] = []
    victim_url = cluster.url(VICTIM)
    on = [await members.join(i, f"m{i}") for i in range(3)]
    leaders_on = VICTIM if victim_leads else 0
    for stream in await mesh_streams(on[0].transport, members.mesh):
        await lead_from(on[0].transport, stream, f"s{leaders_on + 1}")

    agents = [AgentIdentity.generate() for _ in range(8)]
    receipts = world_receipts()
    early, late = receipts[: len(receipts) // 2], receipts[len(receipts) // 2 :]

    cards: dict[str, str] = {}  # the card each agent stored last, as signed

    async def register(member: Member, agent: AgentIdentity, *caps: Capability) -> None:
        card = await retrying(
            lambda: member.directory.register(
                agent, display_name=f"agent-{agent.did[-6:]}", capabilities=caps, ttl_ms=CARD_TTL_MS
            ),
            refused,
            f"register via {member.name}",
        )
        cards[agent.did] = card.encode().hex()

    # Before the outage: six cards (two per member) and half of the receipts.
    for k in range(6):
        await register(on[k % 3], agents[k], SEARCH)
    for k, receipt in enumerate(early):
        await on[k % 3].trust.ledger.publish(receipt)

    cluster.kill(VICTIM)
    # The member whose server died fails over before it writes again.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not (on[VICTIM].transport.is_connected and on[VICTIM].transport.server_url != victim_url):
        assert loop.time() < deadline, "the member of the killed server did not fail over"
        await asyncio.sleep(0.05)

    def revoke(kind: RevocationKind, agent: AgentIdentity, sequence: int) -> RevocationEntry:
        return sign_revocation(
            AUTHORITY,
            subject=agent.did,
            kind=kind,
            reason="heal test",
            issued_at_ms=1_000 + sequence,
            sequence=sequence,
        )

    # While it is down: withdraw, update, register; revoke, quarantine, release; receipts.
    await retrying(lambda: on[0].directory.deregister(agents[0]), refused, "deregister via m0")
    del cards[agents[0].did]
    await register(on[1], agents[1], SEARCH, SUMMARIZE)  # an update of agents[1]'s card
    await register(on[2], agents[6], SEARCH)
    await register(on[1], agents[7], SUMMARIZE)
    # The authority's process is the member that failed over.
    for sequence, (kind, agent) in enumerate(
        [
            (RevocationKind.REVOKED, agents[2]),
            (RevocationKind.QUARANTINED, agents[3]),
            (RevocationKind.QUARANTINED, agents[4]),
            (RevocationKind.RELEASED, agents[4]),
        ],
        start=1,
    ):
        entry = revoke(kind, agent, sequence)
        await retrying(
            partial(on[VICTIM].revocations.issue, entry, signer=AUTHORITY),
            refused,
            "issue",
        )
    for k, receipt in enumerate(late):
        member = on[(k + 1) % 3]
        await retrying(partial(member.trust.ledger.publish, receipt), refused, "publish receipt")

    cluster.restart(VICTIM)
    fresh = [await members.join(i, f"fresh{i}") for i in range(3)]
    everyone = on + fresh

    expected = {
        "cards": cards,
        "search": sorted(a.did for a in (agents[1], agents[4], agents[5], agents[6])),
        "summarize": sorted(a.did for a in (agents[1], agents[7])),
        "status": {
            agents[0].did: None,
            agents[2].did: "revoked",
            agents[3].did: "quarantined",
            agents[4].did: "released",
        },
        "listed": {
            agents[2].did: "revoked",
            agents[3].did: "quarantined",
            agents[4].did: "released",
        },
        "incomplete": {},
    }
    assert sorted(cards) == sorted(agents[k].did for k in range(1, 8))
    subjects = [agents[0].did, agents[2].did, agents[3].did, agents[4].did]
    await agree(everyone, subjects, expected, AGREE_WITHIN)

    await folded(everyone, len(receipts), AGREE_WITHIN)
    results = {m.name: result(m.trust, AT_MS) for m in everyone}
    reference = results["m0"]
    assert reference["folded"] == len(receipts)
    assert reference["refused"] == {}
    differ = {name: r for name, r in results.items() if r != reference}
    assert differ == {}, f"trust differs from m0's {reference}"
    return refused


async def test_every_node_agrees_after_a_follower_server_is_killed_and_restarted(
    cluster: NatsCluster, members: Members
) -> None:
    refused = await heal(cluster, members, victim_leads=False)
    assert refused == []  # no store lost its leader: nothing was refused


async def test_every_node_agrees_after_the_leading_server_is_killed_and_restarted(
    cluster: NatsCluster, members: Members
) -> None:
    refused = await heal(cluster, members, victim_leads=True)
    assert refused  # the writers did meet the elections


async def test_a_revocation_reaches_a_node_whose_watch_the_dead_server_served(
    cluster: NatsCluster, uid: str
) -> None:
    """The node's own server stays up; the server that fed its revocation watch dies.

    A KV watch is an ephemeral JetStream consumer, which the cluster may place on
    any server holding the bucket, not the one the client is connected to. The
    node's connection survives the kill, and the revocation must still reach it
    promptly: the stores keep their leader (s1), nothing is being elected.
    """
    mesh = MeshAddressing(uid).mesh
    entries_stream = f"KV_{bucket_name(mesh, 'revocations')}"
    made: list[RevocationList] = []
    transports: list[NatsTransport] = []

    async def connect(name: str) -> NatsTransport:
        transport = NatsTransport(cluster.url(0), name=name)
        await transport.connect()
        transports.append(transport)
        return transport

    async def watch_consumers(transport: NatsTransport) -> dict[str, str | None]:
        infos = await transport.js.consumers_info(entries_stream)
        return {
            info.name: info.cluster.leader if info.cluster is not None else None
            for info in infos
            if info.push_bound and info.name
        }

    async def new_watch(transport: NatsTransport, before: dict[str, str | None]) -> str | None:
        """The server of the one watch consumer not in ``before`` (listed once bound)."""
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            now = await watch_consumers(transport)
            new = [server for name, server in now.items() if name not in before]
            if len(new) == 1:
                return new[0]
            assert asyncio.get_running_loop().time() < deadline, f"watch consumers: {now}"
            await asyncio.sleep(0.05)

    try:
        issuer_transport = await connect("authority")
        issuer = RevocationList(issuer_transport, mesh=uid, authorities=AUTHORITIES)
        made.append(issuer)
        await issuer.start()
        for what in ("revocations", "revocation_heads"):
            await lead_from(issuer_transport, f"KV_{bucket_name(mesh, what)}", "s1")
        # A watcher on s1 whose watch another server serves (placement is the cluster's).
        feeding = None
        for attempt in range(12):
            before = await watch_consumers(issuer_transport)
            watcher = RevocationList(
                await connect(f"watcher{attempt}"), mesh=uid, authorities=AUTHORITIES
            )
            made.append(watcher)
            await watcher.start()
            feeding = await new_watch(issuer_transport, before)
            if feeding not in (None, "s1"):
                break
            await watcher.aclose()
        assert feeding is not None
        assert feeding != "s1", "every watch was placed on s1"
        victim = AgentIdentity.generate()
        cluster.kill(cluster.index_of(feeding))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await issuer.issue(
            sign_revocation(
                AUTHORITY,
                subject=victim.did,
                kind=RevocationKind.REVOKED,
                reason="heal test",
                issued_at_ms=1_000,
                sequence=1,
            ),
            signer=AUTHORITY,
        )
        failed_closed = False
        while watcher.status(victim.did) is not RevocationKind.REVOKED:
            failed_closed = failed_closed or bool(watcher.incomplete)
            assert loop.time() - started < 30, "the revocation never reached the watcher"
            await asyncio.sleep(0.02)
        took = loop.time() - started
        assert took < PROMPT, (
            f"the revocation reached the watcher after {took:.1f}s, its watch having been "
            f"served by the killed {feeding} (failed closed meanwhile: {failed_closed})"
        )
    finally:
        for revocations in reversed(made):
            await revocations.aclose()
        for transport in reversed(transports):
            await transport.aclose()


async def test_a_revocation_retried_through_an_election_is_logged_once(
    cluster: NatsCluster, uid: str
) -> None:
    """The heads bucket is electing a leader when the authority issues: it retries.

    The entry's own bucket keeps its leader, so the entry is stored at once and
    only the signed head is refused; retrying the refused ``issue`` (what a caller
    does with a ``TransportError``) must not store the entry a second time.
    """
    mesh = MeshAddressing(uid).mesh
    transports: list[NatsTransport] = []
    made: list[RevocationList] = []
    try:
        for server in (0, 2):
            transport = NatsTransport(cluster.url(server), name=f"n{server}")
            await transport.connect()
            transports.append(transport)
        issuer = RevocationList(transports[0], mesh=uid, authorities=AUTHORITIES)
        made.append(issuer)
        await issuer.start()
        await lead_from(transports[0], f"KV_{bucket_name(mesh, 'revocations')}", "s1")
        await lead_from(transports[0], f"KV_{bucket_name(mesh, 'revocation_heads')}", "s2")
        cluster.kill(1)
        victim = AgentIdentity.generate()
        entry = sign_revocation(
            AUTHORITY,
            subject=victim.did,
            kind=RevocationKind.REVOKED,
            reason="heal test",
            issued_at_ms=1_000,
            sequence=1,
        )
        refused: list[str] = []
        await retrying(partial(issuer.issue, entry, signer=AUTHORITY), refused, "issue")
        assert refused, "the head was not refused: no election met"
        for attempt in range(3):  # a start during the election fails closed; start again
            reader = RevocationList(transports[1], mesh=uid, authorities=AUTHORITIES)
            made.append(reader)
            try:
                await reader.start()
                break
            except TransportError:
                assert attempt < 2, "the reader could not start three times"
        assert reader.status(victim.did) is RevocationKind.REVOKED
        stored = reader.log.log(AUTHORITY.did).entries
        assert len(stored) == 1, (
            f"one revocation, retried {len(refused)} times, is in the log {len(stored)} times"
        )
    finally:
        for revocations in reversed(made):
            await revocations.aclose()
        for transport in reversed(transports):
            await transport.aclose()
