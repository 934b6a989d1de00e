"""Trust history in bounded memory: join time from a snapshot, throughput with trust on.

From the trust-memory issue (memory and join time independent of history length):

* **join from snapshot** (latency): a node starts (``MeshTrust.start``: bind the
  stream, read and verify the signed snapshot, load the engine state, fold the
  1,000-receipt tail with signature checks) on a mesh whose history had 100k
  (and 1M) receipts, against the same join on a 10k-receipt history, in the same
  run. The history is 1,000 agents with 10 partners each at 100 receipts/s; the
  stream keeps 100 s (``stream_max_age``), so it holds only the tail. Goal:
  ratio <= 1.5 (flat).
* **requests with trust on** (throughput): signed request/reply over a real
  nats-server with JetStream, a client in this process and the serving node in a
  peer process (``python -m benchmarks.trust_load_peer``), 32 requests in flight.
  With trust on, every handled request becomes a signed receipt published to the
  stream, and both processes fold (verify and record) every receipt; a round ends
  when both have folded all of its receipts. The floor is the same requests to a
  node without trust, same processes. Goal: ratio >= 0.5.

The RSS soak is a command-line run, too long for rounds:
``python -m benchmarks.bench_trust_memory soak --seconds 60`` (``--seconds 600`` for
the 10-minute version) sends requests at a constant rate to the trust node and
prints the peer's RSS slope over the second half of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter
from typing import IO, Any

from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.transport.base import Transport
from agentmesh.transport.memory import InMemoryBus, InMemoryTransport
from agentmesh.transport.nats import NatsTransport
from agentmesh.trustnet import MeshTrust, ReceiptLedger, SnapshotPolicy, SnapshotStore
from agentmesh.trustnet.ledger import receipt_subject
from benchmarks.harness import Benchmark, Pair, RunConfig, at_least, at_most, event_loop
from benchmarks.trust_load_peer import ECHO, trust_config
from iatp.clock import ManualClock
from iatp.identity import AgentIdentity
from tests.natsserver import NatsServerProcess
from trust import (
    Outcome,
    Receipt,
    TrustConfig,
    TrustEngine,
    pack_state,
    seal_snapshot,
    sign_receipt,
)

BENCHMARK = Benchmark(
    name="trust_memory",
    title="Trust history in bounded memory: join from a snapshot, requests with trust on",
    description=(
        "Join: `MeshTrust.start()` from a signed snapshot plus a 1,000-receipt tail "
        "(signatures verified), after 100k or 1M receipts of history, against the same "
        "join after 10k receipts (1,000 agents, 10 partners each, 100 receipts/s, "
        "replay horizon 60 s, stream `max_age` 100 s; in-memory transport, so the figure "
        "is the node's own work). Throughput: signed request/reply to a node in another "
        "process over nats-server with JetStream, 32 in flight, with trust on (receipt "
        "per request, both processes fold every receipt, a round ends when both folded "
        "all) against the same requests to a node without trust. Goals: join ratio <= 1.5 "
        "(flat in history), trust-on throughput >= 0.5x trust-off. The RSS soak is "
        "`python -m benchmarks.bench_trust_memory soak --seconds 600` (see docs/trust.md "
        "§10); its last run (2026-12-06, 300 requests/s for 10 minutes, horizon 15 s, "
        "stream max age 60 s): the serving process's RSS went 98 -> 115 MB in the first "
        "half and then stayed flat (slope over the second half -0.005 MB/min), at most "
        "4,510 receipt ids remembered, 180k receipts folded."
    ),
)

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000
AGENTS = 1_000
PARTNERS = 10
RATE_MS = 10  # one receipt every 10 ms of receipt time: 100 receipts/s
TAIL = 1_000
JOIN_CONFIG = TrustConfig(receipt_horizon_ms=60_000, max_future_skew_ms=30_000)
IN_FLIGHT = 32


# -- join from a snapshot ---------------------------------------------------------------


def _identities() -> list[AgentIdentity]:
    return [AgentIdentity.from_seed(i.to_bytes(4, "big") * 8) for i in range(1, AGENTS + 1)]


AUTHORITY = AgentIdentity.from_seed(b"\xaa" * 32)


def _receipt(ids: list[AgentIdentity], rng: random.Random, k: int) -> Receipt:
    o = rng.randrange(AGENTS)
    s = (o + 1 + (o * 7 + rng.randrange(PARTNERS)) % (AGENTS - 1)) % AGENTS
    return Receipt.create(
        observer=ids[o].did,
        subject=ids[s].did,
        interaction_id=f"h{k}",
        outcome=Outcome.SUCCESS if rng.random() < 0.95 else Outcome.FAILURE,
        at_ms=T0 + k * RATE_MS,
        action="work",
    )


class JoinMesh:
    """An in-memory mesh whose stream and snapshot bucket hold ``history`` receipts' worth."""

    def __init__(self, history: int, ids: list[AgentIdentity]) -> None:
        self.history = history
        self.ids = ids
        self.now = 0.0
        self.bus = InMemoryBus(monotonic=lambda: self.now)
        self.mesh = f"join{history}"

    async def transport(self, name: str) -> Transport:
        transport = InMemoryTransport(self.bus, name=name)
        await transport.connect(timeout=5)
        return transport

    async def build(self) -> None:
        rng = random.Random(self.history)
        engine = TrustEngine(
            pre_trusted=[i.did for i in self.ids[:10]],
            clock=ManualClock(T0 + 10**10),
            config=JOIN_CONFIG,
        )
        for k in range(self.history):
            engine.record(_receipt(self.ids, rng, k))
            if k % 1_000 == 999:
                engine.recompute(at_ms=T0 + k * RATE_MS)
        writer = await ReceiptLedger.open(
            await self.transport("writer"), engine, mesh=self.mesh, max_age=100.0
        )
        # The stream's old messages: stored, then aged out (only their sequence stays).
        subject = receipt_subject(self.mesh, self.ids[0].did)
        for _ in range(self.history):
            await writer.stream.append(subject, b"aged-out", msg_id=None)
        body = pack_state(engine.export_state())
        manifest = seal_snapshot(
            body,
            mesh=self.mesh,
            seq=self.history,
            folded=self.history,
            latest_ms=T0 + (self.history - 1) * RATE_MS,
            taken_at_ms=T0,
            signer=AUTHORITY,
            chunk_bytes=512 * 1024,
        )
        store = await SnapshotStore.open(await self.transport("store"), self.mesh)
        await store.write(manifest, body, chunk_bytes=512 * 1024)
        self.now = 1_000.0  # the history leaves the stream
        by_did = {i.did: i for i in self.ids}
        for k in range(self.history, self.history + TAIL):
            receipt = _receipt(self.ids, rng, k)
            await writer.publish(sign_receipt(receipt, by_did[receipt.observer]))
        self.body_bytes = len(body)

    async def join(self) -> float:
        transport = await self.transport("joiner")
        trust = MeshTrust(
            transport,
            AgentIdentity.generate(),
            mesh=self.mesh,
            pre_trusted=[i.did for i in self.ids[:10]],
            config=JOIN_CONFIG,
            recompute_interval=None,
            snapshots=SnapshotPolicy(signers=frozenset({AUTHORITY.did})),
        )
        start = perf_counter()
        await trust.start()
        elapsed = perf_counter() - start
        if trust.started_from_seq != self.history or trust.ledger.folded != self.history + TAIL:
            raise RuntimeError(f"join did not use the snapshot: {trust.snapshot_refused}")
        await trust.aclose()
        await transport.aclose()
        return elapsed


def _join_case(history: int, quick_history: int) -> Any:
    def factory(config: RunConfig) -> Iterator[Pair]:
        with contextlib.ExitStack() as stack:
            loop = event_loop(stack)
            ids = _identities()
            big = JoinMesh(quick_history if config.quick else history, ids)
            small = JoinMesh(10_000, ids)
            loop.run_until_complete(big.build())
            loop.run_until_complete(small.build())

            def runner(mesh: JoinMesh) -> Any:
                return lambda n: [loop.run_until_complete(mesh.join()) for _ in range(n)]

            yield Pair(runner(big), runner(small))

    return factory


for _history, _quick, _label in ((100_000, 30_000, "100k"), (1_000_000, 60_000, "1M")):
    BENCHMARK.latency(
        f"join from snapshot, {_label} history",
        subject=f"`MeshTrust.start()` from a signed snapshot + {TAIL:,} tail receipts, "
        f"{_history:,} receipts of history ({_quick:,} with --quick)",
        floor="the same join after 10,000 receipts of history",
        goal=at_most(1.5, metric="p50"),
        ops=5,
        quick_ops=2,
    )(_join_case(_history, _quick))


# -- requests with trust on ---------------------------------------------------------------


class LoadPeer:
    """``benchmarks.trust_load_peer`` in a child process, driven by JSON lines."""

    def __init__(self, url: str, mesh: str, *extra: str) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.trust_load_peer",
                "--url",
                url,
                "--mesh",
                mesh,
                *extra,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError("trust_load_peer exited")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def ask(self, **command: Any) -> dict[str, Any]:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ask(cmd="quit")
        with contextlib.suppress(Exception):
            self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def _requests(node: MeshNode, peer: str, n: int) -> None:
    body = b"x" * 256
    remaining = iter(range(n))

    async def worker() -> None:
        for _ in remaining:
            await node.request(peer, ECHO, body, timeout=10)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(IN_FLIGHT, n)):
            group.create_task(worker())


@contextlib.contextmanager
def _load_mesh(*peer_args: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Any]]:
    with contextlib.ExitStack() as stack:
        server = NatsServerProcess().start()
        stack.callback(server.stop)
        mesh = f"tl{random.randrange(1 << 30):x}"
        peer = LoadPeer(server.url, mesh, *peer_args)
        stack.callback(peer.close)
        loop = event_loop(stack)
        parts: dict[str, Any] = {"peer": peer, "mesh": mesh}

        async def start() -> None:
            config = NodeConfig(mesh=mesh)
            astack = contextlib.AsyncExitStack()
            parts["astack"] = astack
            t1 = await astack.enter_async_context(NatsTransport(server.url, name="c-trust"))
            t2 = await astack.enter_async_context(NatsTransport(server.url, name="c-plain"))
            parts["trust"] = await astack.enter_async_context(
                MeshTrust(
                    t1, AgentIdentity.generate(), mesh=mesh, config=trust_config(60_000, 5_000)
                )
            )
            parts["client_trust"] = await astack.enter_async_context(
                MeshNode(AgentIdentity.generate(), t1, config=config)
            )
            parts["client_plain"] = await astack.enter_async_context(
                MeshNode(AgentIdentity.generate(), t2, config=config)
            )

        loop.run_until_complete(start())
        stack.callback(lambda: loop.run_until_complete(parts["astack"].aclose()))
        yield loop, parts


def _throughput_case(config: RunConfig) -> Iterator[Pair]:
    with _load_mesh() as (loop, parts):
        peer: LoadPeer = parts["peer"]
        produced = [0]

        def subject(n: int) -> float:
            start = perf_counter()
            loop.run_until_complete(_requests(parts["client_trust"], peer.ready["trust"], n))
            produced[0] += n
            peer.ask(cmd="wait_folded", n=produced[0], timeout=120)
            trust: MeshTrust = parts["trust"]

            async def folded() -> None:
                while trust.ledger.folded < produced[0]:  # noqa: ASYNC110
                    await asyncio.sleep(0.002)

            loop.run_until_complete(folded())
            return perf_counter() - start

        def floor(n: int) -> float:
            start = perf_counter()
            loop.run_until_complete(_requests(parts["client_plain"], peer.ready["plain"], n))
            return perf_counter() - start

        yield Pair(subject, floor)


BENCHMARK.throughput(
    "requests with trust on",
    subject="signed request/reply to a node with MeshTrust (receipt per request, both "
    "processes fold every receipt), 32 in flight, over nats-server with JetStream",
    floor="the same requests to a node without trust, same processes",
    goal=at_least(0.5),
)(_throughput_case)


# -- the soak (command line) -----------------------------------------------------------


def soak(seconds: float, rate: float, horizon_ms: int) -> dict[str, Any]:
    """Requests at ``rate``/s to the trust node for ``seconds``; the peer's RSS slope."""
    samples: list[tuple[float, int, int]] = []
    with _load_mesh("--horizon-ms", str(horizon_ms), "--stream-max-age", "60") as (loop, parts):
        peer: LoadPeer = parts["peer"]

        async def drive() -> None:
            node: MeshNode = parts["client_trust"]
            begin = time.monotonic()
            sent, next_sample = 0, begin
            while (now := time.monotonic()) - begin < seconds:
                due = int((now - begin) * rate) - sent
                if due > 0:
                    await _requests(node, peer.ready["trust"], due)
                    sent += due
                if now >= next_sample:
                    stats = await asyncio.to_thread(peer.ask, cmd="stats")
                    samples.append((now - begin, stats["rss"], stats["remembered"]))
                    next_sample += 1.0
                await asyncio.sleep(0.01)

        loop.run_until_complete(drive())
        final = peer.ask(cmd="stats")
    half = [(t, rss) for t, rss, _ in samples if t >= seconds / 2]
    slope = _slope(half) * 60 / 1e6  # MB per minute
    return {
        "seconds": seconds,
        "rate": rate,
        "horizon_ms": horizon_ms,
        "rss_mb_first": samples[0][1] / 1e6 if samples else 0.0,
        "rss_mb_last": final["rss"] / 1e6,
        "rss_slope_mb_per_min_second_half": slope,
        "remembered_ids_max": max(r for _, _, r in samples) if samples else 0,
        "folded": final["folded"],
    }


def _slope(points: list[tuple[float, int]]) -> float:
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    num = sum((t - mean_t) * (v - mean_v) for t, v in points)
    den = sum((t - mean_t) ** 2 for t, _ in points)
    return num / den if den else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_trust_memory")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("soak", help="constant load on a trust node; report the RSS slope")
    run.add_argument("--seconds", type=float, default=60.0)
    run.add_argument("--rate", type=float, default=300.0, help="requests per second")
    run.add_argument("--horizon-ms", type=int, default=15_000)
    args = parser.parse_args(argv)
    print(json.dumps(soak(args.seconds, args.rate, args.horizon_ms), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
