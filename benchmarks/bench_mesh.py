"""The mesh runtime over a real nats-server, across processes, against raw nats-py.

Three cases from the mesh-runtime issue. Each case starts its own ``nats-server``
(loopback, random port, no JetStream) and its peer processes
(``python -m benchmarks.mesh_peer ROLE``, driven over stdin / stdout JSON lines,
see that module), and stops them all when it ends, whatever happens:

* **signed request/reply** (latency): this process's :class:`MeshNode` sends
  ``node.request(peer, "bench.echo", 256 B)`` to a MeshNode in a peer process,
  against raw nats-py ``nc.request`` to a raw nats-py responder in the *same* peer
  process, with payloads of the same sizes as the signed request and reply frames.
  An info row compares it with the Ed25519 floor: each raw round trip plus the time
  bare PyNaCl takes to sign and verify a request and a reply (measured in this
  process in the same round): per-message signatures on both sides cost that much
  whatever the runtime does.
* **signed one-way into one node** (throughput): a sender process publishes
  pre-sealed distinct envelopes with raw nats-py to the inbox of a receiver
  MeshNode (default config) in another process, which counts handled messages.
  The floor is the slower of two ceilings measured in the same run with the same
  frames: (a) raw nats-py pub→sub between the same two processes (the subscriber
  only counts), (b) raw PyNaCl verification in the receiver process on as many
  threads as the node's ``verify_workers``, in one chunk per thread.
* **session request/reply** (latency): the same, with ``via_session=True`` after
  one handshake: request and reply carry a session MAC instead of an Ed25519
  signature (iatp.md §15), against raw frames of the session frames' sizes.
* **handshake over NATS** (latency): ``node.handshake(peer)``, against two raw
  nats-py request/reply round trips with the handshake's message sizes (the
  handshake is two round trips). The goal is absolute: p50 <= 5 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import random
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter
from typing import IO, Any

import nats
from nacl.signing import SigningKey

from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.node.wire import encode_accept, encode_ok, encode_step
from agentmesh.transport.nats import NatsTransport
from benchmarks.harness import (
    Benchmark,
    Measured,
    Pair,
    RunConfig,
    at_least,
    at_most,
    event_loop,
    within,
)
from benchmarks.mesh_peer import ECHO_TYPE, raw_echo_subject, raw_oneway_subject
from iatp.clock import SystemClock
from iatp.envelope import new_envelope, seal_envelope
from iatp.handshake import HandshakeInitiator, HandshakeResponder, SessionKeys
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache
from iatp.session_frame import seal_session_frame
from tests.natsserver import NatsServerProcess

BENCHMARK = Benchmark(
    name="mesh",
    title="MeshNode over a real nats-server, across processes, vs raw nats-py",
    description=(
        "Every case starts its own `nats-server` (loopback, no JetStream) and peer "
        "processes (`python -m benchmarks.mesh_peer`, driven by JSON lines on stdin / "
        "stdout), so subject and floor share the server, the processes and the "
        "connections' conditions, and rounds interleave without restarting anything. "
        "Request/reply: 256 B body; the raw floor carries payloads of the signed request "
        "and reply frames' sizes. One-way: 256 B body, distinct pre-sealed envelopes "
        "published by a raw nats-py sender process into a receiver MeshNode (default "
        "config, `verify_workers` = CPU count) in another process; messages/s from the "
        "first to the last message handled; the floor is the slower of (a) raw nats-py "
        "pub→sub of the same frames between the same processes and (b) raw PyNaCl "
        "verification of the same frames on `verify_workers` threads (both reported "
        "below as `ops/s vs ...` rows). Handshake: the goal is absolute (p50 <= 5 ms); "
        "its floor, two raw request/reply round trips with the handshake's message "
        "sizes, is for scale only.\n\n"
        "What bounds the MISS rows (issue 18 item 7). *Signed request/reply*: row (b), "
        "the raw round trip plus bare PyNaCl signing and verifying the two frames and "
        "nothing else, is itself about 1.45-1.5x the raw p50, so the 1.5x goal leaves a "
        "few µs for decoding, validity and replay checks, dispatch and the checked reply "
        "inbox; compare the subject with row (b). *Session request/reply* carries no "
        "Ed25519: its overhead/op row is the Python work of both nodes (envelope and "
        "msgpack, AEAD, checks, the dispatch task, the reply check), about 140 µs of CPU "
        "per round trip for both sides together on the embedded transport; reaching "
        "1.5x needs that roughly halved (a compiled frame codec). *One-way into one "
        "node* on a 2-CPU machine: floor (b) gives verification both CPUs alone, while "
        "the subject also runs the receiver's event loop (the overhead/op row), the "
        "sender process and nats-server on the same two CPUs, so it cannot pass about "
        "2 CPUs / (verify + loop + sender and server time per message), near 0.55 of "
        "floor (b) here; the 0.8 goal needs at least one CPU beyond `verify_workers`."
    ),
)

ROOT = Path(__file__).resolve().parent.parent
MESH = "bench"
BODY_SIZE = 256
REQUEST_TIMEOUT = 10.0
PEER_START_TIMEOUT = 60.0
PEER_MODULE = "benchmarks.mesh_peer"


# --------------------------------------------------------------------------- processes


class PeerProcess:
    """A ``python -m benchmarks.mesh_peer ROLE`` child, one JSON line per command / answer."""

    def __init__(self, role: str, url: str, *extra: str) -> None:
        self.role = role
        self.info: dict[str, Any] = {}
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.mesh_peer",
                role,
                "--url",
                url,
                "--mesh",
                MESH,
                *extra,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._pump, name=f"peer-{role}", daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def _next(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(
                f"{self.role} peer: no answer to {what} in {timeout:g}s\n{self._stderr_tail()}"
            ) from None
        if line is None:
            self.process.wait(timeout=5)
            raise RuntimeError(
                f"{self.role} peer exited ({self.process.returncode}) before answering "
                f"{what}\n{self._stderr_tail()}"
            )
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.role} peer: {what} failed: {answer['error']}")
        return answer

    def wait_ready(self) -> dict[str, Any]:
        self.info = self._next(PEER_START_TIMEOUT, "start")
        return self.info

    def call(self, cmd: str, *, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.process.stdin.flush()
        return self._next(timeout, cmd)

    def close(self) -> None:
        """Ask it to quit (closing stdin does too); terminate, then kill, if it lingers."""
        process = self.process
        try:
            if process.poll() is None and process.stdin is not None:
                with contextlib.suppress(OSError, ValueError):
                    process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                    process.stdin.flush()
                with contextlib.suppress(OSError, ValueError):
                    process.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
            if process.stdout is not None:
                process.stdout.close()
            self._stderr.close()


def _server(stack: contextlib.ExitStack) -> str:
    server = NatsServerProcess(jetstream=False)
    stack.callback(server.close)  # registered first: stopped even if start() fails half-way
    server.start()
    return server.url


def _peers(stack: contextlib.ExitStack, url: str, *roles: str) -> list[PeerProcess]:
    """Start the peers in parallel; each is closed by ``stack``."""
    peers = []
    for role in roles:
        peer = PeerProcess(role, url)
        stack.callback(peer.close)
        peers.append(peer)
    for peer in peers:
        peer.wait_ready()
    return peers


class Client:
    """This process's side: a MeshNode and a raw nats-py connection, on one event loop."""

    node: MeshNode
    nc: Any

    @classmethod
    async def connect(cls, url: str) -> Client:
        self = cls()
        self.node = MeshNode(
            AgentIdentity.generate(),
            NatsTransport(url, name="bench-client"),
            config=NodeConfig(mesh=MESH),
        )
        await self.node.start()
        self.nc = await nats.connect(url, name="bench-raw-client")
        return self

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()
        await self.node.aclose()


def _client(stack: contextlib.ExitStack, loop: asyncio.AbstractEventLoop, url: str) -> Client:
    client = loop.run_until_complete(Client.connect(url))
    stack.callback(lambda: loop.run_until_complete(client.aclose()))
    return client


def _raw_request(reply_size: int, request_size: int) -> bytes:
    """A raw floor request: ``request_size`` bytes asking the responder for ``reply_size``."""
    return reply_size.to_bytes(4, "big") + bytes(max(0, request_size - 4))


# --------------------------------------------------------------------------- request/reply


def _echo_frame_sizes(body: bytes) -> tuple[int, int]:
    """Sizes of a signed ``bench.echo`` request and of its signed reply (sealed locally)."""
    now = SystemClock().now_ms()
    me, peer = AgentIdentity.generate(), AgentIdentity.generate()
    request = seal_envelope(
        new_envelope(sender=me.did, type=ECHO_TYPE, recipient=peer.did, body=body, now_ms=now),
        me,
    )
    reply = seal_envelope(
        new_envelope(
            sender=peer.did,
            type=ECHO_TYPE + ".reply",
            recipient=me.did,
            body=body,
            now_ms=now,
            correlation_id=bytes(16),
        ),
        peer,
    )
    return len(request), len(reply)


def _local_handshake(
    me: AgentIdentity, peer: AgentIdentity
) -> tuple[SessionKeys, SessionKeys, tuple[bytes, bytes, bytes]]:
    """A complete handshake in memory: both sides' keys and the three messages."""
    clock = SystemClock()
    initiator = HandshakeInitiator(me, peer.did, clock=clock)
    responder = HandshakeResponder(peer, clock=clock, seen_hellos=ReplayCache())
    hello = initiator.hello()
    responder.receive_hello(hello)
    accept = responder.accept()
    confirm, mine = initiator.finish(accept)
    return mine, responder.confirm(confirm), (hello, accept, confirm)


def _session_frame_sizes(body: bytes) -> tuple[int, int]:
    """Sizes of a session-MAC ``bench.echo`` request and of its reply (sealed locally)."""
    me, peer = AgentIdentity.generate(), AgentIdentity.generate()
    mine, theirs, _ = _local_handshake(me, peer)
    now = SystemClock().now_ms()
    request = new_envelope(sender=me.did, type=ECHO_TYPE, recipient=peer.did, body=body, now_ms=now)
    reply = new_envelope(
        sender=peer.did,
        type=ECHO_TYPE + ".reply",
        recipient=me.did,
        body=body,
        now_ms=now,
        correlation_id=bytes(16),
    )
    return len(seal_session_frame(request, mine)), len(seal_session_frame(reply, theirs))


def _request_reply(via_session: bool) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        url = _server(stack)
        (peer,) = _peers(stack, url, "responder")
        loop = event_loop(stack)
        client = _client(stack, loop, url)
        node, nc, peer_did = client.node, client.nc, peer.info["did"]
        body = random.Random(BODY_SIZE).randbytes(BODY_SIZE)
        if via_session:
            loop.run_until_complete(node.handshake(peer_did, timeout=REQUEST_TIMEOUT))
            request_size, reply_size = _session_frame_sizes(body)
        else:
            request_size, reply_size = _echo_frame_sizes(body)
        raw = _raw_request(reply_size, request_size)
        raw_subject = raw_echo_subject(MESH)

        async def mesh(n: int) -> list[float]:
            latencies = []
            for _ in range(n):
                start = perf_counter()
                reply = await node.request(
                    peer_did, ECHO_TYPE, body, timeout=REQUEST_TIMEOUT, via_session=via_session
                )
                latencies.append(perf_counter() - start)
            if reply.body != body:
                raise RuntimeError("the echo reply does not carry the request body")
            return latencies

        async def floor(n: int) -> list[float]:
            latencies = []
            for _ in range(n):
                start = perf_counter()
                reply = await nc.request(raw_subject, raw, timeout=REQUEST_TIMEOUT)
                latencies.append(perf_counter() - start)
            if len(reply.data) != reply_size:
                raise RuntimeError("the raw responder answered the wrong size")
            return latencies

        def floors(n: int) -> list[float] | Measured:
            latencies = loop.run_until_complete(floor(n))
            if via_session:
                return latencies
            # The Ed25519 floor: a signed round trip signs and verifies twice, in
            # series (each verify needs the bytes the other side just signed).
            crypto = _signature_round_trips(n, request_size, reply_size)
            return Measured(
                latencies,
                {ED25519_FLOOR: [a + b for a, b in zip(latencies, crypto, strict=True)]},
            )

        yield Pair(lambda n: loop.run_until_complete(mesh(n)), floors)


ED25519_FLOOR = "(b) raw + 2 Ed25519 sign + 2 verify"


def _signature_round_trips(n: int, request_size: int, reply_size: int) -> list[float]:
    """Seconds per op of what a signed round trip must sign and verify, with bare PyNaCl.

    The request is signed by one key and verified, the reply signed by another and
    verified, over messages of the frames' sizes (in this process, one core).
    """
    keys = SigningKey.generate(), SigningKey.generate()
    messages = bytes(request_size), bytes(reply_size)
    verifiers = keys[0].verify_key, keys[1].verify_key
    times = []
    for _ in range(n):
        start = perf_counter()
        for key, verifier, message in zip(keys, verifiers, messages, strict=True):
            verifier.verify(key.sign(message))
        times.append(perf_counter() - start)
    return times


@BENCHMARK.latency(
    "signed request/reply",
    subject="`node.request(peer, 'bench.echo', 256 B)` to a MeshNode echoing in a peer "
    "process (seal, verify, checks, handler, signed reply, verify)",
    floor="raw nats-py `nc.request` to a raw responder in the same peer process, payloads "
    "of the signed request / reply frames' sizes; part (b) adds to each raw round trip the "
    "time bare PyNaCl takes here to sign and verify a request and a reply of those sizes "
    "(the Ed25519 floor: no signed round trip can beat it)",
    goal=at_most(1.5, metric="p50"),
    ops=1500,
    quick_ops=300,
)
def request_reply(config: RunConfig) -> Iterator[Pair]:
    yield from _request_reply(via_session=False)


@BENCHMARK.latency(
    "session request/reply",
    subject="`node.request(peer, 'bench.echo', 256 B, via_session=True)` after one "
    "handshake: request and reply authenticated by the session MAC (iatp.md §15), "
    "same checks otherwise",
    floor="raw nats-py `nc.request` to a raw responder in the same peer process, payloads "
    "of the session request / reply frames' sizes",
    goal=at_most(1.5, metric="p50"),
    ops=1500,
    quick_ops=300,
)
def session_request_reply(config: RunConfig) -> Iterator[Pair]:
    yield from _request_reply(via_session=True)


# --------------------------------------------------------------------------- one-way


@BENCHMARK.throughput(
    "signed one-way into one node",
    subject="a raw nats-py sender process publishes distinct pre-sealed envelopes (256 B "
    "body) to a receiver MeshNode's inbox in another process (default config); messages/s "
    "from the first to the last handled",
    floor="the slower of (a) raw nats-py pub→sub of the same frames between the same "
    "processes (the subscriber counts) and (b) raw PyNaCl verify of the same frames in the "
    "receiver process on `verify_workers` threads, one chunk per thread",
    goal=at_least(0.8),
    ops=20_000,
    quick_ops=3_000,
)
def one_way(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        url = _server(stack)
        receiver, sender = _peers(stack, url, "receiver", "sender")
        did, inbox = receiver.info["did"], receiver.info["inbox"]
        threads = int(receiver.info["verify_workers"])
        raw_subject = raw_oneway_subject(MESH)

        def deliver(mode: str, subject: str, n: int) -> float:
            receiver.call("expect", mode=mode, n=n)
            sender.call("blast", subject=subject, n=n, timeout=60 + n / 1000)
            got = receiver.call("wait", timeout=30 + n / 500)
            if got["count"] != n:
                raise RuntimeError(f"{mode}: {got['count']} of {n} messages arrived: {got}")
            return float(got["seconds"])

        def subject(n: int) -> float:
            sender.call("seal", n=n, to=did, timeout=60 + n / 100)  # fresh ids every round
            return deliver("mesh", inbox, n)

        def floor(n: int) -> Measured:
            sender.call("seal", n=n, to=did, reuse=True, timeout=60 + n / 100)  # same frames
            pub_sub = deliver("raw", raw_subject, n)
            verify = float(receiver.call("verify", n=n, threads=threads)["seconds"])
            return Measured(
                max(pub_sub, verify),
                {"(a) raw pub→sub": pub_sub, f"(b) raw verify x{threads}": verify},
            )

        yield Pair(subject, floor)


# --------------------------------------------------------------------------- handshake


def _handshake_sizes() -> tuple[tuple[int, int], tuple[int, int]]:
    """(request, reply) sizes of the handshake's two round trips, run locally."""
    _, _, (hello, accept, confirm) = _local_handshake(
        AgentIdentity.generate(), AgentIdentity.generate()
    )
    return (
        (len(encode_step("hello", hello)), len(encode_accept(accept))),
        (len(encode_step("confirm", confirm)), len(encode_ok(AgentIdentity.generate(), b"s" * 16))),
    )


@BENCHMARK.latency(
    "handshake over NATS",
    subject="`node.handshake(peer)` with a MeshNode in a peer process (HELLO / ACCEPT, "
    "CONFIRM / OK: two request/reply round trips, signatures and X25519 on both sides)",
    floor="two raw nats-py `nc.request` round trips with the handshake's message sizes "
    "(for scale; the goal is on the absolute p50)",
    goal=within(0.005, metric="p50"),
    ops=600,
    quick_ops=150,
)
def handshake(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        url = _server(stack)
        (peer,) = _peers(stack, url, "responder")
        loop = event_loop(stack)
        client = _client(stack, loop, url)
        node, nc, peer_did = client.node, client.nc, peer.info["did"]
        (hello, accept), (confirm, ok) = _handshake_sizes()
        first, second = _raw_request(accept, hello), _raw_request(ok, confirm)
        raw_subject = raw_echo_subject(MESH)

        async def mesh(n: int) -> list[float]:
            latencies = []
            for _ in range(n):
                start = perf_counter()
                await node.handshake(peer_did, timeout=REQUEST_TIMEOUT)
                latencies.append(perf_counter() - start)
            return latencies

        async def floor(n: int) -> list[float]:
            latencies = []
            for _ in range(n):
                start = perf_counter()
                await nc.request(raw_subject, first, timeout=REQUEST_TIMEOUT)
                await nc.request(raw_subject, second, timeout=REQUEST_TIMEOUT)
                latencies.append(perf_counter() - start)
            return latencies

        yield Pair(
            lambda n: loop.run_until_complete(mesh(n)),
            lambda n: loop.run_until_complete(floor(n)),
        )
