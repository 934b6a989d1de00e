"""Faults, composable with any scenario: what breaks, when, and for whom.

:class:`FaultPlan` answers the driver's questions for both fidelities (is this
message lost, can these two agents reach each other, who is crashed this round);
:class:`FaultyTransport` wraps a mesh node's transport and applies the
message-level faults to its real publishes: latency with jitter, loss,
duplication, reordering and partitions. Clock skew is a per-node clock offset
(mesh fidelity); crashes close a node and start it again (same identity).

Fault kinds and parameters (``FaultSpec.params``):

=============  ================================================================
``latency``    ``ms`` (mean), ``jitter_ms``
``loss``       ``rate`` (0..1)
``duplicate``  ``rate``
``reorder``    ``rate``, ``hold_ms`` (a held message overtaken by the next)
``partition``  ``mode``: ``halves`` (random halves) or ``isolate`` (``agent``)
``clock_skew`` ``ms`` for ``agent`` (default: the last agent)
``crash``      ``agent`` (index; default: a random honest one)
``kill``       ``host`` (default 1): every agent of one host process is down
               (``kill -9`` of the process in a run across processes, started
               again with the same identities when the window ends; elsewhere a
               crash of the agents that host would hold, ``index % hosts``)
``server_restart`` ``down_ms`` (default 1000): ``kill -9`` of the ``nats-server``
               at the window's start and a restart on the same port and store
               (only on a server the simulation started, ``--nats local``;
               elsewhere recorded as skipped)
=============  ================================================================
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from agentmesh.transport.base import (
    KeyValue,
    Message,
    MessageHandler,
    Stream,
    Subscription,
    Transport,
    TransportState,
)
from simulations.spec import FaultSpec, ScenarioError

if TYPE_CHECKING:
    from simulations.driver import SimAgent


def _num(fault: FaultSpec, name: str, default: float) -> float:
    value = fault.params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"fault {fault.kind}.{name} must be a number, got {value!r}")
    return float(value)


class FaultPlan:
    """The scenario's faults over its agents, seeded (see the module docstring)."""

    def __init__(
        self,
        faults: Sequence[FaultSpec],
        agents: Sequence[SimAgent],
        seed: int,
        *,
        hosts: int = 3,
    ) -> None:
        self.faults = list(faults)
        self.agents = agents
        self.hosts = hosts
        self.rng = random.Random(seed * 104_729)
        self._halves: dict[int, set[int]] = {}
        self._crash_targets: dict[int, int] = {}
        honest = [a.index for a in agents if not a.rogue] or [0]
        for number, fault in enumerate(self.faults):
            if fault.kind == "partition" and fault.params.get("mode", "halves") == "halves":
                side = self.rng.sample(range(len(agents)), len(agents) // 2)
                self._halves[number] = set(side)
            if fault.kind == "crash":
                target = fault.params.get("agent")
                self._crash_targets[number] = (
                    int(target) if isinstance(target, int) else self.rng.choice(honest)
                )

    def active(self, round_no: int, kind: str) -> list[tuple[int, FaultSpec]]:
        return [(n, f) for n, f in enumerate(self.faults) if f.kind == kind and f.active(round_no)]

    def lost(self, round_no: int) -> bool:
        if not self.faults:
            return False
        return any(
            self.rng.random() < _num(f, "rate", 0.05) for _, f in self.active(round_no, "loss")
        )

    def reachable(self, round_no: int, a: int, b: int) -> bool:
        if not self.faults:
            return True
        for number, fault in self.active(round_no, "partition"):
            if fault.params.get("mode", "halves") == "isolate":
                isolated = int(_num(fault, "agent", 0))
                if isolated in (a, b) and a != b:
                    return False
            elif (a in self._halves[number]) != (b in self._halves[number]):
                return False
        return True

    def crash_round(self, round_no: int) -> list[tuple[SimAgent, bool]]:
        """Crash or restart agents for the round after ``round_no``; returns the changes."""
        changes: list[tuple[SimAgent, bool]] = []
        down: dict[int, bool] = {}
        for number, fault in enumerate(self.faults):
            active = fault.active(round_no + 1)
            if fault.kind == "crash":
                target = self._crash_targets[number]
                down[target] = down.get(target, False) or active
            elif fault.kind == "kill":
                for index in self.hosted_by(self.killed_host(fault)):
                    down[index] = down.get(index, False) or active
        for index, is_down in sorted(down.items()):
            agent = self.agents[index]
            if agent.crashed != is_down:
                agent.crashed = is_down
                changes.append((agent, is_down))
        return changes

    def crashed_by_crash_fault(self, index: int, round_no: int) -> bool:
        """Whether a ``crash`` fault (not a ``kill``) holds agent ``index`` down."""
        return any(
            fault.kind == "crash" and fault.active(round_no) and self._crash_targets[n] == index
            for n, fault in enumerate(self.faults)
        )

    def killed_host(self, fault: FaultSpec) -> int:
        return int(_num(fault, "host", 1)) % self.hosts

    def hosted_by(self, host: int) -> list[int]:
        """The agents host process ``host`` holds (``index % hosts``)."""
        return [a.index for a in self.agents if a.index % self.hosts == host]

    def starting(self, round_no: int, kind: str) -> list[FaultSpec]:
        """Faults of ``kind`` whose window opens at ``round_no``."""
        return [f for f in self.faults if f.kind == kind and f.start == round_no]

    def skew_ms(self, index: int) -> int:
        total = 0
        for fault in self.faults:
            if fault.kind == "clock_skew":
                target = int(_num(fault, "agent", len(self.agents) - 1))
                if target == index:
                    total += int(_num(fault, "ms", 0))
        return total


class FaultyTransport:
    """A transport that loses, delays, duplicates and reorders what it publishes.

    ``round_no`` is read at each publish (faults follow the scenario's windows);
    ``peer_of`` maps a subject to the agent index it reaches (for partitions).
    """

    def __init__(
        self,
        inner: Transport,
        plan: FaultPlan,
        me: int,
        round_no: Callable[[], int],
        peer_of: Callable[[str], int | None],
        stats: dict[str, int],
    ) -> None:
        self.inner = inner
        self.plan = plan
        self.me = me
        self._round = round_no
        self._peer_of = peer_of
        self.stats = stats
        self._held: list[tuple[str, bytes, str | None, Mapping[str, str] | None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # -- faults on publish ------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        round_no = self._round()
        peer = self._peer_of(subject)
        if peer is not None and not self.plan.reachable(round_no, self.me, peer):
            self.stats["partitioned"] = self.stats.get("partitioned", 0) + 1
            return
        if self.plan.lost(round_no):
            self.stats["lost"] = self.stats.get("lost", 0) + 1
            return
        delay = 0.0
        for _, fault in self.plan.active(round_no, "latency"):
            mean, jitter = _num(fault, "ms", 5.0), _num(fault, "jitter_ms", 0.0)
            delay += max(0.0, self.plan.rng.gauss(mean, jitter)) / 1000
        copies = 1
        for _, fault in self.plan.active(round_no, "duplicate"):
            if self.plan.rng.random() < _num(fault, "rate", 0.05):
                copies += 1
                self.stats["duplicated"] = self.stats.get("duplicated", 0) + 1
        for _, fault in self.plan.active(round_no, "reorder"):
            if self.plan.rng.random() < _num(fault, "rate", 0.05):
                self.stats["reordered"] = self.stats.get("reordered", 0) + 1
                delay += _num(fault, "hold_ms", 20.0) / 1000
        for _ in range(copies):
            if delay > 0:
                self._later(delay, subject, data, reply, headers)
            else:
                await self.inner.publish(subject, data, reply=reply, headers=headers)

    def _later(
        self,
        delay: float,
        subject: str,
        data: bytes,
        reply: str | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        async def send() -> None:
            await asyncio.sleep(delay)
            if self.inner.is_connected:
                await self.inner.publish(subject, data, reply=reply, headers=headers)

        task = asyncio.get_running_loop().create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- everything else is the inner transport's -------------------------------------

    @property
    def max_payload(self) -> int:
        return self.inner.max_payload

    @property
    def is_connected(self) -> bool:
        return self.inner.is_connected

    @property
    def state(self) -> TransportState:
        return self.inner.state

    async def connect(self, *, timeout: float = 5.0) -> None:
        await self.inner.connect(timeout=timeout)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.inner.aclose()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str | None = None
    ) -> Subscription:
        return await self.inner.subscribe(subject, handler, queue=queue)

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        return await self.inner.request(subject, data, timeout=timeout, headers=headers)

    def new_inbox(self) -> str:
        return self.inner.new_inbox()

    async def flush(self, *, timeout: float = 2.0) -> None:
        await self.inner.flush(timeout=timeout)

    async def key_value(self, bucket: str, **options: Any) -> KeyValue:
        return await self.inner.key_value(bucket, **options)

    async def stream(self, name: str, subjects: list[str], **options: Any) -> Stream:
        return await self.inner.stream(name, subjects, **options)


__all__ = ["FaultPlan", "FaultyTransport"]
