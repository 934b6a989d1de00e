"""Crash the coordinator after every single log record; a replica finishes every saga.

In-process version of the chaos test (the cross-process one kills real processes
with SIGKILL over a real nats-server, see test_chaos.py): coordinator A is
cancelled right after its k-th durable record (or while an agent is executing a
step), without releasing its lease; coordinator B, another identity, takes over
when the lease expires. Whatever k, the saga ends completed or fully compensated,
no action runs twice and no compensation is skipped.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from agentmesh.saga import SagaCoordinator, SagaState, SagaStatus
from agentmesh.saga.records import RecordKind, SagaRecord
from tests.agentmesh.saga.team import Team, order_saga, standard_team
from tests.conftest import TransportFactory

LEASE = 0.3


async def take_over(replica: SagaCoordinator, saga_id: str) -> SagaState:
    for _ in range(100):
        state = await replica.resume(saga_id)
        if state is not None:
            return state
        await asyncio.sleep(LEASE / 3)
    raise AssertionError("the lease never expired")


def check_effects(team: Team, saga_id: str, state: SagaState, fails: bool) -> None:
    ran = Counter(e[1] for e in team.ledger.effects if e[2] == saga_id)
    assert all(n == 1 for n in ran.values()), ran  # nothing ran twice
    if not fails:
        assert state.status is SagaStatus.COMPLETED
        assert ran == {"reserve": 1, "charge": 1, "ship": 1}
    else:
        assert state.status is SagaStatus.COMPENSATED
        # every forward effect that happened was undone, nothing else was
        assert ran["release"] == ran["reserve"] == 1
        assert ran["refund"] == ran["charge"] == 1
        assert team.ledger.order(saga_id) == ["reserve", "charge", "refund", "release"]


async def crash_run(team: Team, saga_id: str, crash_at: int, *, during_action: bool) -> SagaState:
    first = await team.coordinator("a", lease_ttl=LEASE)
    replica = await team.coordinator("b", lease_ttl=LEASE)
    saga_id = await first.submit(order_saga(), saga_id=saga_id)
    task = asyncio.create_task(first.resume(saga_id))
    seen: list[SagaRecord] = []

    def crash_after(record: SagaRecord) -> None:
        seen.append(record)
        if not during_action and len(seen) == crash_at:
            task.cancel()

    first.after_append = crash_after
    if during_action:  # the agent finishes its action, but the coordinator is gone
        action = ("reserve", "charge", "ship")[crash_at % 3]
        original = team.agents["warehouse"].executor.actions
        for agent in team.agents.values():
            for name, handler in list(agent.executor.actions.items()):
                if name == action:

                    async def killing(call, handler=handler):  # type: ignore[no-untyped-def]
                        result = await handler(call)
                        task.cancel()
                        return result

                    agent.executor.actions[name] = killing
        del original
    with pytest.raises(asyncio.CancelledError):
        await task
    state = await take_over(replica, saga_id)
    assert replica.counters.resumed == 1
    return state


@pytest.mark.parametrize("fails", [False, True], ids=["completes", "compensates"])
async def test_crash_after_every_record_then_a_replica_finishes(
    transport_factory: TransportFactory, uid: str, fails: bool
) -> None:
    records = 13 if fails else 8  # log length of an uninterrupted run
    if transport_factory.kind == "nats":
        crash_points = [1, 4, records - 1]  # a sample over NATS; every point in memory
    else:
        crash_points = list(range(1, records))
    for k in crash_points:
        team = await standard_team(transport_factory, f"{uid}k{k}")
        if fails:
            team.failing.add("ship")
        try:
            state = await crash_run(team, f"crash{k}", k, during_action=False)
            check_effects(team, f"crash{k}", state, fails)
        finally:
            await team.aclose()


@pytest.mark.parametrize("which", [0, 1, 2])
async def test_crash_while_the_agent_runs_the_step(
    transport_factory: TransportFactory, uid: str, which: int
) -> None:
    team = await standard_team(transport_factory, uid)
    try:
        state = await crash_run(team, "mid", which, during_action=True)
        check_effects(team, "mid", state, fails=False)
        # The replica re-sent the interrupted step with the same key and got the
        # agent's first result back instead of running it again.
        step = ("reserve", "charge", "ship")[which]
        done = [r for r in state.records if r.kind is RecordKind.STEP_SUCCEEDED and r.step == step]
        assert done[0].data["duplicate"] is True
    finally:
        await team.aclose()
