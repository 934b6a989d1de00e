"""Sagas over a real nats-server (JetStream), across processes, vs plain signed requests.

From the saga issue: saga throughput and per-step overhead over NATS, against the
same steps sent as plain signed requests in the same run. Every case starts its
own ``nats-server`` (loopback, JetStream on, file storage) and one agent process
(``python -m agentmesh.saga.process agent --plain``) that runs the step actions
through its :class:`StepExecutor` *and* answers the same action as a plain signed
request (``saga.bench.plain``). This process runs a :class:`SagaCoordinator` (the
subject) and a plain :class:`MeshNode` client (the floor) on one event loop.

What a saga step costs on top of a plain signed request: two durable log appends
(``step.started`` before the request, ``step.succeeded`` after it, each awaiting
the JetStream ack and signed), and at the agent the idempotency record (a KV read,
a create before the action, an update after it). A saga adds its own start and end
(index and lease writes, a resume marker and a log read, the start and end
records).

* **3-step saga** (latency): one saga of three steps, end to end, against three
  sequential plain signed requests.
* **steps of a 10-step saga** (throughput, op = one step): per-step cost inside a
  long saga, against plain signed requests; the ``overhead/op`` row is the
  per-step overhead.
* **16 concurrent 3-step sagas** (throughput, op = one saga): against 16 concurrent
  chains of three plain requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter
from typing import IO, Any

from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.saga import (
    CoordinatorConfig,
    SagaCoordinator,
    SagaDefinition,
    SagaLog,
    SagaStatus,
    StaticDirectory,
)
from agentmesh.saga.process import PLAIN_TYPE
from agentmesh.transport.nats import NatsTransport
from benchmarks.harness import Benchmark, Pair, RunConfig, at_least
from iatp.identity import AgentIdentity
from tests.natsserver import NatsServerProcess

BENCHMARK = Benchmark(
    name="saga",
    title="Sagas over NATS (JetStream log, idempotent agent) vs plain signed requests",
    description=(
        "Each case starts its own `nats-server` (loopback, JetStream, file storage) and one "
        "agent process running the step actions behind its `StepExecutor` (KV idempotency "
        "records) and the same action as a plain signed request. Subject: a "
        "`SagaCoordinator` in this process (every state change appended to the JetStream "
        "saga log, signed, before it acts). Floor: the same steps as plain "
        "`MeshNode.request` calls from this process to the same agent. `overhead/op` is "
        "per saga (latency, concurrent) or per step (10-step saga). Goals are this "
        "project's, not the issue's (it names none): a durable, crash-safe step should "
        "keep at least a quarter of a plain request's throughput."
    ),
)

ROOT = Path(__file__).resolve().parent.parent
MESH = "benchsaga"
TIMEOUT = 10.0


class AgentProcess:
    def __init__(self, url: str) -> None:
        seed = os.urandom(32)
        self.did = AgentIdentity.from_seed(seed).did
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentmesh.saga.process",
                "agent",
                "--nats",
                url,
                "--mesh",
                MESH,
                "--name",
                "bench",
                "--actions",
                "work,undo",
                "--plain",
                "--quiet",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, "SAGA_SEED": seed.hex()},
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line or json.loads(line).get("event") != "ready":
            self._stderr.seek(0)
            raise RuntimeError(f"agent did not start: {self._stderr.read()[-2000:]!r}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


def definition(steps: int) -> SagaDefinition:
    return SagaDefinition.load(
        {
            "name": "bench",
            "steps": [
                {
                    "name": f"s{i}",
                    "capability": "work",
                    "request": {"action": "work", "params": {"i": i}},
                    "compensation": {"action": "undo"},
                    "timeout_s": TIMEOUT,
                }
                for i in range(steps)
            ],
        }
    )


class Side:
    """This process: the coordinator (subject) and a plain client (floor), one loop."""

    coordinator: SagaCoordinator
    client: MeshNode
    agent: str

    @classmethod
    async def start(cls, url: str, agent: str) -> Side:
        self = cls()
        self.agent = agent
        node = MeshNode(
            AgentIdentity.generate(),
            NatsTransport(url, name="bench-coordinator"),
            config=NodeConfig(mesh=MESH),
        )
        await node.start()
        self.client = MeshNode(
            AgentIdentity.generate(),
            NatsTransport(url, name="bench-plain"),
            config=NodeConfig(mesh=MESH),
        )
        await self.client.start()
        self.coordinator = SagaCoordinator(
            node,
            await SagaLog.open(node.transport, mesh=MESH),
            finder=StaticDirectory({"work": [agent]}),
            config=CoordinatorConfig(lease_ttl=30.0),
        )
        return self

    async def aclose(self) -> None:
        await self.coordinator.aclose()
        await self.coordinator.node.aclose()
        await self.client.aclose()

    async def saga(self, steps: int) -> None:
        state = await self.coordinator.run(definition(steps))
        if state.status is not SagaStatus.COMPLETED:
            trail = [(r.kind.value, r.step, r.data.get("code")) for r in state.records]
            raise RuntimeError(f"benchmark saga ended {state.status.value}: {trail}")

    async def plain(self, steps: int) -> None:
        for i in range(steps):
            body = json.dumps({"i": i}).encode()
            await self.client.request(self.agent, PLAIN_TYPE, body, timeout=TIMEOUT)


def _setup(stack: contextlib.ExitStack) -> tuple[asyncio.AbstractEventLoop, Side]:
    server = NatsServerProcess()
    stack.callback(server.close)
    server.start()
    agent = AgentProcess(server.url)
    stack.callback(agent.close)
    loop = asyncio.new_event_loop()
    stack.callback(loop.close)
    side = loop.run_until_complete(Side.start(server.url, agent.did))
    stack.callback(lambda: loop.run_until_complete(side.aclose()))
    return loop, side


@BENCHMARK.latency(
    "3-step saga",
    subject="`SagaCoordinator.run` of a 3-step saga (one agent process), end to end",
    floor="three sequential plain signed `MeshNode.request` calls to the same agent",
    quick_ops=10,
)
def three_steps(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop, side = _setup(stack)

        async def timed(n: int, run: Any) -> list[float]:
            latencies = []
            for _ in range(n):
                start = perf_counter()
                await run(3)
                latencies.append(perf_counter() - start)
            return latencies

        yield Pair(
            lambda n: loop.run_until_complete(timed(n, side.saga)),
            lambda n: loop.run_until_complete(timed(n, side.plain)),
        )


@BENCHMARK.throughput(
    "steps of a 10-step saga",
    subject="steps/s inside 10-step sagas (op = one durable, idempotent step)",
    floor="plain signed requests/s to the same agent, one at a time",
    goal=at_least(0.25),
    quick_ops=20,
)
def long_saga_steps(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop, side = _setup(stack)

        async def sagas(n: int) -> float:
            start = perf_counter()
            for _ in range(max(1, n // 10)):
                await side.saga(10)
            return (perf_counter() - start) * n / (max(1, n // 10) * 10)

        async def plain(n: int) -> float:
            start = perf_counter()
            await side.plain(n)
            return perf_counter() - start

        yield Pair(
            lambda n: loop.run_until_complete(sagas(n)),
            lambda n: loop.run_until_complete(plain(n)),
        )


CONCURRENCY = 16


@BENCHMARK.throughput(
    "16 concurrent 3-step sagas",
    subject=f"{CONCURRENCY} 3-step sagas at a time (op = one saga)",
    floor=f"{CONCURRENCY} chains of three plain signed requests at a time",
    goal=at_least(0.25),
    quick_ops=CONCURRENCY,
)
def concurrent_sagas(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop, side = _setup(stack)

        async def batch(n: int, run: Any) -> float:
            start = perf_counter()
            for offset in range(0, n, CONCURRENCY):
                size = min(CONCURRENCY, n - offset)
                await asyncio.gather(*(run(3) for _ in range(size)))
            return perf_counter() - start

        yield Pair(
            lambda n: loop.run_until_complete(batch(n, side.saga)),
            lambda n: loop.run_until_complete(batch(n, side.plain)),
        )
