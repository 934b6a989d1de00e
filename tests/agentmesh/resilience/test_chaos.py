"""Chaos on real nodes (in memory and on a real nats-server): a failing agent is isolated.

A calls B; B's ``work`` handler calls C; B's ``ping`` does not. C fails (its
handler hangs, or raises). With circuit breakers B's breaker on C opens after a
few failures and B answers ``work`` at once with a typed ``circuit_open``, so
B's handler slots stay free and A's pings stay fast. Without breakers every
``work`` holds one of B's handler slots for the whole downstream timeout and A's
pings wait behind them.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.errors import AgentMeshError, RemoteError
from agentmesh.node.config import Timeouts
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.resilience import (
    BreakerConfig,
    BreakerState,
    CascadeConfig,
    CascadeEvent,
    LatencyObjective,
    NodeResilience,
    PeerBreakers,
    ResilienceDocument,
    SloSpec,
    install_resilience,
)
from tests.agentmesh.node.conftest import NodeMaker
from tests.agentmesh.transport.waiting import eventually

DOWNSTREAM_TIMEOUT = 0.3  # B -> C: shorter than A -> B, as deadlines shrink down a chain
PING_TIMEOUT = 1.0
WORKS = 24
PINGS = 12
SLOTS = 4


class Failing:
    """C's ``compute`` handler: hangs or raises while ``broken``; answers otherwise."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.broken = True
        self.calls = 0

    async def __call__(self, message: InboundMessage) -> bytes:
        self.calls += 1
        if not self.broken:
            return b"computed"
        if self.mode == "hang":
            await asyncio.sleep(30)
        raise ValueError("C is broken")


def middle(node: MeshNode, downstream: str, needs: str = "compute") -> None:
    """B: ``work`` needs C (its ``needs``), ``ping`` does not."""

    async def work(message: InboundMessage) -> bytes:
        reply = await node.request(downstream, needs, message.body, timeout=DOWNSTREAM_TIMEOUT)
        return reply.body

    async def ping(message: InboundMessage) -> bytes:
        return b"pong"

    node.handle("work", work)
    node.handle("ping", ping)


@dataclass
class Run:
    work_errors: list[str] = field(default_factory=list)
    work_seconds: float = 0.0
    ping_latencies: list[float] = field(default_factory=list)
    ping_failures: int = 0


async def load(a: MeshNode, b: str) -> Run:
    """Fire WORKS ``work`` requests at B at once, then PINGS pings one after another."""
    loop = asyncio.get_running_loop()
    run = Run()
    started = loop.time()

    async def one_work(index: int) -> None:
        try:
            await a.request(b, "work", str(index).encode(), timeout=3.0)
            run.work_errors.append("ok")
        except AgentMeshError as exc:
            run.work_errors.append(
                f"remote:{exc.remote_code}" if isinstance(exc, RemoteError) else exc.code
            )

    works = [asyncio.create_task(one_work(i)) for i in range(WORKS)]
    await asyncio.sleep(0.01)  # the works are on their way first
    for _ in range(PINGS):
        sent = loop.time()
        try:
            assert (await a.request(b, "ping", b"", timeout=PING_TIMEOUT)).body == b"pong"
        except AgentMeshError:
            run.ping_failures += 1
        run.ping_latencies.append(loop.time() - sent)
        await asyncio.sleep(0.02)
    await asyncio.gather(*works)
    run.work_seconds = loop.time() - started
    return run


def document(**cascade: object) -> ResilienceDocument:
    return ResilienceDocument(
        breakers=BreakerConfig(failure_threshold=3, cool_down_ms=600, jitter=0.2),
        cascade=CascadeConfig(**cascade) if cascade else None,  # type: ignore[arg-type]
        slos=[
            SloSpec(capability="work", success_rate=0.99, window_s=60),
            SloSpec(
                capability="ping",
                success_rate=0.99,
                latency=LatencyObjective(threshold_ms=250, objective=0.9),
                window_s=60,
            ),
        ],
    )


async def chain(make_node: NodeMaker, mode: str) -> tuple[MeshNode, MeshNode, MeshNode, Failing]:
    a = await make_node(timeouts=Timeouts(request=3.0))
    b = await make_node(max_concurrent_handlers=SLOTS)
    c = await make_node()
    failing = Failing(mode)
    c.handle("compute", failing)
    middle(b, c.did)
    return a, b, c, failing


async def test_failing_agent_is_isolated_by_the_breakers(make_node: NodeMaker) -> None:
    a, b, c, failing = await chain(make_node, "hang")
    on_b = install_resilience(b, document(), rng=random.Random(3))
    on_a = install_resilience(a, ResilienceDocument(breakers=BreakerConfig(failure_threshold=3)))
    assert on_b.breakers is not None
    assert on_b.slos is not None
    assert on_a.breakers is not None

    run = await load(a, b.did)

    # B's breaker on C opened after the first wave of timeouts: C saw only that wave.
    assert on_b.breakers.state(c.did) is BreakerState.OPEN
    assert failing.calls <= SLOTS
    # The rest of A's work was refused at once, with a typed error naming the root.
    assert run.work_errors.count("circuit_open") >= WORKS - SLOTS
    assert run.work_seconds < 1.2
    # A's other work through B never suffered: every ping answered, and fast.
    assert run.ping_failures == 0
    assert sorted(run.ping_latencies)[len(run.ping_latencies) // 2] < 0.15
    assert max(run.ping_latencies) < DOWNSTREAM_TIMEOUT + 0.5
    # The isolation did not spread up: A's breaker on the (healthy) B stays closed.
    assert on_a.breakers.state(b.did) is BreakerState.CLOSED
    assert isinstance(b.audit, MemoryAuditSink)
    assert b.audit.codes("circuit") == ["open"]
    # B's SLOs: work burns its budget, pings keep theirs.
    work, ping = on_b.slos.snapshot()
    assert work.total == WORKS
    assert work.success_rate == 0.0
    assert work.burn_rate > 10
    assert ping.success_rate == 1.0
    assert ping.error_budget_remaining > 0


async def test_without_breakers_the_failing_agent_drags_its_callers_down(
    make_node: NodeMaker,
) -> None:
    a, b, _, failing = await chain(make_node, "hang")

    run = await load(a, b.did)

    assert failing.calls == WORKS  # every work waited out C's silence
    assert run.work_errors.count("remote:handler_error") == WORKS
    # WORKS / SLOTS rounds of DOWNSTREAM_TIMEOUT: B's slots were all taken by C's failure.
    assert run.work_seconds >= (WORKS // SLOTS) * DOWNSTREAM_TIMEOUT * 0.9
    assert run.ping_failures >= 1  # a ping queued behind them timed out
    assert max(run.ping_latencies) >= PING_TIMEOUT


async def test_breaker_probes_close_it_when_the_agent_recovers(make_node: NodeMaker) -> None:
    a, b, c, failing = await chain(make_node, "raise")
    breakers = PeerBreakers(
        BreakerConfig(failure_threshold=2, cool_down_ms=200, jitter=0.0), rng=random.Random(1)
    )
    breakers.install(b)
    for _ in range(2):
        with pytest.raises(RemoteError) as failed:
            await a.request(b.did, "work", b"x")
        assert failed.value.remote_code == "handler_error"
    with pytest.raises(RemoteError) as refused:
        await a.request(b.did, "work", b"x")
    assert refused.value.remote_code == "circuit_open"  # A has no breakers: a remote error
    assert refused.value.reason == f"root={c.did} depth=1"
    assert failing.calls == 2
    failing.broken = False
    await asyncio.sleep(0.25)
    assert breakers.state(c.did) is BreakerState.HALF_OPEN
    assert (await a.request(b.did, "work", b"x")).body == b"computed"
    assert breakers.state(c.did) is BreakerState.CLOSED
    assert isinstance(b.audit, MemoryAuditSink)
    assert b.audit.codes("circuit") == ["open", "half_open", "closed"]


async def test_cascade_spreading_to_callers_raises_an_event(make_node: NodeMaker) -> None:
    callers = [await make_node() for _ in range(3)]
    b = await make_node()
    c = await make_node()
    c.handle("compute", Failing("raise"))
    middle(b, c.did)
    on_b: NodeResilience = install_resilience(
        b, document(window_ms=5_000, min_callers=3, min_depth=4)
    )
    assert on_b.cascades is not None
    events: list[CascadeEvent] = []
    on_b.cascades.on_cascade(events.append)

    for caller in callers[:2]:
        for _ in range(2):
            with pytest.raises(RemoteError):
                await caller.request(b.did, "work", b"x")
    assert events == []  # two callers so far
    with pytest.raises(RemoteError) as refused:
        await callers[2].request(b.did, "work", b"x")
    assert refused.value.remote_code == "circuit_open"
    await eventually(lambda: len(events) == 1)
    event = events[0]
    assert event.root == c.did
    assert event.node == b.did
    assert set(event.affected) == {b.did, *(caller.did for caller in callers)}
    assert event.codes == ("circuit_open", "handler_error")
    assert event.first_hand
    assert isinstance(b.audit, MemoryAuditSink)
    assert b.audit.codes("cascade") == ["detected"]


async def test_a_refusal_travels_up_a_chain_as_circuit_open(make_node: NodeMaker) -> None:
    """Z -> A -> B -> C: B's open breaker reaches Z as circuit_open at depth 3."""
    z = await make_node()
    a, b, c, failing = await chain(make_node, "raise")
    on_a, on_b = (install_resilience(n, document(min_callers=9, min_depth=3)) for n in (a, b))
    assert on_a.cascades is not None
    assert on_b.cascades is not None
    middle(a, b.did, needs="work")  # A's work calls B's work
    for _ in range(3):  # open B's breaker on C
        with pytest.raises(RemoteError) as relayed:
            await a.request(b.did, "work", b"x")
        assert (relayed.value.remote_code, relayed.value.reason) == ("handler_error", "RemoteError")
    with pytest.raises(RemoteError) as refused:
        await z.request(a.did, "work", b"x")
    assert refused.value.remote_code == "circuit_open"
    assert refused.value.reason == f"root={c.did} depth=2"
    assert failing.calls == 3
    # A's detector saw a failure travel Z -> A -> B -> C: a cascade by depth, whose root
    # it knows only from B's word (no quarantine would be asked for).
    await eventually(lambda: len(on_a.cascades.events) == 1)  # type: ignore[union-attr]
    event = on_a.cascades.events[0]
    assert (event.root, event.depth, event.first_hand) == (c.did, 3, False)
    assert event.affected == (a.did, z.did)
    assert on_b.cascades.events == []  # one caller (A), chain of 2: below both thresholds
