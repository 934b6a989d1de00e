"""Real processes over a real nats-server for the saga chaos tests.

:class:`Cluster` starts agent processes (``python -m agentmesh.saga.process agent``)
and coordinator processes, kills them with SIGKILL when told to, and checks the
outcome from the durable log (read by this process over NATS) and from the
agents' fsynced effect files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentmesh.saga import SagaLog, SagaState, SagaStatus
from agentmesh.transport.nats import NatsTransport
from iatp.identity import AgentIdentity

AGENTS = {
    "warehouse": ("inventory", "reserve,release"),
    "bank": ("payment", "charge,refund"),
    "bank2": ("payment", "charge,refund"),
    "courier": ("shipping", "ship,ship_fail"),
}


@dataclass
class Proc:
    """A child process whose stdout is drained all the time (a full pipe would block it)."""

    name: str
    process: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    pump: asyncio.Task[None] | None = None

    def start_pump(self) -> None:
        async def run() -> None:
            assert self.process.stdout is not None
            while line := await self.process.stdout.readline():
                event = json.loads(line)
                self.events.append(event)
                self.queue.put_nowait(event)
            self.queue.put_nowait(None)

        self.pump = asyncio.create_task(run())

    async def next_event(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        while True:
            event = await asyncio.wait_for(self.queue.get(), timeout)
            if event is None:
                self.queue.put_nowait(None)
                raise AssertionError(f"{self.name} exited before {name!r}: {self.events}")
            if event["event"] == name:
                return event

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)


@dataclass
class Outcome:
    statuses: Counter[str]
    duplicates: list[tuple[str, str, int]]
    skipped_compensations: list[str]
    wrong: list[str]


class Cluster:
    def __init__(self, url: str, mesh: str, tmp: Path) -> None:
        self.url = url
        self.mesh = mesh
        self.tmp = tmp
        self.effects = tmp / "effects.jsonl"
        self.procs: list[Proc] = []
        self.dids: dict[str, str] = {}
        self.seeds: dict[str, bytes] = {}
        self.agents: dict[str, Proc] = {}

    async def spawn(self, name: str, args: list[str], seed: bytes | None = None) -> Proc:
        env = {**os.environ}
        if seed is not None:
            env["SAGA_SEED"] = seed.hex()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentmesh.saga.process",
            *args,
            "--nats",
            self.url,
            "--mesh",
            self.mesh,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        proc = Proc(name, process)
        proc.start_pump()
        self.procs.append(proc)
        return proc

    async def start_agents(
        self, delays: dict[str, float] | None = None, skip: tuple[str, ...] = ()
    ) -> None:
        starting = []
        for name in AGENTS:
            if name in skip:
                continue
            seed = os.urandom(32)
            self.seeds[name] = seed
            self.dids[name] = AgentIdentity.from_seed(seed).did
            starting.append(await self._agent(name, (delays or {}).get(name, 0.0)))
        for proc in starting:
            await proc.next_event("ready", timeout=60)
            self.agents[proc.name] = proc

    async def _agent(self, name: str, delay: float) -> Proc:
        _, actions = AGENTS[name]
        args = ["agent", "--name", name, "--actions", actions, "--effects", str(self.effects)]
        if delay:
            args += ["--delay", str(delay)]
        return await self.spawn(name, args, self.seeds[name])

    async def restart_agent(self, name: str) -> Proc:
        """The same agent (same identity) in a new process, without its delay."""
        proc = await self._agent(name, 0.0)
        await proc.next_event("ready", timeout=60)
        self.agents[name] = proc
        return proc

    def directory(self) -> str:
        table: dict[str, list[str]] = {}
        for name, (capability, _) in AGENTS.items():
            if name in self.dids:
                table.setdefault(capability, []).append(self.dids[name])
        return json.dumps(table)

    async def coordinator(self, *extra: str) -> Proc:
        proc = await self.spawn(
            "coordinator",
            ["coordinator", "--directory", self.directory(), *extra],
            os.urandom(32),
        )
        return proc

    async def wait_exit(self, proc: Proc, timeout: float = 120.0) -> int:
        return await asyncio.wait_for(proc.process.wait(), timeout)

    async def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.process.wait(), 10)
            if proc.pump is not None:
                proc.pump.cancel()
                with contextlib.suppress(BaseException):
                    await proc.pump

    def effects_of(self, saga: str) -> Counter[str]:
        if not self.effects.exists():
            return Counter()
        lines = [json.loads(x) for x in self.effects.read_text().splitlines() if x.strip()]
        return Counter(e["action"] for e in lines if e["saga"] == saga)

    async def states(self, saga_ids: list[str]) -> dict[str, SagaState]:
        async with NatsTransport(self.url, name="checker") as transport:
            log = await SagaLog.open(transport, mesh=self.mesh)
            return {saga_id: await log.load(saga_id) for saga_id in saga_ids}

    async def check(self, saga_ids: list[str], failing: set[str]) -> Outcome:
        states = await self.states(saga_ids)
        outcome = Outcome(Counter(), [], [], [])
        for saga_id, state in states.items():
            outcome.statuses[state.status.value] += 1
            ran = self.effects_of(saga_id)
            outcome.duplicates += [(saga_id, a, n) for a, n in ran.items() if n > 1]
            if state.status is SagaStatus.COMPLETED:
                if saga_id in failing or ran != Counter(reserve=1, charge=1, ship=1):
                    outcome.wrong.append(f"{saga_id}: completed with {dict(ran)}")
            elif state.status is SagaStatus.COMPENSATED:
                if saga_id not in failing:
                    outcome.wrong.append(f"{saga_id}: compensated but should complete")
                for forward, undo in (("reserve", "release"), ("charge", "refund")):
                    if ran[forward] != ran[undo]:
                        outcome.skipped_compensations.append(f"{saga_id}: {forward}/{undo}")
                if ran["ship"]:
                    outcome.wrong.append(f"{saga_id}: shipped in a compensated saga")
            else:
                outcome.wrong.append(f"{saga_id}: ended {state.status.value}")
        return outcome
