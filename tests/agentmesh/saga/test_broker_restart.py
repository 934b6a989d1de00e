"""Sagas across a broker restart: the real ``nats-server`` is killed (SIGKILL) and
started again on the same port and store while an agent is in the middle of a step.

The kill comes at the worst moment: right as the action returns, so the agent's
"done" write goes into the dying connection and is lost, and the reply to the
coordinator with it.

The agent's "done" write is retried through the outage; when the outage outlasts the
executor's retry bound, the run's outcome stays in memory and the coordinator's retry
(same incarnation, record still "running") gets that real outcome instead of
``in_doubt``. Either way the saga completes, nothing is compensated and the step ran
exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from agentmesh.errors import RequestTimeout
from agentmesh.saga import (
    IdempotencyStoreUnavailable,
    RecordKind,
    SagaDefinition,
    SagaState,
    SagaStatus,
    StepCall,
    StepExecutor,
)
from agentmesh.saga.wire import STEP_TYPE, ReplyStatus, StepKind
from agentmesh.transport.nats import NatsTransport
from tests.agentmesh.saga.team import Team
from tests.agentmesh.saga.test_executor import request, send, setup
from tests.conftest import TransportFactory, start_or_fail
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

OUTAGE_S = 3.0


@pytest.fixture
def server() -> Iterator[NatsServerProcess]:
    """A server of this test alone (it is killed and restarted)."""
    process = start_or_fail(NatsServerProcess())
    try:
        yield process
    finally:
        process.close()


class Outage:
    """``kill -9`` of the server from inside an action, then a restart ``down_s`` later."""

    def __init__(self, server: NatsServerProcess, down_s: float = OUTAGE_S) -> None:
        self.server = server
        self.down_s = down_s
        self.restarted: asyncio.Task[None] | None = None

    def kill_now(self) -> None:
        self.server.kill()  # synchronous: nothing else runs before the server is gone
        self.restarted = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        await asyncio.sleep(self.down_s)
        await asyncio.to_thread(self.server.start)

    async def wait(self) -> None:
        assert self.restarted is not None, "the action never ran"
        await self.restarted


def payment_saga() -> SagaDefinition:
    """reserve -> charge; the charge is pinned to one agent (no substitute to hand off to)."""
    return SagaDefinition.load(
        {
            "name": "pay",
            "steps": [
                {
                    "name": "reserve",
                    "capability": "inventory",
                    "request": {"action": "reserve"},
                    "compensation": {"action": "release"},
                    "timeout_s": 1.0,
                },
                {
                    "name": "charge",
                    "capability": "payment",
                    "request": {"action": "charge"},
                    "compensation": {"action": "refund"},
                    "timeout_s": 1.0,
                    "retry": {"max_attempts": 4, "backoff_s": 0.2},
                },
            ],
        }
    )


async def saga_through_restart(
    server: NatsServerProcess, mesh: str, store_retry_s: float
) -> tuple[Team, SagaState]:
    factory = TransportFactory("nats", server.url)
    team = Team(factory, mesh)
    await team.agent("warehouse", ("inventory",), ("reserve", "release"))
    bank = await team.agent("bank", ("payment",), ("charge", "refund"))
    bank.executor.store_retry_s = store_retry_s
    outage = Outage(server)
    charge = bank.executor.actions["charge"]

    async def charge_then_broker_dies(call: StepCall) -> Mapping[str, Any] | None:
        result = await charge(call)
        if outage.restarted is None:
            outage.kill_now()
        return result

    bank.executor.actions["charge"] = charge_then_broker_dies
    # A lease longer than the outage: this test is about the agent, not the replica.
    coordinator = await team.coordinator(lease_ttl=30.0)
    try:
        async with asyncio.timeout(60):
            state = await coordinator.run(payment_saga())
            await outage.wait()
    finally:
        await team.aclose()
        await factory.aclose()
    return team, state


def check_completed_once(team: Team, state: SagaState) -> None:
    assert state.status is SagaStatus.COMPLETED, [(r.kind, r.data) for r in state.records]
    assert team.ledger.ran("charge") == 1
    assert team.ledger.ran("reserve") == 1
    assert team.ledger.ran("refund") == team.ledger.ran("release") == 0
    kinds = [r.kind for r in state.records]
    assert RecordKind.SAGA_COMPENSATING not in kinds
    charged = state.steps["charge"].result
    assert charged is not None
    assert charged["by"] == "bank"
    assert team.agents["bank"].executor.counters.in_doubt == 0


async def test_done_write_is_retried_through_a_broker_restart(
    server: NatsServerProcess, uid: str
) -> None:
    team, state = await saga_through_restart(server, uid, store_retry_s=20.0)
    check_completed_once(team, state)
    counters = team.agents["bank"].executor.counters
    assert counters.store_retries > 0  # the "done" write waited the outage out
    assert counters.unsettled == 0


async def test_outage_past_the_retry_bound_the_retry_joins_the_live_run(
    server: NatsServerProcess, uid: str
) -> None:
    """The "done" write gives up after 1 s of a 3 s outage: the coordinator's retry finds
    this incarnation's "running" record and answers the run's real outcome."""
    team, state = await saga_through_restart(server, uid, store_retry_s=1.0)
    check_completed_once(team, state)
    counters = team.agents["bank"].executor.counters
    assert counters.unsettled == 1
    assert counters.joined == 1
    succeeded = [r for r in state.records if r.kind is RecordKind.STEP_SUCCEEDED]
    assert [r.data["duplicate"] for r in succeeded if r.step == "charge"] == [True]
    audit = team.agents["bank"].node.audit.codes("saga_step")  # type: ignore[attr-defined]
    assert "idempotency_record_unsettled" in audit


async def test_retry_after_the_outage_gets_the_outcome_and_settles_the_record(
    server: NatsServerProcess, uid: str
) -> None:
    """Executor level: the first reply is lost in the outage; the retry gets the real
    outcome (not in_doubt) and the record ends "done" in the store."""
    factory = TransportFactory("nats", server.url)
    bank, agent, caller, executor = await setup(factory, uid)
    executor.store_retry_s = 1.0
    outage = Outage(server)

    async def charge_then_broker_dies(call: StepCall) -> dict[str, Any]:
        result: dict[str, Any] = await bank.charge(call)
        outage.kill_now()
        return result

    executor.actions["charge"] = charge_then_broker_dies
    try:
        try:
            first = await send(caller, agent, request())
        except RequestTimeout:
            pass  # lost in the outage
        else:  # or it arrived after the reconnect: the real outcome either way
            assert first.status is ReplyStatus.OK
            assert first.result == {"charge_id": "ch-1"}
        await outage.wait()
        async with asyncio.timeout(30):
            while True:  # until the agent's connection is back
                try:
                    again = await send(caller, agent, request())
                    break
                except Exception:
                    await asyncio.sleep(0.2)
        assert again.status is ReplyStatus.OK
        assert again.result == {"charge_id": "ch-1"}
        assert bank.charges == ["o1.charge"]
        assert executor.counters.unsettled == 1
        assert executor.counters.joined == 1
        assert executor.counters.in_doubt == 0
        stored = await executor._get(executor._key(StepKind.FORWARD, "o1.charge"))
        assert stored is not None
        assert stored[0]["state"] == "done"
        assert stored[0]["reply"]["result"] == {"charge_id": "ch-1"}
    finally:
        await caller.aclose()
        await agent.aclose()
        await factory.aclose()


async def test_store_down_before_the_action_refuses_the_step_typed_counted_audited(
    server: NatsServerProcess, uid: str
) -> None:
    """The agent's idempotency store lives on a second server, which is down: past the
    bound the step is refused with a typed code, and the action never runs."""
    store_server = start_or_fail(NatsServerProcess())
    factory = TransportFactory("nats", server.url)
    stores = TransportFactory("nats", store_server.url)
    try:
        bank, agent, caller, _ = await setup(factory, uid)
        store_transport = await stores.new("store")
        assert isinstance(store_transport, NatsTransport)
        back = asyncio.Event()
        store_transport.on_reconnect(back.set)
        down = StepExecutor(
            agent,
            await store_transport.key_value(f"idem-{uid}"),
            actions={"charge": bank.charge},
            store_retry_s=0.5,
        )
        agent.handle(STEP_TYPE, down.handle)  # replaces the executor of setup()
        await asyncio.to_thread(store_server.kill)
        reply = await send(caller, agent, request())
        assert reply.status is ReplyStatus.REJECTED
        assert reply.code == IdempotencyStoreUnavailable.code
        assert "0.5s" in reply.detail
        assert bank.charges == []
        assert down.counters.store_unavailable == 1
        assert down.counters.executed == 0
        audit = agent.audit.codes("saga_step")
        assert IdempotencyStoreUnavailable.code in audit
        await caller.aclose()
        await agent.aclose()
        # Closing a transport whose server is gone fails in its drain: bring it back.
        await asyncio.to_thread(store_server.start)
        async with asyncio.timeout(15):
            await back.wait()
    finally:
        await factory.aclose()
        await stores.aclose()
        store_server.close()
