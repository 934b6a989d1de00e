"""Chaos across processes over a real nats-server (seeded).

* ``kill -9`` the coordinator process at random points (after a random number of
  its durable records, or after a random delay) while it drives several sagas; a
  replica process (another identity) resumes them. Every saga must end completed
  or fully compensated, no action may run twice, no compensation may be skipped.
* ``kill -9`` an agent process in the middle of its step: the step is handed off
  to the other agent with the capability and the saga completes.
* quarantine an agent (signed revocation entry) while it runs a step: the
  coordinator process abandons it in flight and hands off.

The default run does a few trials; ``-m slow`` runs many and prints the tally.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from agentmesh.directory.revocations import RevocationList
from agentmesh.saga import RecordKind, SagaStatus
from agentmesh.transport.nats import NatsTransport
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities, RevocationKind, sign_revocation
from tests.agentmesh.saga.chaos import Cluster
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

SAGAS_PER_TRIAL = 4
FAIL_EVERY = 2  # sagas 0, 2, ... fail at shipping and must be compensated
RECORDS_PER_SAGA = 10  # about: 8 when completing, 13 when compensating


async def coordinator_kill_trials(tmp: Path, trials: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    tally: Counter[str] = Counter()
    problems: list[str] = []
    with NatsServerProcess() as server:
        cluster = Cluster(server.url, f"chaos{seed}", tmp)
        try:
            await cluster.start_agents(delays=dict.fromkeys(("warehouse", "bank", "courier"), 0.02))
            for trial in range(trials):
                prefix = f"t{trial}"
                common = [
                    "--submit",
                    str(SAGAS_PER_TRIAL),
                    "--prefix",
                    prefix,
                    "--fail-every",
                    str(FAIL_EVERY),
                    "--lease-ttl",
                    "1.0",
                ]
                if trial % 2 == 0:
                    crash_at = rng.randint(1, SAGAS_PER_TRIAL * RECORDS_PER_SAGA)
                    first = await cluster.coordinator(
                        *common, "--crash-after-appends", str(crash_at), "--exit-when-idle"
                    )
                    how = f"after record {crash_at}"
                else:
                    first = await cluster.coordinator(*common)
                    await first.next_event("ready", timeout=60)
                    delay = rng.uniform(0.0, 0.6)
                    await asyncio.sleep(delay)
                    first.kill()
                    how = f"after {delay:.2f}s"
                code = await cluster.wait_exit(first)
                tally["killed" if code == -9 else "finished before the kill"] += 1
                replica = await cluster.coordinator(*common, "--exit-when-idle")
                assert await cluster.wait_exit(replica) == 0, replica.events
                ids = [f"{prefix}-{i}" for i in range(SAGAS_PER_TRIAL)]
                failing = {f"{prefix}-{i}" for i in range(0, SAGAS_PER_TRIAL, FAIL_EVERY)}
                outcome = await cluster.check(ids, failing)
                tally.update(outcome.statuses)
                for item in outcome.duplicates:
                    problems.append(f"trial {trial} ({how}): ran twice {item}")
                for item in outcome.skipped_compensations + outcome.wrong:
                    problems.append(f"trial {trial} ({how}): {item}")
        finally:
            await cluster.close()
    report = {"trials": trials, "sagas": trials * SAGAS_PER_TRIAL, "tally": dict(tally)}
    print(f"\nsaga chaos (coordinator kill -9), seed {seed}: {report}")
    assert problems == [], problems
    assert tally["completed"] + tally["compensated"] == trials * SAGAS_PER_TRIAL
    return report


async def test_coordinator_killed_at_random_points_then_replica_finishes(tmp_path: Path) -> None:
    await coordinator_kill_trials(tmp_path, trials=2, seed=7)


@pytest.mark.slow
async def test_coordinator_kill_chaos_many_trials(tmp_path: Path) -> None:
    await coordinator_kill_trials(tmp_path, trials=24, seed=2026)


async def test_agent_killed_mid_step_is_handed_off(tmp_path: Path) -> None:
    with NatsServerProcess() as server:
        cluster = Cluster(server.url, "agentkill", tmp_path)
        try:
            await cluster.start_agents(delays={"bank": 5.0})
            coordinator = await cluster.coordinator(
                "--submit", "1", "--prefix", "k", "--step-timeout", "1.5", "--exit-when-idle"
            )
            bank = cluster.agents["bank"]
            event = await bank.next_event("action", timeout=60)
            assert event["action"] == "charge"
            bank.kill()  # mid-step: the action started, never finished
            assert await cluster.wait_exit(coordinator) == 0, coordinator.events
            state = (await cluster.states(["k-0"]))["k-0"]
            assert state.status is SagaStatus.COMPLETED
            handoffs = [r for r in state.records if r.kind is RecordKind.STEP_HANDOFF]
            assert [(r.step, r.agent) for r in handoffs] == [("charge", cluster.dids["bank"])]
            assert cluster.effects_of("k-0") == Counter(reserve=1, charge=1, ship=1)
            assert state.steps["charge"].result == {"by": "bank2", "action": "charge"}
        finally:
            await cluster.close()


async def test_agent_quarantined_mid_step_is_handed_off(tmp_path: Path) -> None:
    authority = AgentIdentity.generate()
    with NatsServerProcess() as server:
        cluster = Cluster(server.url, "quarantine", tmp_path)
        try:
            await cluster.start_agents(delays={"bank": 3.0})
            coordinator = await cluster.coordinator(
                "--submit",
                "1",
                "--prefix",
                "q",
                "--step-timeout",
                "10",
                "--revocation-authority",
                authority.did,
                "--exit-when-idle",
            )
            bank = cluster.agents["bank"]
            await bank.next_event("action", timeout=60)
            # Each phase bounded, so a hang names its phase instead of the test timeout.
            async with (
                asyncio.timeout(30),
                NatsTransport(server.url, name="authority") as transport,
            ):
                revocations = RevocationList(
                    transport,
                    mesh="quarantine",
                    authorities=RevocationAuthorities(mesh=frozenset({authority.did})),
                )
                await revocations.start()
                await revocations.issue(
                    sign_revocation(
                        authority,
                        subject=cluster.dids["bank"],
                        kind=RevocationKind.QUARANTINED,
                        reason="chaos",
                        issued_at_ms=1,
                        sequence=1,
                    )
                )
                await revocations.aclose()
            started = asyncio.get_running_loop().time()
            assert await cluster.wait_exit(coordinator) == 0, coordinator.events
            # handed off in flight, not after the 10 s step timeout
            assert asyncio.get_running_loop().time() - started < 8
            async with asyncio.timeout(30):
                state = (await cluster.states(["q-0"]))["q-0"]
            assert state.status is SagaStatus.COMPLETED
            handoffs = [r for r in state.records if r.kind is RecordKind.STEP_HANDOFF]
            assert [(r.step, r.data["reason"]) for r in handoffs] == [("charge", "quarantined")]
            assert state.steps["charge"].result == {"by": "bank2", "action": "charge"}
        finally:
            await cluster.close()


async def test_agent_killed_mid_step_and_restarted_reports_in_doubt(tmp_path: Path) -> None:
    """No substitute: the agent restarts (same DID, new process) and its KV-backed
    idempotency record says the interrupted charge is in doubt, so it is not run
    again; the saga compensates, and the refund undoes only what really happened."""
    with NatsServerProcess() as server:
        cluster = Cluster(server.url, "restart", tmp_path)
        try:
            await cluster.start_agents(delays={"bank": 30.0}, skip=("bank2",))
            coordinator = await cluster.coordinator(
                "--submit", "1", "--prefix", "r", "--step-timeout", "4", "--exit-when-idle"
            )
            event = await cluster.agents["bank"].next_event("action", timeout=60)
            assert event["action"] == "charge"
            cluster.agents["bank"].kill()
            await cluster.wait_exit(cluster.agents["bank"])
            await cluster.restart_agent("bank")
            assert await cluster.wait_exit(coordinator) == 0, coordinator.events
            state = (await cluster.states(["r-0"]))["r-0"]
            assert state.status is SagaStatus.COMPENSATED
            failed = [r for r in state.records if r.kind is RecordKind.STEP_FAILED]
            assert [(r.step, r.data["code"], r.data["in_doubt"]) for r in failed] == [
                ("charge", "interrupted", True)
            ]
            # charge never took effect, so nothing was refunded; the reservation was released
            assert cluster.effects_of("r-0") == Counter(reserve=1, release=1)
            refund = [
                r
                for r in state.records
                if r.kind is RecordKind.COMPENSATION_SUCCEEDED and r.step == "charge"
            ]
            assert refund[0].data["result"]["noop"] is True
        finally:
            await cluster.close()
