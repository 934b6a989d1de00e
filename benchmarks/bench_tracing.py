"""What OpenTelemetry tracing costs, on and off (issue: traces across processes).

Tracing is off unless a tracer is installed (``agentmesh.telemetry.tracer``); off,
the message path pays one module-attribute load and a ``None`` check. That is
measured by ``mesh`` (signed request/reply vs raw nats-py) against its figure
before tracing existed (docs/benchmarks.md history). Here, in one run:

* **signed request/reply over NATS, tracing on vs off**: two nodes in this process
  on a real ``nats-server``; the subject installs a tracer with the SDK's in-memory
  exporter (batch processor: spans are exported off the request path, as in
  production), the floor runs with no tracer. Each request makes four spans (client,
  receive, handle, and the reply's context injection).
* **governed tool call, tracing on vs off**: a ``@governed`` tool (policy decision
  plus audit-free governor) with and without its ``agentmesh.tool`` span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from time import perf_counter

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentmesh import telemetry
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.observability.tracing import MeshTracer
from agentmesh.policy import CompiledPolicy, Governor, PolicyEngine, acting_as, governed
from agentmesh.transport.nats import NatsTransport
from benchmarks.harness import Benchmark, Pair, RunConfig, async_stack, at_most, event_loop
from iatp.identity import AgentIdentity
from tests.natsserver import NatsServerProcess

BENCHMARK = Benchmark(
    name="tracing",
    title="OpenTelemetry tracing: on (in-memory exporter) vs off",
    description=(
        "Subject: the same operation with a `MeshTracer` installed (SDK batch span "
        "processor into the in-memory exporter, no network export). Floor: tracing off "
        "(no tracer: the shipped default). Goals are this project's: tracing on should "
        "cost at most half of a signed request/reply over NATS; a governed tool call "
        "(a policy decision of a few microseconds) is bounded by the SDK's own cost of "
        "starting and ending a span in CPython (about 20 µs), so its goal is 5x."
    ),
)

MESH = "benchtrace"


class Traced:
    """Installs a tracer for the duration of one subject round."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer = MeshTracer.with_exporters([self.exporter], service_name="bench")

    @contextlib.contextmanager
    def on(self) -> Iterator[None]:
        previous = telemetry.install_tracer(self.tracer)
        try:
            yield
        finally:
            telemetry.install_tracer(previous)
            self.tracer.force_flush()
            self.exporter.clear()


async def _echo(message: InboundMessage) -> bytes:
    return message.body


@BENCHMARK.latency(
    "signed request/reply over NATS",
    subject="`MeshNode.request` with tracing on (4 spans per request)",
    floor="the same request with tracing off",
    goal=at_most(1.5, metric="p50"),
)
def request_reply(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        server = NatsServerProcess()
        stack.callback(server.close)
        server.start()
        loop = event_loop(stack)
        astack = async_stack(stack, loop)

        async def start() -> tuple[MeshNode, MeshNode]:
            nodes = []
            for name in ("client", "server"):
                node = MeshNode(
                    AgentIdentity.generate(),
                    NatsTransport(server.url, name=name),
                    config=NodeConfig(mesh=MESH),
                )
                await astack.enter_async_context(node)
                nodes.append(node)
            nodes[1].handle("echo", _echo)
            return nodes[0], nodes[1]

        client, peer = loop.run_until_complete(start())
        traced = Traced()
        stack.callback(traced.tracer.shutdown)

        async def requests(n: int) -> list[float]:
            latencies = []
            for _ in range(n):
                start = perf_counter()
                await client.request(peer.did, "echo", b"ping")
                latencies.append(perf_counter() - start)
            return latencies

        def subject(n: int) -> list[float]:
            with traced.on():
                return loop.run_until_complete(requests(n))

        yield Pair(subject, lambda n: loop.run_until_complete(requests(n)))


POLICY = {
    "version": 1,
    "name": "bench",
    "rules": [{"id": "pay", "effect": "allow", "match": {"actions": ["pay"]}}],
}


@BENCHMARK.latency(
    "governed tool call",
    subject="a `@governed` tool call with its `agentmesh.tool` span (decision on the span)",
    floor="the same governed call with tracing off",
    goal=at_most(5.0, metric="p50"),
)
def tool_call(config: RunConfig) -> Iterator[Pair]:
    governor = Governor(PolicyEngine(CompiledPolicy.from_data(POLICY)), node="bench")

    @governed(governor, "pay")
    def pay(amount: float) -> float:
        return amount

    traced = Traced()
    agent = AgentIdentity.generate().did

    def calls(n: int) -> list[float]:
        latencies = []
        with acting_as(agent):
            for _ in range(n):
                start = perf_counter()
                pay(amount=1.0)
                latencies.append(perf_counter() - start)
        return latencies

    def subject(n: int) -> list[float]:
        with traced.on():
            return calls(n)

    try:
        yield Pair(subject, calls)
    finally:
        traced.tracer.shutdown()


__all__ = ["BENCHMARK"]
