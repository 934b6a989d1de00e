"""Prometheus metrics of a node: real nodes on the in-memory transport, read at scrape time.

The cross-process test (``agentmesh node run --metrics-port`` scraped over HTTP
while a peer process sends requests over a real nats-server) is in
``test_metrics_processes.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from random import Random

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from agentmesh.directory.watcher import WatchedBucket, watched_buckets
from agentmesh.errors import RemoteError
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.latency import LatencyHistogram
from agentmesh.node.node import MeshNode
from agentmesh.observability.metrics import NodeMetrics, serve_node_metrics
from agentmesh.policy.rings import sign_elevation
from agentmesh.policy.runtime import GovernanceOptions, NodeGovernance
from agentmesh.saga import SagaStatus
from agentmesh.transport import InMemoryBus, InMemoryTransport
from agentmesh.transport.base import KVEntry
from agentmesh.trustnet.service import MeshTrust
from iatp.clock import ManualClock
from iatp.envelope import SIGNING_DOMAIN, encode_frame, encode_payload, new_envelope
from iatp.identity import AgentIdentity
from tests.agentmesh.saga.team import order_saga, standard_team
from tests.conftest import TransportFactory
from tests.trust.conftest import dids, receipt
from trust import Outcome, TrustConfig, TrustEngine
from trust.events import RingChanged, TrustEvent
from trust.selection import SelectionConfig, SelectionPolicy

MESH = "metrics"
DOCS = Path(__file__).parents[3] / "docs" / "metrics.md"


async def echo(message: InboundMessage) -> bytes:
    return message.body


def forged(claimed: str, signer: AgentIdentity, recipient: str) -> bytes:
    """A frame that claims ``claimed`` as its sender but is signed by someone else."""
    envelope = new_envelope(
        sender=claimed, type="echo", recipient=recipient, body=b"x", now_ms=int(time.time() * 1000)
    )
    payload = encode_payload(envelope)
    return encode_frame(claimed, payload, signer.sign(SIGNING_DOMAIN + payload))


def registry_of(metrics: NodeMetrics) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def until(check: object, timeout: float = 2.0) -> None:
    """Wait until ``check()`` is true (messages cross the bus in background tasks)."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def bus() -> InMemoryBus:
    return InMemoryBus()


@pytest.fixture
async def pair(bus: InMemoryBus) -> AsyncIterator[tuple[MeshNode, MeshNode]]:
    a = MeshNode(AgentIdentity.generate(), InMemoryTransport(bus), config=NodeConfig(mesh=MESH))
    b = MeshNode(AgentIdentity.generate(), InMemoryTransport(bus), config=NodeConfig(mesh=MESH))
    async with a, b:
        yield a, b


async def test_messages_by_kind_rejections_and_verify_latency(
    pair: tuple[MeshNode, MeshNode],
) -> None:
    a, b = pair
    metrics = NodeMetrics(b)
    registry = registry_of(metrics)
    b.handle("echo", echo)
    news = asyncio.Event()

    async def on_news(message: InboundMessage) -> None:
        news.set()

    await b.subscribe_topic("news", on_news)
    for _ in range(3):
        await a.request(b.did, "echo", b"signed")
    await a.request(b.did, "echo", b"sealed", sealed=True)
    await a.handshake(b.did)
    await a.request(b.did, "echo", b"session", via_session=True)
    await a.publish("news", "note", b"hello")
    await asyncio.wait_for(news.wait(), 2.0)
    await a.transport.publish(
        b.addressing.inbox(b.did), forged(a.did, AgentIdentity.generate(), b.did)
    )
    await until(lambda: b.counters.rejected["bad_signature"] == 1)

    received = "agentmesh_messages_received_total"
    sent = "agentmesh_messages_sent_total"
    assert value(registry, received, kind="inbox") == 4  # three requests and the forgery
    assert value(registry, received, kind="sealed") == 1
    assert value(registry, received, kind="session") == 1
    assert value(registry, received, kind="topic") == 1
    assert value(registry, received, kind="reply") == 0  # b asked nothing
    handshakes = a.counters.sent_by["handshake"]
    assert handshakes >= 1
    assert value(registry, received, kind="handshake") == handshakes
    assert value(registry, sent, kind="handshake") == handshakes
    assert value(registry, sent, kind="reply") == 5  # every request got its reply
    assert value(registry, sent, kind="inbox") == 0
    assert value(registry, "agentmesh_rejected_total", code="bad_signature") == 1
    assert value(registry, "agentmesh_messages_accepted_total") == 6
    assert value(registry, "agentmesh_messages_handled_total") == 6
    assert value(registry, "agentmesh_node_info", did=b.did, mesh=MESH) == 1
    # The signed frames b verified (a session frame has a MAC, not a signature).
    assert value(registry, "agentmesh_verify_seconds_count") == 6
    assert value(registry, "agentmesh_verify_seconds_bucket", le="+Inf") == 6
    total = value(registry, "agentmesh_verify_seconds_sum")
    assert total is not None
    assert 0 < total < 6.0
    # The sender's side, from its own counters (no collector on a: nothing timed there).
    assert a.verify_latency is None
    assert dict(a.counters.sent_by) == {
        "inbox": 3,
        "sealed": 1,
        "session": 1,
        "topic": 1,
        "handshake": handshakes,
    }
    assert a.counters.received_by["reply"] == 5

    metrics.close()
    assert b.verify_latency is None  # the hot path is back to one None check


async def test_policy_decisions_elevations_quarantines_and_watch_lag(
    bus: InMemoryBus, tmp_path: Path
) -> None:
    authority = AgentIdentity.generate()
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "version": 1,
                "name": "metrics",
                "rings": {"capabilities": {2: ["echo", "pay"], 3: ["echo", "secret"]}},
                "rules": [
                    {"id": "echo-in", "effect": "allow", "match": {"actions": ["echo"]}},
                    {"id": "pay-in", "effect": "allow", "match": {"actions": ["pay"]}},
                    {"id": "no-secret", "effect": "deny", "match": {"actions": ["secret"]}},
                ],
            }
        )
    )
    a = MeshNode(AgentIdentity.generate(), InMemoryTransport(bus), config=NodeConfig(mesh=MESH))
    b_id, b_transport = AgentIdentity.generate(), InMemoryTransport(bus)
    governance = NodeGovernance(
        b_id,
        b_transport,
        GovernanceOptions(policy=str(policy), authorities=(authority.did,)),
        mesh=MESH,
    )
    async with governance, a:
        b = MeshNode(b_id, b_transport, config=NodeConfig(mesh=MESH), audit=governance.audit)
        governance.install(b)
        b.handle("echo", echo)
        b.handle("pay", echo)
        b.handle("secret", echo)
        async with b:
            metrics = NodeMetrics(b, governance=governance)
            registry = registry_of(metrics)
            await a.request(b.did, "echo", b"1")
            with pytest.raises(RemoteError, match="policy_denied"):
                await a.request(b.did, "secret", b"2")
            with pytest.raises(RemoteError, match="ring_denied"):
                await a.request(b.did, "pay", b"3")  # ring 3 may not pay
            assert governance.governance is not None
            now = int(time.time() * 1000)
            governance.governance.rings.elevate(
                sign_elevation(
                    authority,
                    subject=a.did,
                    ring=2,
                    issued_at_ms=now - 1000,
                    expires_at_ms=now + 60_000,
                    reason="on call",
                )
            )
            await a.request(b.did, "pay", b"4")
            assert governance.kill_switch is not None
            await governance.kill_switch.quarantine(authority, a.did, "compromised")
            with pytest.raises(RemoteError, match="quarantined"):
                await a.request(b.did, "echo", b"5")

            decisions = "agentmesh_policy_decisions_total"
            assert value(registry, decisions, rule="echo-in", outcome="allowed") == 1
            assert value(registry, decisions, rule="no-secret", outcome="policy_denied") == 1
            assert value(registry, decisions, rule="ring-3", outcome="ring_denied") == 1
            assert value(registry, decisions, rule="pay-in", outcome="allowed") == 1
            changes = "agentmesh_ring_changes_total"
            assert value(registry, changes, reason="elevated", direction="promotion") == 1
            assert value(registry, "agentmesh_ring_elevations_refused_total") == 0
            quarantined = "agentmesh_quarantined_agents"
            assert value(registry, quarantined, status="quarantined") == 1
            assert value(registry, quarantined, status="revoked") == 0
            transitions = "agentmesh_quarantine_transitions_total"
            assert value(registry, transitions, transition="quarantined") == 1
            assert value(registry, transitions, transition="released") == 0
            # The quarantine stopped a's last request before the policy saw it.
            assert value(registry, "agentmesh_rejected_total", code="quarantined") == 1
            assert value(registry, "agentmesh_rejected_total", code="policy_denied") == 1

            # The revocation list watches its bucket over b's transport: the order
            # is in it, applied, with nothing left to deliver.
            watched = {w.bucket: w for w in watched_buckets(b_transport)}
            revocations = [name for name in watched if name.endswith("revocations")]
            assert len(revocations) == 1
            await until(lambda: watched[revocations[0]].revision > 0)
            revision = value(registry, "agentmesh_watch_revision", bucket=revocations[0])
            assert revision == watched[revocations[0]].revision
            assert value(registry, "agentmesh_watch_lag", bucket=revocations[0]) == 0
            metrics.close()
    assert watched_buckets(b_transport) == []  # closed watches are forgotten


async def test_watch_lag_is_what_the_store_still_had_to_deliver(bus: InMemoryBus) -> None:
    transport = InMemoryTransport(bus)
    await transport.connect()
    seen: list[tuple[int, int]] = []
    watched: WatchedBucket

    def on_entry(entry: KVEntry) -> None:
        seen.append((entry.revision, watched.lag))

    watched = WatchedBucket(transport, "lagging", on_entry)
    try:
        await watched.start()
        kv = watched.kv
        for n in range(5):  # written faster than the watch applies them
            await kv.put(f"k{n}", b"v")
        await until(lambda: len(seen) == 5)
        assert [lag for _, lag in seen] == [4, 3, 2, 1, 0]
        assert watched.revision == seen[-1][0]
        node = MeshNode(AgentIdentity.generate(), transport, config=NodeConfig(mesh=MESH))
        registry = registry_of(NodeMetrics(node))
        assert value(registry, "agentmesh_watch_lag", bucket="lagging") == 0
        assert value(registry, "agentmesh_watch_revision", bucket="lagging") == seen[-1][0]
        assert value(registry, "agentmesh_watch_resets_total", bucket="lagging") == 0
    finally:
        await watched.aclose()
        await transport.aclose()


async def test_trust_scores_are_capped_to_the_top_peers_and_ring_changes_counted(
    pair: tuple[MeshNode, MeshNode],
) -> None:
    _, b = pair
    agents = dids(8)
    engine = TrustEngine(
        pre_trusted=agents[:1],
        clock=ManualClock(1_700_000_000_000),
        config=TrustConfig(promotion_rounds=1),
    )
    trust = MeshTrust(b.transport, b.identity, mesh=MESH, engine=engine)  # not started
    metrics = NodeMetrics(b, trust=trust, top_peers=3)
    registry = registry_of(metrics)
    events: list[TrustEvent] = []
    engine.add_listener(events.append)
    for observer in agents:
        for rank, subject in enumerate(agents):
            for _ in range(rank + 1 if observer != subject else 0):
                engine.record(receipt(observer, subject, at_ms=1_700_000_000_000))
    engine.recompute()

    changes = [e for e in events if isinstance(e, RingChanged)]
    assert changes
    assert all(not e.demotion for e in changes)
    counted = value(
        registry, "agentmesh_ring_changes_total", reason="recompute", direction="promotion"
    )
    assert counted == len(changes)
    families = {f.name: f for f in registry.collect()}
    scores = {s.labels["peer"]: s.value for s in families["agentmesh_trust_score"].samples}
    assert scores == {did: score for did, score, _ in engine.top(3)}
    by_ring = families["agentmesh_trust_agents_by_ring"].samples
    assert sum(s.value for s in by_ring) == len(agents) == value(registry, "agentmesh_trust_agents")
    assert {s.labels["ring"] for s in by_ring} == {"0", "1", "2", "3"}
    assert value(registry, "agentmesh_trust_recomputes_total") == 1
    assert "agentmesh_trust_receipts_folded" not in families  # the service never started

    metrics.close()
    engine.recompute()
    engine.recompute()
    assert value(
        registry, "agentmesh_ring_changes_total", reason="recompute", direction="promotion"
    ) == len(changes)


async def test_selection_choices_by_rule_and_filtered_candidates(
    pair: tuple[MeshNode, MeshNode],
) -> None:
    _, b = pair
    agents = dids(6)
    seed, good, bad, fresh = agents[0], agents[1], agents[2], agents[3]
    engine = TrustEngine(pre_trusted=[seed], clock=ManualClock(1_700_000_000_000))
    for _ in range(20):
        engine.record(receipt(seed, good))
        engine.record(receipt(seed, bad, Outcome.FAILURE))
    engine.recompute()
    policy = SelectionPolicy(engine, SelectionConfig(explore=0.3, audit=0.5), rng=Random(7))
    registry = registry_of(NodeMetrics(b, selection=policy))
    reasons: Counter[str] = Counter()
    for requester in (agents[4], seed):
        for _ in range(200):
            reasons[policy.choose([good, bad, fresh], requester).reason] += 1
    reasons[policy.choose([fresh], agents[4]).reason] += 1  # only a newcomer answers

    for rule in ("trusted", "explore", "newcomer", "audit"):
        assert value(registry, "agentmesh_selection_choices_total", rule=rule) == reasons[rule]
        assert reasons[rule] > 0, rule
    assert value(registry, "agentmesh_selection_filtered_total") == policy.filtered >= 400
    rate = "agentmesh_selection_configured_rate"
    assert value(registry, rate, rule="explore") == 0.3
    assert value(registry, rate, rule="audit") == 0.5


async def test_saga_transitions_and_endings() -> None:
    factory = TransportFactory("memory", None)
    team = await standard_team(factory, MESH)
    team.failing.add("ship")
    try:
        coordinator = await team.coordinator()
        registry = registry_of(NodeMetrics(coordinator.node, sagas=coordinator))
        assert value(registry, "agentmesh_sagas_driving") == 0
        state = await coordinator.run(order_saga(), saga_id="counted")
        assert state.status is SagaStatus.COMPENSATED
        finished = "agentmesh_sagas_finished_total"
        assert value(registry, finished, status="compensated") == 1
        assert value(registry, finished, status="completed") == 0
        transitions = "agentmesh_saga_transitions_total"
        assert value(registry, transitions, kind="saga.started") == 1
        assert value(registry, transitions, kind="saga.compensated") == 1
        assert (value(registry, "agentmesh_saga_step_attempts_total") or 0) >= 3
    finally:
        await team.aclose()
        await factory.aclose()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        body: bytes = response.read()
        return body.decode()


async def test_the_endpoint_serves_each_node_from_its_own_registry(
    pair: tuple[MeshNode, MeshNode],
) -> None:
    a, b = pair
    b.handle("echo", echo)
    server_a = serve_node_metrics(a, port=0)
    server_b = serve_node_metrics(b, port=0)
    try:
        assert server_a.port != server_b.port
        await a.request(b.did, "echo", b"x")
        # Scraped from another thread: the collector reads on the loop, which is free here.
        text = await asyncio.to_thread(scrape, server_b.url)
        families = {f.name: f for f in text_string_to_metric_families(text)}
        inbox = [
            s
            for s in families["agentmesh_messages_received"].samples
            if s.labels == {"kind": "inbox"}
        ]
        assert [s.value for s in inbox] == [1.0]
        assert families["agentmesh_verify_seconds"].type == "histogram"
        text_a = await asyncio.to_thread(scrape, server_a.url)
        assert re.search(r'agentmesh_messages_received_total\{kind="reply"\} 1\.0', text_a)
        assert f'did="{a.did}"' in text_a
        assert b.did not in text_a
    finally:
        server_a.close()
        server_b.close()
        server_b.close()  # idempotent
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(scrape, server_b.url)
    assert a.verify_latency is None
    assert b.verify_latency is None


async def test_a_stuck_event_loop_fails_the_scrape_instead_of_reading_racing_state(
    pair: tuple[MeshNode, MeshNode],
) -> None:
    _, b = pair
    server = serve_node_metrics(b, port=0)
    server.metrics.scrape_timeout = 0.1
    try:
        loop = asyncio.get_running_loop()
        pending = loop.run_in_executor(None, scrape, server.url)
        # The loop is busy (not awaiting) while the scrape waits for it, and gives up.
        time.sleep(0.5)  # noqa: ASYNC251
        with pytest.raises(urllib.error.HTTPError) as failed:
            await pending
        assert failed.value.code == 500
        assert "agentmesh_node_info" in await asyncio.to_thread(scrape, server.url)
    finally:
        server.close()


def test_histogram_buckets_are_cumulative_upper_bounds() -> None:
    histogram = LatencyHistogram((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 0.5):
        histogram.observe(seconds)
    assert histogram.cumulative() == [(0.001, 2), (0.01, 3), (float("inf"), 4)]
    assert histogram.count == 4
    assert histogram.sum == pytest.approx(0.5035)
    with pytest.raises(ValueError, match="increasing"):
        LatencyHistogram((0.1, 0.1))


async def test_every_metric_is_documented(pair: tuple[MeshNode, MeshNode], tmp_path: Path) -> None:
    _, b = pair
    engine = TrustEngine(clock=ManualClock(0))
    team_factory = TransportFactory("memory", None)
    team = await standard_team(team_factory, MESH + "-docs")
    try:
        coordinator = await team.coordinator()
        authority = AgentIdentity.generate()
        policy = tmp_path / "p.json"
        policy.write_text(json.dumps({"version": 1, "name": "p", "rules": []}))
        async with NodeGovernance(
            b.identity,
            b.transport,
            GovernanceOptions(policy=str(policy), authorities=(authority.did,)),
            mesh=MESH,
        ) as governance:
            metrics = NodeMetrics(
                b,
                governance=governance,
                trust=MeshTrust(b.transport, b.identity, engine=engine),
                sagas=coordinator,
            )
            exposed = {
                f.name + ("_total" if f.type == "counter" else "") for f in metrics.families()
            }
            metrics.close()
    finally:
        await team.aclose()
        await team_factory.aclose()
    documented = set(re.findall(r"`(agentmesh_[a-z_]+)`", DOCS.read_text()))
    assert exposed <= documented, sorted(exposed - documented)
    assert len(exposed) >= 30
