"""Handoff: quarantined, revoked, demoted or silent agents are replaced mid-saga."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.directory.revocations import RevocationList
from agentmesh.policy.killswitch import KillSwitch
from agentmesh.policy.rings import StaticRings
from agentmesh.saga import (
    EligibilityGuard,
    RecordKind,
    SagaDefinition,
    SagaStatus,
    StaticBlockList,
)
from agentmesh.saga.adapters import KillSwitchAlarm, RevocationAlarm
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities, RevocationKind, sign_revocation
from tests.agentmesh.saga.team import Team, order_saga, standard_team
from tests.conftest import TransportFactory


def charged_by(team: Team, saga_id: str) -> list[str]:
    return [e[0] for e in team.ledger.effects if e[1] == "charge" and e[2] == saga_id]


def handoffs(records: list) -> list[tuple[str, str, bool]]:  # type: ignore[type-arg]
    return [
        (r.step, r.data["reason"], r.data["in_doubt"])
        for r in records
        if r.kind is RecordKind.STEP_HANDOFF
    ]


async def test_blocked_agent_is_skipped_before_the_step(
    transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    blocks = StaticBlockList()
    blocks.block(team.agents["bank"].node.did)
    try:
        coordinator = await team.coordinator(guard=EligibilityGuard(blocked=[blocks]))
        state = await coordinator.run(order_saga(), saga_id="b1")
        assert state.status is SagaStatus.COMPLETED
        assert charged_by(team, "b1") == ["bank2"]
        audit = coordinator.audit
        assert isinstance(audit, MemoryAuditSink)
        assert "candidate_refused" in audit.codes("saga")
    finally:
        await team.aclose()


async def test_quarantine_mid_flight_hands_off_and_completes(
    transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    team.delay["charge"] = 0.6
    blocks = StaticBlockList()
    try:
        coordinator = await team.coordinator(
            guard=EligibilityGuard(blocked=[blocks]), alarms=(blocks,)
        )
        running = asyncio.create_task(coordinator.run(order_saga(), saga_id="q1"))
        await asyncio.sleep(0.3)  # bank is charging now
        blocks.block(team.agents["bank"].node.did, "quarantined")
        team.delay.pop("charge")
        state = await running
        assert state.status is SagaStatus.COMPLETED
        assert handoffs(state.records) == [("charge", "quarantined", True)]
        assert state.steps["charge"].result is not None
        assert state.steps["charge"].result["by"] == "bank2"
        # The abandoned, in-doubt attempt on the quarantined agent is named for
        # reconciliation in the completion record, and audited.
        assert state.records[-1].data["abandoned"] == [
            {"step": "charge", "agent": team.agents["bank"].node.did}
        ]
    finally:
        await team.aclose()


async def test_demoted_agent_is_not_chosen(transport_factory: TransportFactory, uid: str) -> None:
    team = await standard_team(transport_factory, uid)
    rings = StaticRings({a.node.did: 1 for a in team.agents.values()}, default=3)
    rings.set(team.agents["bank"].node.did, 3)  # demoted to the sandbox
    definition = SagaDefinition.load(
        {
            "name": "pay",
            "steps": [
                {
                    "name": "charge",
                    "capability": "payment",
                    "required_ring": 1,
                    "request": {"action": "charge"},
                    "compensation": {"action": "refund"},
                }
            ],
        }
    )
    try:
        coordinator = await team.coordinator(guard=EligibilityGuard(rings=rings))
        state = await coordinator.run(definition, saga_id="r1")
        assert state.status is SagaStatus.COMPLETED
        assert charged_by(team, "r1") == ["bank2"]
        rings.set(team.agents["bank2"].node.did, 2)  # now nobody is privileged enough
        state = await coordinator.run(definition, saga_id="r2")
        assert state.status is SagaStatus.COMPENSATED
        assert state.steps["charge"].code == "no_substitute"
    finally:
        await team.aclose()


async def test_agent_that_left_the_mesh_is_replaced(
    transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    try:
        coordinator = await team.coordinator()
        await team.agents["bank"].node.aclose()
        state = await coordinator.run(order_saga(), saga_id="g1")
        assert state.status is SagaStatus.COMPLETED
        assert charged_by(team, "g1") == ["bank2"]
        # nobody received the request: a clean handoff, nothing in doubt
        assert handoffs(state.records) == [("charge", "no_responders", False)]
        assert state.records[-1].data["abandoned"] == []
    finally:
        await team.aclose()


async def test_silent_agent_times_out_and_is_replaced(
    transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    team.delay["charge"] = 0.5
    try:
        coordinator = await team.coordinator()
        definition = order_saga(timeout_s=0.2)
        running = asyncio.create_task(coordinator.run(definition, saga_id="t1"))
        await asyncio.sleep(0.1)
        team.delay["charge"] = 0.0  # bank2 answers at once
        state = await running
        assert state.status is SagaStatus.COMPLETED
        assert handoffs(state.records) == [("charge", "timeout", True)]
        attempts = [r for r in state.records if r.kind is RecordKind.STEP_ATTEMPT_FAILED]
        assert [r.attempt for r in attempts] == [1, 2]  # the retry policy ran first
    finally:
        await team.aclose()


async def test_revocation_list_quarantine_hands_off_in_flight(
    transport_factory: TransportFactory, uid: str
) -> None:
    """The real kill switch path: a signed quarantine entry in the revocation KV."""
    team = await standard_team(transport_factory, uid)
    authority = AgentIdentity.generate()
    revocations = RevocationList(
        await transport_factory.new("revocations"),
        mesh=uid,
        authorities=RevocationAuthorities(mesh=frozenset({authority.did})),
    )
    await revocations.start()
    team.delay["charge"] = 0.8
    try:
        coordinator = await team.coordinator(
            guard=EligibilityGuard(blocked=[revocations]), alarms=(RevocationAlarm(revocations),)
        )
        running = asyncio.create_task(coordinator.run(order_saga(), saga_id="k1"))
        await asyncio.sleep(0.3)
        bank = team.agents["bank"].node
        await revocations.issue(
            sign_revocation(
                authority,
                subject=bank.did,
                kind=RevocationKind.QUARANTINED,
                reason="rogue",
                issued_at_ms=bank.clock.now_ms(),
                sequence=1,
            )
        )
        team.delay.pop("charge")
        state = await running
        assert state.status is SagaStatus.COMPLETED
        assert handoffs(state.records) == [("charge", "quarantined", True)]
        assert state.steps["charge"].result is not None
        assert state.steps["charge"].result["by"] == "bank2"
    finally:
        await revocations.aclose()
        await team.aclose()


async def test_no_eligible_agent_fails_the_step_and_compensates(
    transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    blocks = StaticBlockList()
    blocks.block(team.agents["bank"].node.did)
    blocks.block(team.agents["bank2"].node.did)
    try:
        coordinator = await team.coordinator(guard=EligibilityGuard(blocked=[blocks]))
        state = await coordinator.run(order_saga(), saga_id="n1")
        assert state.status is SagaStatus.COMPENSATED
        assert state.steps["charge"].code == "no_substitute"
        assert team.ledger.order("n1") == ["reserve", "release"]
    finally:
        await team.aclose()


async def test_kill_switch_order_hands_off_in_flight(
    transport_factory: TransportFactory, uid: str
) -> None:
    """The policy layer's kill switch (broadcast + stored order) through KillSwitchAlarm."""
    team = await standard_team(transport_factory, uid)
    authority = AgentIdentity.generate()
    transport = await transport_factory.new("switch")
    revocations = RevocationList(
        transport, mesh=uid, authorities=RevocationAuthorities(mesh=frozenset({authority.did}))
    )
    await revocations.start()
    switch = KillSwitch(transport, revocations, mesh=uid)
    await switch.start()
    team.delay["charge"] = 1.5
    try:
        coordinator = await team.coordinator(
            guard=EligibilityGuard(blocked=[switch]), alarms=(KillSwitchAlarm(switch),)
        )
        running = asyncio.create_task(coordinator.run(order_saga(), saga_id="ks1"))
        await asyncio.sleep(0.3)
        team.delay.pop("charge")
        await switch.quarantine(authority, team.agents["bank"].node.did, "rogue")
        started = asyncio.get_running_loop().time()
        state = await running
        assert asyncio.get_running_loop().time() - started < 1.0  # not the 2 s timeout
        assert state.status is SagaStatus.COMPLETED
        assert handoffs(state.records) == [("charge", "quarantined", True)]
    finally:
        await switch.aclose()
        await revocations.aclose()
        await team.aclose()


async def test_open_circuit_hands_the_step_to_a_substitute_cleanly(
    transport_factory: TransportFactory, uid: str
) -> None:
    """A coordinator with circuit breakers: its breaker on the bank is open, so the charge
    step is never sent there (a clean failure, not in doubt) and goes to the other bank."""
    from agentmesh.errors import RequestTimeout
    from agentmesh.node.interceptors import InboundMessage
    from agentmesh.resilience import BreakerConfig, PeerBreakers

    team = await standard_team(transport_factory, uid)
    try:
        coordinator = await team.coordinator()
        PeerBreakers(BreakerConfig(failure_threshold=1, cool_down_ms=60_000)).install(
            coordinator.node
        )
        bank = team.agents["bank"]

        async def hang(message: InboundMessage) -> bytes:
            await asyncio.sleep(1.0)
            return b""

        bank.node.handle("slow", hang)
        with pytest.raises(RequestTimeout):
            await coordinator.node.request(bank.node.did, "slow", b"", timeout=0.05)
        state = await coordinator.run(order_saga(), saga_id="cb1")
        assert state.status is SagaStatus.COMPLETED
        assert charged_by(team, "cb1") == ["bank2"]
        assert handoffs(state.records) == [("charge", "circuit_open", False)]
    finally:
        await team.aclose()
