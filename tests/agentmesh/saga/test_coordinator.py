"""The coordinator on both transports: completion, reverse compensation, needs-attention."""

from __future__ import annotations

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.saga import (
    CompensationStatus,
    RecordKind,
    SagaDefinition,
    SagaNotFound,
    SagaStatus,
    StepStatus,
)
from tests.agentmesh.saga.team import order_saga, standard_team
from tests.conftest import TransportFactory


async def test_saga_completes_and_every_step_runs_once(
    transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    try:
        coordinator = await team.coordinator()
        state = await coordinator.run(order_saga(), saga_id="s1")
        assert state.status is SagaStatus.COMPLETED
        assert team.ledger.order("s1") == ["reserve", "charge", "ship"]
        assert all(v.status is StepStatus.SUCCEEDED for v in state.steps.values())
        assert state.steps["charge"].result == {"by": "bank", "action": "charge", "forward": None}
        # The durable view (index + log) agrees with the in-memory one.
        loaded = await coordinator.load("s1")
        assert loaded.status is SagaStatus.COMPLETED
        assert [r.kind for r in loaded.records if r.number] == [
            r.kind for r in state.records if r.number
        ]
        entries = {e.saga_id: e for e in await coordinator.log.entries()}
        assert entries["s1"].status == "completed"
        assert await coordinator.log.unfinished() == []
        audit = coordinator.audit
        assert isinstance(audit, MemoryAuditSink)
        codes = audit.codes("saga")
        assert codes.count("step.started") == 3
        assert "saga.completed" in codes
    finally:
        await team.aclose()


async def test_failure_compensates_completed_steps_in_reverse_order(
    transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    team.failing.add("ship")
    team.directory._capabilities["shipping"] = [team.agents["courier"].node.did]
    definition = SagaDefinition.load(
        {
            "name": "order",
            "steps": [
                {
                    "name": "reserve",
                    "capability": "inventory",
                    "request": {"action": "reserve"},
                    "compensation": {"action": "release"},
                },
                {
                    "name": "charge",
                    "capability": "payment",
                    "request": {"action": "charge"},
                    "compensation": {"action": "refund"},
                },
                {
                    "name": "ship",
                    "capability": "shipping",
                    "request": {"action": "ship"},
                    "compensation": {"action": "unship"},
                },
            ],
        }
    )
    try:
        coordinator = await team.coordinator()
        state = await coordinator.run(definition, saga_id="s2")
        assert state.status is SagaStatus.COMPENSATED
        assert team.ledger.order("s2") == ["reserve", "charge", "refund", "release"]
        # The refund received the charge's result, so it knows what to undo.
        kinds = [r.kind for r in state.records if r.kind.value.startswith("compensation")]
        assert kinds == [RecordKind.COMPENSATION_STARTED, RecordKind.COMPENSATION_SUCCEEDED] * 2
        assert state.failed_step == "ship"
        assert state.steps["ship"].code == "declined"
    finally:
        await team.aclose()


async def test_failing_compensation_is_retried_then_needs_attention(
    transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    team.failing.add("ship")
    team.broken.add("refund")
    try:
        coordinator = await team.coordinator()
        definition = order_saga()
        state = await coordinator.run(definition, saga_id="s3")
        assert state.status is SagaStatus.NEEDS_ATTENTION
        charge = state.execution("charge", team.agents["bank"].node.did)
        assert charge is not None
        assert charge.compensation is CompensationStatus.FAILED
        assert charge.attempts == definition.step("charge").retry.max_attempts
        # The release was still done: one broken compensation does not skip the others.
        assert team.ledger.order("s3") == ["reserve", "charge", "release"]
        assert state.records[-1].kind is RecordKind.SAGA_NEEDS_ATTENTION
        assert state.records[-1].data["failed"][0]["step"] == "charge"
        audit = coordinator.audit
        assert isinstance(audit, MemoryAuditSink)
        assert "saga.needs_attention" in audit.codes("saga")
        assert "saga.compensated" not in audit.codes("saga")
        assert (await coordinator.log.entry("s3")).status == "needs-attention"
    finally:
        await team.aclose()


async def test_parallel_group_runs_together_and_compensates_the_sibling(
    transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    team.delay["reserve"] = 0.2
    team.delay["charge"] = 0.2
    try:
        coordinator = await team.coordinator()
        loop_time = __import__("asyncio").get_running_loop().time
        started = loop_time()
        state = await coordinator.run(order_saga(parallel=True), saga_id="p1")
        assert state.status is SagaStatus.COMPLETED
        assert loop_time() - started < 0.39  # the two 0.2 s steps overlapped
        team.failing.add("charge")
        state = await coordinator.run(order_saga(parallel=True), saga_id="p2")
        assert state.status is SagaStatus.COMPENSATED
        assert team.ledger.order("p2") == ["reserve", "release"]
    finally:
        await team.aclose()


async def test_unknown_saga_is_a_typed_error(transport_factory: TransportFactory, uid: str) -> None:
    team = await standard_team(transport_factory, uid)
    try:
        coordinator = await team.coordinator()
        with pytest.raises(SagaNotFound) as caught:
            await coordinator.load("nope")
        assert caught.value.code == "saga_not_found"
    finally:
        await team.aclose()
