"""Sagas in flight on a real 3-server cluster when a server is killed (kill -9).

Every node's transport is pinned to one server, so the test decides who loses its
server: the coordinator and the warehouse on s1, the bank (the first payment agent)
on s2, the backup bank and the courier on s3. The saga stores are replicated on all
three servers; before the kill the test moves each store's JetStream leader where
the scenario wants it (a leader stepdown with a preferred server): the saga log
stream (records), the index and its active set, the leases, and the agents'
idempotency records. A coordinator runs its recovery loop (``serve``), as a
deployment would, so a saga whose run failed is taken up again.

Four sagas run at once, two of which fail at shipping and must be compensated.
The kill comes while the bank is charging all four (its action is slow), or, for
the index, just after the coordinator logged the first shipment's outcome.
Whatever was killed, every saga must end completed or compensated as its *log*
says (the records, read back and folded, not the index), no action may run twice
on any agent, every forward effect of a compensated saga must be undone (the
team's ledger of effects), and the index and the set of unfinished sagas must
come to agree with the log (a saga left "active" is driven again and again).

``-m slow`` adds seeded rounds with random leaders, victim and moment of the kill.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
import pytest

from agentmesh.errors import TransportError
from agentmesh.saga import (
    RecordKind,
    SagaCoordinator,
    SagaDefinition,
    SagaLog,
    SagaRecord,
    SagaState,
    SagaStatus,
)
from agentmesh.saga.errors import SagaError
from agentmesh.saga.executor import idempotency_bucket
from agentmesh.saga.log import SagaStoreNames
from agentmesh.transport.base import Transport
from agentmesh.transport.nats import NatsTransport
from tests.agentmesh.saga.team import Team
from tests.conftest import TransportFactory
from tests.natscluster import NatsCluster

pytestmark = pytest.mark.nats

COORDINATOR, BANK, BACKUP = 0, 1, 2  # server indexes: s1, s2, s3
PLACEMENT = {
    "coordinator": COORDINATOR,
    "warehouse": COORDINATOR,
    "bank": BANK,
    "bank2": BACKUP,
    "courier": BACKUP,
}
SAGAS = 4  # o0 and o2 fail at shipping and are compensated
CHARGE_DELAY = 1.5  # the bank is charging every saga when the server dies
STEP_TIMEOUT = 10.0  # longer than a charge plus a failover: no handoff is needed
LEASE_TTL = 3.0
SETTLE = 20.0  # seconds every saga gets to end after the kill (an election takes 5-7)
ROUNDS = 8  # of the slow, seeded test


@dataclass(frozen=True)
class Leaders:
    """Which server leads each saga store (indexes into the cluster)."""

    log: int  # the stream of records
    index: int  # the index and the active set
    leases: int
    records: int  # the agents' idempotency records

    def streams(self, mesh: str) -> dict[str, int]:
        names = SagaStoreNames.of(mesh)
        return {
            names.stream: self.log,
            f"KV_{names.index}": self.index,
            f"KV_{names.active}": self.index,
            f"KV_{names.leases}": self.leases,
            f"KV_{idempotency_bucket(mesh)}": self.records,
        }


class PinnedFactory(TransportFactory):
    """The team's transports, each connected to the server ``PLACEMENT`` names."""

    def __init__(self, cluster: NatsCluster) -> None:
        super().__init__("nats", cluster.urls)
        self.cluster = cluster

    def build(self, name: str = "test") -> Transport:
        transport = NatsTransport(self.cluster.url(PLACEMENT[name]), name=name)
        self._made.append(transport)
        return transport


@pytest.fixture
async def factory(cluster: NatsCluster) -> AsyncIterator[PinnedFactory]:
    made = PinnedFactory(cluster)
    try:
        yield made
    finally:
        await made.aclose()


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.02)


async def leader(transport: NatsTransport, stream: str) -> str | None:
    """The name of the server leading ``stream`` (``None`` while electing)."""
    info = await asyncio.wait_for(transport.js.stream_info(stream), 2.0)
    return info.cluster.leader if info.cluster is not None else None


async def lead_from(transport: NatsTransport, stream: str, server: str) -> None:
    """Move the JetStream leader of ``stream`` to ``server`` (a preferred stepdown)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while (now := await leader(transport, stream)) != server:
        assert loop.time() < deadline, f"{stream} still led by {now}, not {server}"
        if now is not None:  # a stepdown during an election is refused: ask again
            await transport.request(
                f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}",
                json.dumps({"placement": {"preferred": server}}).encode(),
                timeout=2.0,
            )
        await asyncio.sleep(0.05)


def order(*, fails: bool) -> SagaDefinition:
    """reserve -> charge -> ship; ``fails``: the courier declines the shipment."""

    def step(name: str, capability: str, action: str, undo: str | None) -> dict[str, Any]:
        return {
            "name": name,
            "capability": capability,
            "request": {"action": action},
            "compensation": {"action": undo} if undo else None,
            "timeout_s": STEP_TIMEOUT,
            "retry": {"max_attempts": 3, "backoff_s": 0.2},
        }

    return SagaDefinition.load(
        {
            "name": "order",
            "steps": [
                step("reserve", "inventory", "reserve", "release"),
                step("charge", "payment", "charge", "refund"),
                step("ship", "shipping", "ship_fail" if fails else "ship", None),
            ],
        }
    )


async def build_team(factory: PinnedFactory, mesh: str) -> tuple[Team, SagaCoordinator]:
    team = Team(factory, mesh)
    team.failing.add("ship_fail")
    await team.agent("warehouse", ("inventory",), ("reserve", "release"))
    await team.agent("bank", ("payment",), ("charge", "refund"))
    await team.agent("bank2", ("payment",), ("charge", "refund"))
    await team.agent("courier", ("shipping",), ("ship", "ship_fail"))
    coordinator = await team.coordinator(lease_ttl=LEASE_TTL)
    for node in team.nodes:
        assert isinstance(node.transport, NatsTransport)
        assert node.transport.server_url == factory.cluster.url(PLACEMENT[node.transport.name])
    return team, coordinator


async def log_state(log: SagaLog, reader: NatsTransport, saga_id: str) -> SagaState | None:
    """The saga as its log says now (its stored records folded); None while unreadable."""
    try:
        last = await asyncio.wait_for(
            reader.js.get_last_msg(SagaStoreNames.of(log.mesh).stream, log.subject(saga_id)), 2.0
        )
        assert last.seq is not None
        records = await log.read(saga_id, until_seq=last.seq, idle=0, timeout=3.0)
    except (TransportError, SagaError, TimeoutError, nats.errors.Error):
        return None  # the stream is electing a leader: read again
    return SagaState.fold(saga_id, records)


async def ended(
    log: SagaLog, reader: NatsTransport, saga_ids: list[str], timeout: float
) -> dict[str, SagaState]:
    """Each saga's state once every one has ended, as its log says."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    states: dict[str, SagaState] = {}
    while True:
        for saga_id in saga_ids:
            if saga_id not in states or not states[saga_id].status.terminal:
                state = await log_state(log, reader, saga_id)
                if state is not None:
                    states[saga_id] = state
        if len(states) == len(saga_ids) and all(s.status.terminal for s in states.values()):
            return states
        if loop.time() > deadline:
            where = {i: states[i].status.value if i in states else "unreadable" for i in saga_ids}
            raise AssertionError(f"sagas not ended {timeout}s after the kill: {where}")
        await asyncio.sleep(0.5)  # each read is a JetStream consumer: poll gently


def trail(state: SagaState) -> str:
    """The saga's records, for a failure message."""
    return "; ".join(
        " ".join(
            str(part) for part in (record.kind.value, record.step, record.data.get("code")) if part
        )
        for record in state.records
    )


def check_outcomes(team: Team, states: dict[str, SagaState], failing: set[str]) -> None:
    """Each saga ended as it should, and the agents' effects say the same."""
    problems = []
    for saga_id, state in sorted(states.items()):
        status = state.status
        ran = Counter(e[1] for e in team.ledger.effects if e[2] == saga_id)
        twice = {action: n for action, n in ran.items() if n > 1}
        if twice:
            problems.append(f"{saga_id}: ran twice {twice}")
        if saga_id in failing and status is not SagaStatus.COMPENSATED:
            problems.append(f"{saga_id}: {status.value}, should be compensated (shipping failed)")
        if saga_id not in failing and status is not SagaStatus.COMPLETED:
            problems.append(f"{saga_id}: {status.value}, should be completed (nothing failed)")
        if status is SagaStatus.COMPLETED:
            if ran != Counter(reserve=1, charge=1, ship=1):
                problems.append(f"{saga_id}: completed with effects {dict(ran)}")
            continue
        for forward, undo in (("reserve", "release"), ("charge", "refund")):
            if ran[forward] != ran[undo]:
                problems.append(f"{saga_id}: {forward} x{ran[forward]} but {undo} x{ran[undo]}")
        if ran["ship"]:
            problems.append(f"{saga_id}: shipped (no compensation), yet {status.value}")
    logs = {saga_id: trail(state) for saga_id, state in sorted(states.items())}
    assert problems == [], f"{problems}\nlogs: {json.dumps(logs, indent=1)}"


async def check_index(
    log: SagaLog, states: dict[str, SagaState], coordinator: SagaCoordinator, timeout: float
) -> None:
    """The index and the active set come to agree with the log (nothing left to drive)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        problems = []
        try:
            active = set(await log.unfinished())
            for saga_id, state in sorted(states.items()):
                entry = await log.entry(saga_id)
                if entry.status != state.status.value:
                    problems.append(f"{saga_id}: the index says {entry.status}")
                if saga_id in active:
                    problems.append(f"{saga_id}: still in the active set")
        except (TransportError, SagaError) as exc:
            problems.append(f"index unreadable: {exc!r}")
        if not problems:
            return
        if loop.time() > deadline:
            raise AssertionError(
                f"{timeout}s after every saga ended (log: "
                f"{ {i: s.status.value for i, s in states.items()} }): {problems}; "
                f"the coordinator resumed sagas {coordinator.counters.resumed} times"
            )
        await asyncio.sleep(0.2)


async def run_with_kill(
    cluster: NatsCluster,
    factory: PinnedFactory,
    mesh: str,
    leaders: Leaders,
    *,
    kill: int | None,
    kill_after: Callable[[SagaRecord], bool] | None = None,
) -> tuple[Team, dict[str, SagaState]]:
    """Run ``SAGAS`` sagas, kill a server on the way, check how every saga ended.

    ``kill``: the server to kill, ``None`` for the leader of the saga log stream as
    the cluster reports it. ``kill_after``: kill right after the coordinator logs the
    first record it matches; ``None``: while the bank is charging every saga.
    """
    team, coordinator = await build_team(factory, mesh)
    probe = NatsTransport(cluster.urls, name="probe")
    await probe.connect()
    killed: list[int] = []

    def kill_now() -> None:
        assert not killed
        assert log_leader is not None
        victim = kill if kill is not None else cluster.index_of(log_leader)
        killed.append(victim)
        cluster.kill(victim)

    def kill_on(record: SagaRecord) -> None:
        if kill_after is not None and kill_after(record) and not killed:
            kill_now()

    try:
        for stream, server in leaders.streams(mesh).items():
            await lead_from(probe, stream, f"s{server + 1}")
        log_leader = await leader(probe, SagaStoreNames.of(mesh).stream)
        assert log_leader == f"s{leaders.log + 1}"
        if kill_after is None:
            team.delay["charge"] = CHARGE_DELAY
        else:
            coordinator.after_append = kill_on
        coordinator.serve()  # takes over a saga whose run failed, as a replica would
        saga_ids = [f"o{i}" for i in range(SAGAS)]
        failing = {saga_id for i, saga_id in enumerate(saga_ids) if i % 2 == 0}
        for saga_id in saga_ids:
            await coordinator.submit(order(fails=saga_id in failing), saga_id=saga_id)
            coordinator.start(saga_id)
        if kill_after is None:
            bank = team.agents["bank"].executor
            await until(
                lambda: bank.counters.per_action.get("charge", 0) == SAGAS,
                timeout=20,
                what="the bank charging every saga",
            )
            assert team.ledger.ran("charge") == 0  # every charge is in flight
            kill_now()
        else:
            await until(lambda: bool(killed), timeout=20, what="the record to kill after")
        reader = NatsTransport(cluster.url((killed[0] + 1) % 3), name="reader")
        await reader.connect()
        try:
            log = await SagaLog.open(reader, mesh=mesh)
            states = await ended(log, reader, saga_ids, SETTLE)
            check_outcomes(team, states, failing)
            await check_index(log, states, coordinator, timeout=LEASE_TTL + 5)
        finally:
            await reader.aclose()
        return team, states
    finally:
        await coordinator.aclose()
        await probe.aclose()
        await team.aclose()


async def test_the_step_agents_server_dies_mid_step(
    cluster: NatsCluster, factory: PinnedFactory, uid: str
) -> None:
    """The bank loses its server while charging; it fails over and its replies arrive."""
    stores_elsewhere = Leaders(log=BACKUP, index=BACKUP, leases=BACKUP, records=BACKUP)
    team, states = await run_with_kill(cluster, factory, uid, stores_elsewhere, kill=BANK)
    charged = {e[2]: e[0] for e in team.ledger.effects if e[1] == "charge"}
    assert charged == dict.fromkeys(states, "bank")  # no handoff was needed
    bank = team.agents["bank"].node.transport
    assert isinstance(bank, NatsTransport)
    assert bank.server_url not in (None, cluster.url(BANK))


async def test_the_step_agents_server_dies_while_leading_the_idempotency_records(
    cluster: NatsCluster, factory: PinnedFactory, uid: str
) -> None:
    """The bank's server also leads the bucket where agents record what they ran."""
    leaders = Leaders(log=BACKUP, index=BACKUP, leases=BACKUP, records=BANK)
    await run_with_kill(cluster, factory, uid, leaders, kill=BANK)


async def test_the_saga_log_leader_dies_mid_step(
    cluster: NatsCluster, factory: PinnedFactory, uid: str
) -> None:
    """The log's leader (and the leases') is a server only the backup agents use."""
    leaders = Leaders(log=BACKUP, index=COORDINATOR, leases=BACKUP, records=COORDINATOR)
    await run_with_kill(cluster, factory, uid, leaders, kill=None)


async def test_the_saga_log_leader_dies_with_the_coordinators_connection(
    cluster: NatsCluster, factory: PinnedFactory, uid: str
) -> None:
    """The log's leader is the coordinator's own server: the coordinator fails over too."""
    leaders = Leaders(log=COORDINATOR, index=BACKUP, leases=COORDINATOR, records=BACKUP)
    await run_with_kill(cluster, factory, uid, leaders, kill=None)


async def test_the_saga_index_leader_dies_as_sagas_end(
    cluster: NatsCluster, factory: PinnedFactory, uid: str
) -> None:
    """The index (and active set) loses its leader just before the sagas' last records."""
    leaders = Leaders(log=BACKUP, index=BANK, leases=BACKUP, records=COORDINATOR)

    def shipping_decided(record: SagaRecord) -> bool:
        done = (RecordKind.STEP_SUCCEEDED, RecordKind.STEP_FAILED)
        return record.step == "ship" and record.kind in done

    await run_with_kill(cluster, factory, uid, leaders, kill=BANK, kill_after=shipping_decided)


def nth_record(count: int) -> Callable[[SagaRecord], bool]:
    """Matches the ``count``-th record the coordinator logs."""
    seen = [0]

    def match(record: SagaRecord) -> bool:
        seen[0] += 1
        return seen[0] == count

    return match


@pytest.mark.slow
async def test_random_server_kills_while_sagas_run(cluster: NatsCluster, uid: str) -> None:
    """Seeded rounds: random leaders, a random server killed after a random record."""
    rng = random.Random(2026)
    tally: Counter[str] = Counter()
    problems: list[str] = []
    for round_ in range(ROUNDS):
        leaders = Leaders(*(rng.randrange(3) for _ in range(4)))
        victim = rng.randrange(3)
        count = rng.randint(1, 30)  # four sagas log at least 32 records
        factory = PinnedFactory(cluster)
        try:
            _, states = await run_with_kill(
                cluster,
                factory,
                f"{uid}r{round_}",
                leaders,
                kill=victim,
                kill_after=nth_record(count),
            )
            tally.update(state.status.value for state in states.values())
        except AssertionError as exc:
            problems.append(
                f"round {round_} ({leaders}, s{victim + 1} after record {count}): {exc}"
            )
        finally:
            await factory.aclose()
            if not cluster.servers[victim].running:
                cluster.restart(victim)
    print(f"\nsagas through random server kills (seed 2026): {dict(tally)}")
    assert problems == [], "\n".join(problems)
