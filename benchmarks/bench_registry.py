"""Directory benchmarks: find-by-capability from the local cache, revocation propagation.

Issue #4 goals: find-by-capability from the local cache with 10k cards <= 20 us
(reported as a ratio to a plain dict lookup in the same run, plus the absolute
figure), and revocation propagation to 10 nodes over NATS with p99 <= 200 ms.

The propagation case starts a JetStream nats-server and two watcher processes
(``python -m benchmarks.bench_registry watchers URL MESH AUTHORITY COUNT``), each
running 5 independent "nodes": a NATS connection and a started
:class:`~agentmesh.directory.RevocationList`, exactly what ``node run`` follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgpack

from agentmesh.directory import Directory, RevocationChange, RevocationList
from agentmesh.transport.base import Message, Transport
from agentmesh.transport.memory import InMemoryTransport
from benchmarks.harness import Benchmark, Goal, Pair, RunConfig, within
from iatp.did import did_from_public_key
from iatp.identity import AgentIdentity
from registry.card import AgentCard, Capability, sign_card
from registry.revocation import RevocationAuthorities, RevocationKind, sign_revocation

BENCHMARK = Benchmark(
    name="registry",
    title="Directory: find by capability, revocation propagation",
    description=(
        "Find: a started `Directory` (in-memory store) holding 10,000 verified cards, each "
        "offering 2 of 1,000 capabilities (20 holders per capability), with a "
        "`RevocationList` attached; queries cycle over all capabilities (`--quick`: 1,000 "
        "cards). Propagation: one "
        "issuer process, 10 watcher nodes (own NATS connection and `RevocationList` each) "
        "spread over 2 processes, JetStream KV on a local nats-server; latency = issue "
        "start until the last of the 10 nodes applied the entry (wall clock stamped in "
        "each node)."
    ),
)

ROOT = Path(__file__).resolve().parent.parent
CARDS, CARDS_QUICK, CAPABILITIES = 10_000, 1_000, 1_000
WATCHER_PROCESSES, WATCHERS_PER_PROCESS = 2, 5
NODES = WATCHER_PROCESSES * WATCHERS_PER_PROCESS
AUTHORITY = AgentIdentity.from_seed(b"registry-benchmark-authority-32b")
FIND_GOAL = Goal(">=", 50_000, "ops/s", absolute=True)  # <= 20 us per find


# --------------------------------------------------------------------------- find


def _cards(count: int) -> list[AgentCard]:
    now = int(time.time() * 1000)
    cards = []
    for index in range(count):
        names = (index % CAPABILITIES, (index * 7 + 3) % CAPABILITIES)  # every name held
        cards.append(
            sign_card(
                AgentIdentity.from_seed(index.to_bytes(32, "big")),
                display_name=f"agent {index}",
                inbox=f"bench.agent.{index}.inbox",
                issued_at_ms=now,
                ttl_ms=3_600_000,
                capabilities=tuple(Capability(name=f"cap{n}", version="1") for n in names),
            )
        )
    return cards


@contextlib.contextmanager
def _directory(config: RunConfig) -> Iterator[tuple[Directory, list[str]]]:
    loop = asyncio.new_event_loop()
    transport = InMemoryTransport(name="bench")
    revocations = RevocationList(transport, mesh="bench")
    directory = Directory(transport, mesh="bench", revocations=revocations)

    async def start() -> None:
        await transport.connect()
        await revocations.start()
        await directory.start()
        for card in _cards(CARDS_QUICK if config.quick else CARDS):
            await directory.publish(card)

    async def stop() -> None:
        await directory.aclose()
        await revocations.aclose()
        await transport.aclose()

    try:
        loop.run_until_complete(start())
        yield directory, [f"cap{n}" for n in range(CAPABILITIES)]
    finally:
        loop.run_until_complete(stop())
        loop.close()


def _find_pair(directory: Directory, names: list[str], query: Callable[[str], object]) -> Pair:
    """``query(name)`` cycling over ``names`` against ``index[name]`` on a plain dict."""
    index: dict[str, list[AgentCard]] = {}
    for card in directory.cards():
        for capability in card.capabilities:
            index.setdefault(capability.name, []).append(card)
    count = len(names)

    def subject(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            query(names[i % count])
        return time.perf_counter() - start

    def floor(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            list(index[names[i % count]])
        return time.perf_counter() - start

    return Pair(subject, floor)


FLOOR = "`list(index[name])` on a plain dict of capability name -> list of cards"


@BENCHMARK.throughput(
    "find by capability, 10k cards",
    subject="`directory.find(name)` from the local cache (steady state: results cached "
    "until something changes)",
    floor=FLOOR,
    goal=FIND_GOAL,
)
def find_cached(config: RunConfig) -> Iterator[Pair]:
    with _directory(config) as (directory, names):
        yield _find_pair(directory, names, directory.find)


@BENCHMARK.throughput(
    "find by capability after a change, 10k cards",
    subject="`directory.find(name)` right after an invalidation: filters the ~20 holders "
    "(expiry, revocation, rotation, drift hold) on every call",
    floor=FLOOR,
)
def find_uncached(config: RunConfig) -> Iterator[Pair]:
    with _directory(config) as (directory, names):
        find, forget = directory.find, directory._changed  # what any change does

        def query(name: str) -> object:
            forget()
            return find(name)

        yield _find_pair(directory, names, query)


@BENCHMARK.throughput(
    "find ranked by trust, 10k cards",
    subject="`directory.find(name, rank=scores.__getitem__)`: the cached result sorted by "
    "a DID -> score callable (the trust engine's hook)",
    floor=FLOOR,
)
def find_ranked(config: RunConfig) -> Iterator[Pair]:
    with _directory(config) as (directory, names):
        rng = random.Random(7)
        scores = {card.did: rng.random() for card in directory.cards()}
        find, rank = directory.find, scores.__getitem__

        def query(name: str) -> object:
            return find(name, rank=rank)

        yield _find_pair(directory, names, query)


# --------------------------------------------------------------------------- propagation


def _seen_subject(mesh: str) -> str:
    return f"{mesh}.bench.seen"


def _raw_subject(mesh: str) -> str:
    return f"{mesh}.bench.raw"


async def _watchers(url: str, mesh: str, authority: str, count: int) -> None:
    """A watcher process: ``count`` nodes stamp and report every change they apply."""
    from agentmesh.transport.nats import NatsTransport

    auth = RevocationAuthorities(mesh=frozenset({authority}))
    transports: list[Transport] = []
    lists: list[RevocationList] = []
    tasks: set[asyncio.Task[None]] = set()
    for index in range(count):
        transport = NatsTransport(url, name=f"watcher{index}")
        await transport.connect()
        revocations = RevocationList(transport, mesh=mesh, authorities=auth)
        await revocations.start()

        def report(data: bytes, t: Transport = transport) -> None:
            task = asyncio.create_task(t.publish(_seen_subject(mesh), data))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        def on_change(change: RevocationChange, report: object = report, i: int = index) -> None:
            stamp = time.time_ns()
            assert callable(report)
            report(msgpack.packb([change.did, i, stamp]))

        async def on_raw(message: Message, report: object = report, i: int = index) -> None:
            stamp = time.time_ns()
            assert callable(report)
            report(msgpack.packb([message.data.decode(), i, stamp]))

        revocations.add_listener(on_change)
        await transport.subscribe(_raw_subject(mesh), on_raw)
        await transport.flush()
        transports.append(transport)
        lists.append(revocations)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed
    for revocations in lists:
        await revocations.aclose()
    for transport in transports:
        await transport.aclose()


class _Issuer:
    """The issuing side: one NATS connection, a RevocationList, and the reports."""

    def __init__(self, url: str, mesh: str) -> None:
        from agentmesh.transport.nats import NatsTransport

        self.mesh = mesh
        self.transport = NatsTransport(url, name="issuer")
        self.revocations = RevocationList(
            self.transport,
            mesh=mesh,
            authorities=RevocationAuthorities(mesh=frozenset({AUTHORITY.did})),
        )
        self.seen: dict[str, list[int]] = {}
        self.done: dict[str, asyncio.Event] = {}

    async def start(self) -> None:
        await self.transport.connect()
        await self.revocations.start()
        await self.transport.subscribe(_seen_subject(self.mesh), self._on_seen)
        await self.transport.flush()

    async def _on_seen(self, message: Message) -> None:
        key, _, stamp = msgpack.unpackb(message.data)
        stamps = self.seen.setdefault(key, [])
        stamps.append(stamp)
        if len(stamps) == NODES and key in self.done:
            self.done[key].set()

    async def _await_all(self, key: str, start_ns: int) -> float:
        event = self.done.setdefault(key, asyncio.Event())
        if len(self.seen.get(key, ())) >= NODES:
            event.set()
        await asyncio.wait_for(event.wait(), 10.0)
        stamps = self.seen.pop(key)
        del self.done[key]
        return (max(stamps) - start_ns) / 1e9

    async def revoke(self, n: int) -> list[float]:
        latencies = []
        for _ in range(n):
            subject = did_from_public_key(os.urandom(32))
            self.done[subject] = asyncio.Event()
            start = time.time_ns()
            entry = sign_revocation(
                AUTHORITY,
                subject=subject,
                kind=RevocationKind.REVOKED,
                reason="benchmark",
                issued_at_ms=start // 1_000_000,
                sequence=0,
            )
            await self.revocations.issue(entry)
            latencies.append(await self._await_all(subject, start))
        return latencies

    async def broadcast(self, n: int) -> list[float]:
        latencies = []
        for _ in range(n):
            key = os.urandom(8).hex()
            self.done[key] = asyncio.Event()
            start = time.time_ns()
            await self.transport.publish(_raw_subject(self.mesh), key.encode())
            latencies.append(await self._await_all(key, start))
        return latencies

    async def aclose(self) -> None:
        await self.revocations.aclose()
        await self.transport.aclose()


@BENCHMARK.latency(
    "revocation propagation to 10 nodes over NATS",
    subject="`RevocationList.issue(entry)` (verify, KV create) until the last of 10 watcher "
    "nodes in 2 other processes applied it (watch, decode, verify, fold, listener)",
    floor="core NATS publish of a 16-byte id until the last of the same 10 connections received it",
    goal=within(0.2, metric="p99"),
    ops=200,
    quick_ops=20,
)
def propagation(config: RunConfig) -> Iterator[Pair]:
    from tests.natsserver import NatsServerProcess

    with contextlib.ExitStack() as stack:
        server = NatsServerProcess(jetstream=True)
        stack.callback(server.close)
        server.start()
        mesh = f"benchreg{os.getpid()}"
        watchers = []
        for _ in range(WATCHER_PROCESSES):
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.bench_registry",
                    "watchers",
                    server.url,
                    mesh,
                    AUTHORITY.did,
                    str(WATCHERS_PER_PROCESS),
                ],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            stack.callback(_stop, process)
            watchers.append(process)
        for process in watchers:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError("a watcher process did not start")
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        issuer = _Issuer(server.url, mesh)
        loop.run_until_complete(issuer.start())
        stack.callback(lambda: loop.run_until_complete(issuer.aclose()))
        yield Pair(
            lambda n: loop.run_until_complete(issuer.revoke(n)),
            lambda n: loop.run_until_complete(issuer.broadcast(n)),
        )


def _stop(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(OSError, ValueError):
        assert process.stdin is not None
        process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


if __name__ == "__main__" and sys.argv[1:2] == ["watchers"]:
    url, mesh, authority, count = sys.argv[2:6]
    asyncio.run(_watchers(url, mesh, authority, int(count)))
