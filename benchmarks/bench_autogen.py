"""AutoGen on the mesh: ``MeshAgentRuntime.send_message`` vs AutoGen's own runtime and raw NATS.

Per-message cost of the AutoGen adapter (``agentmesh.integrations.autogen``) for
one ``send_message`` ping-pong: an ``Echo`` agent answers a ``Ping`` (256-character
text, a dataclass) with a ``Pong`` of the same text.

* **send_message in-process** (latency, goal: absolute p50 <= 1 ms): a
  :class:`MeshAgentRuntime` sends to the echo agent hosted by another
  MeshAgentRuntime of this process, both on the embedded in-memory bus (no
  guards): the message is serialized, signed by the runtime, verified by the echo
  type's node, bound to its sender, delivered, and the reply signed and verified
  back. Floor: autogen-core's ``SingleThreadedAgentRuntime.send_message`` to the
  same agent class (an in-process queue, no serialization). Part (b), for the
  share of the adapter itself: a bare :class:`MeshNode` request/reply with the
  same body on the same bus.
* **send_message across processes over NATS** (latency, goal p50 ratio <= 3.0):
  the same ping-pong from this process to the echo agent of a MeshAgentRuntime in
  a peer process (``python -m benchmarks.bench_autogen --peer``) over a real
  ``nats-server`` (loopback; JetStream holds the directory's cards). Floor: raw
  nats-py ``nc.request`` to a raw responder in the same peer process, with
  payloads of the signed request and reply frames' sizes. Part (b): a bare
  MeshNode request/reply with the same body to a MeshNode in the same peer process
  (``bench_mesh`` measures that one against raw NATS at ~2x).

The goals were set before the first run: the mesh node itself measures ~2x raw
NATS request/reply, and the adapter should add no more than ~1.5x on top; in one
process, a signed round trip (two signatures, two verifications: ~0.25 ms of
cryptography) should stay under a millisecond.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import IO, Any

import nats
from autogen_core import (
    AgentId,
    MessageContext,
    RoutedAgent,
    SingleThreadedAgentRuntime,
    message_handler,
    try_get_known_serializers_for_type,
)

from agentmesh.integrations.autogen import MeshAgentRuntime, MeshRuntimeConfig
from agentmesh.integrations.autogen.codec import MessageCodec
from agentmesh.integrations.autogen.wire import Routing, envelope_type
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.transport.base import Transport
from agentmesh.transport.memory import InMemoryBus, InMemoryTransport
from agentmesh.transport.nats import NatsTransport
from benchmarks.harness import Benchmark, Measured, Pair, RunConfig, at_most, event_loop, within
from iatp.clock import SystemClock
from iatp.envelope import new_envelope, seal_envelope
from iatp.identity import AgentIdentity
from tests.natsserver import NatsServerProcess

BENCHMARK = Benchmark(
    name="autogen",
    title="AutoGen's send_message on MeshAgentRuntime vs SingleThreadedAgentRuntime and raw NATS",
    description=(
        "One `send_message` ping-pong: an `Echo` RoutedAgent answers a `Ping` dataclass "
        "(256-character text) with a `Pong` of the same text. In-process: two "
        "MeshAgentRuntimes on the embedded in-memory bus (no guards: signing, verification, "
        "sender binding, codec) against autogen-core's SingleThreadedAgentRuntime with the "
        "same agent (no serialization at all); part (b) is a bare MeshNode request/reply "
        "with the same body on the same bus. Across processes: the echo agent runs in a "
        "peer process (`python -m benchmarks.bench_autogen --peer`) on a real nats-server "
        "(loopback; JetStream holds the directory's cards), against raw nats-py request/reply "
        "to a responder in the same peer process with the signed frames' sizes; part (b) is "
        "a bare MeshNode request/reply to a node in the same peer process. Goals were set "
        "before the first run."
    ),
)

ROOT = Path(__file__).resolve().parent.parent
MESH = "bench-autogen"
TEXT = "x" * 256
ECHO_TYPE = "bench.echo"
REQUEST_TIMEOUT = 10.0
PEER_START_TIMEOUT = 60.0


@dataclass
class Ping:
    text: str


@dataclass
class Pong:
    text: str


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echoes pings")

    @message_handler
    async def ping(self, message: Ping, ctx: MessageContext) -> Pong:
        return Pong(message.text)


ECHO = AgentId("echo", "default")


def raw_echo_subject(mesh: str) -> str:
    return f"{mesh}.raw.echo"


async def _echo_body(message: InboundMessage) -> bytes:
    return message.body


def _frame_sizes() -> tuple[int, int]:
    """Sizes of a signed AutoGen ``Ping`` request frame and of its ``Pong`` reply frame."""
    codec = MessageCodec()
    _, request_body = codec.encode(Ping(TEXT))
    _, reply_body = codec.encode(Pong(TEXT))
    me, peer = AgentIdentity.generate(), AgentIdentity.generate()
    now = SystemClock().now_ms()
    headers = Routing("send", "0" * 36, None, recipient=ECHO).headers()
    request = new_envelope(
        sender=me.did,
        type=envelope_type("Ping"),
        recipient=peer.did,
        body=request_body,
        now_ms=now,
        headers=headers,
    )
    reply = new_envelope(
        sender=peer.did,
        type=envelope_type("Ping") + ".reply",
        recipient=me.did,
        body=reply_body,
        now_ms=now,
        correlation_id=bytes(16),
    )
    return len(seal_envelope(request, me)), len(seal_envelope(reply, peer))


def _raw_request(reply_size: int, request_size: int) -> bytes:
    """A raw floor request of ``request_size`` bytes asking the responder for ``reply_size``."""
    return reply_size.to_bytes(4, "big") + bytes(max(0, request_size - 4))


async def _timed_sends(runtime: Any, n: int) -> list[float]:
    """``n`` ping-pongs through ``runtime.send_message`` (either runtime), per-op seconds."""
    latencies = []
    ping = Ping(TEXT)
    for _ in range(n):
        start = perf_counter()
        reply = await runtime.send_message(ping, ECHO)
        latencies.append(perf_counter() - start)
    if reply != Pong(TEXT):
        raise RuntimeError(f"the echo answered {reply!r}")
    return latencies


async def _timed_requests(node: MeshNode, peer: str, body: bytes, n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        start = perf_counter()
        reply = await node.request(peer, ECHO_TYPE, body, timeout=REQUEST_TIMEOUT)
        latencies.append(perf_counter() - start)
    if reply.body != body:
        raise RuntimeError("the echo node answered another body")
    return latencies


# --------------------------------------------------------------------------- in-process


@contextlib.asynccontextmanager
async def _in_process() -> AsyncIterator[
    tuple[MeshAgentRuntime, SingleThreadedAgentRuntime, MeshNode, str, bytes]
]:
    bus = InMemoryBus()
    config = MeshRuntimeConfig(mesh=MESH)
    async with contextlib.AsyncExitStack() as stack:
        host = await stack.enter_async_context(
            MeshAgentRuntime(InMemoryTransport(bus, name="echo-host"), config=config)
        )
        await Echo.register(host, "echo", Echo)
        client = await stack.enter_async_context(
            MeshAgentRuntime(InMemoryTransport(bus, name="client"), config=config)
        )
        client.add_message_serializer(try_get_known_serializers_for_type(Pong))
        local = SingleThreadedAgentRuntime()
        await Echo.register(local, "echo", Echo)
        local.start()
        stack.push_async_callback(local.stop)
        node_config = NodeConfig(mesh=MESH)
        echo_node = await stack.enter_async_context(
            MeshNode(AgentIdentity.generate(), InMemoryTransport(bus), config=node_config)
        )
        echo_node.handle(ECHO_TYPE, _echo_body)
        caller = await stack.enter_async_context(
            MeshNode(AgentIdentity.generate(), InMemoryTransport(bus), config=node_config)
        )
        _, body = client.codec.encode(Ping(TEXT))
        yield client, local, caller, echo_node.did, body


@BENCHMARK.latency(
    "send_message in-process",
    subject="`MeshAgentRuntime.send_message(Ping, echo)` to an echo agent hosted by another "
    "MeshAgentRuntime on the embedded bus (serialize, sign, verify, sender binding, "
    "deliver, signed Pong, verify, decode)",
    floor="autogen-core `SingleThreadedAgentRuntime.send_message(Ping, echo)`, same agent; "
    "part (b): a bare MeshNode request/reply with the same body on the same bus",
    goal=within(0.001, metric="p50"),
    ops=2000,
    quick_ops=300,
)
def in_process(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop = event_loop(stack)
        context = _in_process()
        client, local, caller, echo_did, body = loop.run_until_complete(context.__aenter__())
        stack.callback(lambda: loop.run_until_complete(context.__aexit__(None, None, None)))

        async def floor(n: int) -> Measured:
            single = await _timed_sends(local, n)
            bare = await _timed_requests(caller, echo_did, body, n)
            return Measured(single, {"(b) bare MeshNode request/reply": bare})

        yield Pair(
            lambda n: loop.run_until_complete(_timed_sends(client, n)),
            lambda n: loop.run_until_complete(floor(n)),
        )


# --------------------------------------------------------------------------- across processes


class PeerProcess:
    """``python -m benchmarks.bench_autogen --peer``: prints one ready line, quits on stdin EOF."""

    def __init__(self, url: str) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_autogen", "--peer", "--url", url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def wait_ready(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the peer prints it or exits (EOF)
        if not line:
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"the autogen peer exited before it was ready\n{tail}")
        ready: dict[str, Any] = json.loads(line)
        return ready

    def close(self) -> None:
        process = self.process
        try:
            with contextlib.suppress(OSError, ValueError):
                if process.stdin is not None:
                    process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        finally:
            if process.stdout is not None:
                process.stdout.close()
            self._stderr.close()


@BENCHMARK.latency(
    "send_message across processes over NATS",
    subject="`MeshAgentRuntime.send_message(Ping, echo)` to an echo agent of a "
    "MeshAgentRuntime in a peer process, over a real nats-server",
    floor="raw nats-py `nc.request` to a raw responder in the same peer process, payloads "
    "of the signed request / reply frames' sizes; part (b): a bare MeshNode "
    "request/reply with the same body to a node in the same peer process",
    goal=at_most(3.0, metric="p50"),
    ops=1500,
    quick_ops=300,
)
def across_processes(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        server = NatsServerProcess()  # the directory keeps its cards in a KV bucket
        stack.callback(server.close)
        server.start()
        peer = PeerProcess(server.url)
        stack.callback(peer.close)
        ready = peer.wait_ready()
        loop = event_loop(stack)

        async def connect() -> tuple[MeshAgentRuntime, MeshNode, Any]:
            config = MeshRuntimeConfig(mesh=MESH, resolve_timeout=REQUEST_TIMEOUT)
            runtime = MeshAgentRuntime(NatsTransport(server.url, name="client"), config=config)
            await runtime.start()
            runtime.add_message_serializer(try_get_known_serializers_for_type(Pong))
            await runtime.get(ECHO, lazy=False)  # the echo's card has reached us
            node = MeshNode(
                AgentIdentity.generate(),
                NatsTransport(server.url, name="bare"),
                config=NodeConfig(mesh=MESH),
            )
            await node.start()
            nc = await nats.connect(server.url, name="raw-client")
            return runtime, node, nc

        runtime, node, nc = loop.run_until_complete(connect())

        async def disconnect() -> None:
            with contextlib.suppress(Exception):
                await nc.close()
            await node.aclose()
            await runtime.aclose()

        stack.callback(lambda: loop.run_until_complete(disconnect()))
        _, body = runtime.codec.encode(Ping(TEXT))
        request_size, reply_size = _frame_sizes()
        raw = _raw_request(reply_size, request_size)

        async def floor(n: int) -> Measured:
            latencies = []
            for _ in range(n):
                start = perf_counter()
                reply = await nc.request(raw_echo_subject(MESH), raw, timeout=REQUEST_TIMEOUT)
                latencies.append(perf_counter() - start)
            if len(reply.data) != reply_size:
                raise RuntimeError("the raw responder answered the wrong size")
            bare = await _timed_requests(node, ready["node"], body, n)
            return Measured(latencies, {"(b) bare MeshNode request/reply": bare})

        yield Pair(
            lambda n: loop.run_until_complete(_timed_sends(runtime, n)),
            lambda n: loop.run_until_complete(floor(n)),
        )


# --------------------------------------------------------------------------- the peer


async def _serve_peer(url: str) -> None:
    """The echo agent, a bare echo node and a raw responder, until stdin closes."""
    transport: Transport = NatsTransport(url, name="autogen-peer")
    async with contextlib.AsyncExitStack() as stack:
        runtime = await stack.enter_async_context(
            MeshAgentRuntime(transport, config=MeshRuntimeConfig(mesh=MESH))
        )
        await Echo.register(runtime, "echo", Echo)
        node = await stack.enter_async_context(
            MeshNode(
                AgentIdentity.generate(),
                NatsTransport(url, name="autogen-peer-node"),
                config=NodeConfig(mesh=MESH),
            )
        )
        node.handle(ECHO_TYPE, _echo_body)
        nc = await nats.connect(url, name="autogen-peer-raw")
        stack.push_async_callback(nc.close)
        replies: dict[int, bytes] = {}

        async def raw(msg: Any) -> None:
            size = int.from_bytes(msg.data[:4], "big")
            await msg.respond(replies.setdefault(size, bytes(size)))

        await nc.subscribe(raw_echo_subject(MESH), cb=raw)
        await nc.flush()
        print(json.dumps({"ready": True, "echo": runtime.did_of("echo"), "node": node.did}))
        sys.stdout.flush()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the peer process of bench_autogen")
    parser.add_argument("--peer", action="store_true", required=True)
    parser.add_argument("--url", required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve_peer(args.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
