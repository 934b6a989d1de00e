"""The mesh on a 3-server nats-server cluster vs one server, across processes.

Every case starts a real 3-server JetStream cluster on loopback
(:class:`tests.natscluster.NatsCluster`: the configs ``agentmesh mesh cluster-init``
writes, full mesh of routes, ``sync_interval: always``) and one single
``nats-server`` with JetStream and the same ``sync_interval: always`` (a config file
written by this module), both run by the same binary
(:func:`~tests.natsserver.find_recent_nats_server`, >= 2.10), plus its peer
processes, all alive for the whole case so rounds interleave (cluster, single,
cluster, ...). Everything started is stopped when the case ends, whatever happens.
Every transport is pinned to one server by being given only that server's URL
(nats-py learns the others from the cluster, but only fails over to them), and
the set-up checks ``NatsTransport.server_url``. Buckets get the transport's
automatic replicas: 3 on the cluster, 1 on the single server.

* **signed request/reply across servers** (latency, goal p50 ratio <= 1.3, a goal
  we set: the cluster adds one route hop each way, as the federation's leaf link
  adds a server hop each way, and that benchmark's goal is 1.3): this process's
  :class:`MeshNode`, connected to s1 only, does ``node.request(peer, "bench.echo",
  256 B)`` to a MeshNode responder in a peer process (``mesh_peer responder``)
  connected to s2 only: s1, route, s2 and back. Floor: exactly the same (another
  client node, another responder process, same code, same body) with both
  connected to the single server.
* **raw request/reply across servers** (latency, no goal): the transport floor of
  the above: raw nats-py ``nc.request`` from this process on s1 to the raw
  responder of the s2 responder process (``bench.raw.echo``), against the same on
  the single server; payloads of the signed request and reply frames' sizes.
* **revocation propagation to three servers** (latency, goal: absolute p99 <= 1 s,
  as the broker's revocation): per operation, the authority (this process) signs a
  ``REVOKED`` entry for a fresh subject and ``RevocationList.issue(entry,
  signer=authority)`` stores it (and the authority's signed log head) through a
  list whose transport is on s1; the latency runs from the start of the signing
  until the revocation lists of three listener processes, one on each of s1, s2
  and s3, all block the subject (each stamps ``time.monotonic()`` in its list's
  change listener, once the entry was read from its watch and verified;
  CLOCK_MONOTONIC is shared by the processes of one Linux host): on the cluster the
  write is acknowledged by a majority of the bucket's three replicas, each
  fsyncing it, wherever JetStream placed the leader. Floor: the same three
  processes, each with a second list on the single server, and the authority's
  second list there too. The listener processes are this module run as a script
  (``python -m benchmarks.bench_cluster --url URL --url URL --authority DID``, the
  control protocol of :mod:`benchmarks.mesh_peer`). Entries are permanent: the
  revocations bucket grows by one key per operation (the authority's head is one
  key of the heads bucket, rewritten each time), and the lists only read what
  changed; 200 operations per round (15 with ``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from time import monotonic, perf_counter
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from agentmesh.directory.revocations import RevocationChange, RevocationList
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.transport.nats import NatsTransport
from benchmarks.bench_mesh import (
    BODY_SIZE,
    MESH,
    REQUEST_TIMEOUT,
    ROOT,
    PeerProcess,
    _echo_frame_sizes,
    _raw_request,
)
from benchmarks.harness import Benchmark, Pair, RunConfig, async_stack, at_most, event_loop, within
from benchmarks.mesh_peer import ECHO_TYPE, Peer, raw_echo_subject, serve
from iatp.identity import AgentIdentity
from registry.revocation import (
    BLOCKING_KINDS,
    RevocationAuthorities,
    RevocationKind,
    sign_revocation,
)
from tests.natscluster import NatsCluster
from tests.natsserver import NatsServerProcess, find_recent_nats_server

BENCHMARK = Benchmark(
    name="cluster",
    title="The mesh on a 3-server nats-server cluster vs one server, across processes",
    description=(
        "Each case starts a 3-server JetStream cluster on loopback (the configs "
        "`agentmesh mesh cluster-init` writes: full mesh of routes, `sync_interval: "
        "always`) and a single `nats-server` with JetStream and the same `sync_interval: "
        "always`, run by the same binary (>= 2.10), plus its peer processes, all alive for "
        "the whole case so rounds interleave (cluster, single, ...). Each transport is "
        "pinned to one server (given only that URL; checked with `server_url`); buckets "
        "get the automatic replicas: 3 on the cluster, 1 alone. Request/reply: this "
        "process's `MeshNode` on s1 asks a MeshNode in a peer process on s2 (route hop "
        "each way), 256 B body; the floor is the same pair of processes' code on the "
        "single server; the raw case is the transport floor of the same path (raw "
        "nats-py, payloads of the signed frames' sizes). The request/reply goal "
        "(p50 ratio <= 1.3) is one we set, as for the federation's leaf link (one extra "
        "hop each way). Revocation: from the authority (this process) signing a `REVOKED` "
        "entry and `RevocationList.issue(entry, signer=...)` through a list on s1 until "
        "the lists of three listener processes, one on each of s1, s2, s3, all block the "
        "subject (each stamps `time.monotonic()` in its change listener); on the cluster "
        "each write is acknowledged by a majority of three fsyncing replicas. The floor "
        "is the same three processes' second lists and the authority's second list, all "
        "on the single server. The revocation goal is absolute (p99 <= 1 s, as the "
        "broker's); the ratio is reported next to it."
    ),
)

SYNC = "always"  # JetStream sync_interval of both the cluster and the single server
CONNECT_TIMEOUT = 10.0
START_TIMEOUT = 15.0  # opening a replicated bucket waits for its leader
WAIT_TIMEOUT = 10.0  # a revocation not blocked everywhere by then fails the case
LISTENERS = 3  # listener processes: one per cluster server


# --------------------------------------------------------------------------- set-up


def _cluster(stack: contextlib.ExitStack) -> NatsCluster:
    cluster = NatsCluster(size=3, sync=SYNC)
    stack.callback(cluster.close)  # registered first: stopped even if start() fails half-way
    cluster.start()
    return cluster


def _single_server(stack: contextlib.ExitStack) -> str:
    """One nats-server with JetStream, same binary and sync setting as the cluster."""
    directory = Path(tempfile.mkdtemp(prefix="agentmesh-bench-single-"))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)  # last: after the server
    config = directory / "single.conf"
    config.write_text(
        'server_name: "single"\n\n'
        "jetstream {\n"
        f'  store_dir: "{directory / "jetstream"}"\n'
        f"  sync_interval: {SYNC}\n"
        "}\n",
        encoding="utf-8",
    )
    server = NatsServerProcess(
        jetstream=False,  # the config's own jetstream block
        config_file=str(config),
        binary=find_recent_nats_server(),
    )
    stack.callback(server.close)
    server.start()
    return server.url


def _start_peers(stack: contextlib.ExitStack, peers: Sequence[PeerProcess]) -> None:
    """Each peer is closed by ``stack``; then wait until all are ready (they start in parallel)."""
    for peer in peers:
        stack.callback(peer.close)
    for peer in peers:
        peer.wait_ready()


def _on(transport: NatsTransport, url: str) -> None:
    if transport.server_url != url:
        raise RuntimeError(f"{transport.name} is connected to {transport.server_url}, not {url}")


async def _pinned(astack: contextlib.AsyncExitStack, url: str, name: str) -> NatsTransport:
    """A transport connected to the server at ``url`` only."""
    transport = NatsTransport(url, name=name)
    await transport.connect(timeout=CONNECT_TIMEOUT)
    astack.push_async_callback(transport.aclose)
    _on(transport, url)
    return transport


# --------------------------------------------------------------------------- request/reply


class Responders:
    """A responder process on s2 and one on the single server; client nodes on s1 and alone."""

    def __init__(self, stack: contextlib.ExitStack, loop: asyncio.AbstractEventLoop) -> None:
        cluster = _cluster(stack)
        single = _single_server(stack)
        self.urls = {"cluster": (cluster.url(0), cluster.url(1)), "single": (single, single)}
        peers = {
            name: PeerProcess("responder", responder) for name, (_, responder) in self.urls.items()
        }
        _start_peers(stack, list(peers.values()))
        self.dids = {name: str(peer.info["did"]) for name, peer in peers.items()}
        self.astack = async_stack(stack, loop)
        self.nodes = {
            name: loop.run_until_complete(self._node(client, name))
            for name, (client, _) in self.urls.items()
        }

    async def _node(self, url: str, name: str) -> MeshNode:
        transport = await _pinned(self.astack, url, f"bench-cluster-client-{name}")
        node = MeshNode(AgentIdentity.generate(), transport, config=NodeConfig(mesh=MESH))
        await node.start()
        self.astack.push_async_callback(node.aclose)
        return node


@BENCHMARK.latency(
    "signed request/reply across servers",
    subject="`node.request(peer, 'bench.echo', 256 B)` from this process's MeshNode on "
    "cluster server s1 to a MeshNode echoing in a peer process on s2 (a route hop each way)",
    floor="exactly the same (another client node and responder process, same code, same "
    "body) with both on the single server",
    goal=at_most(1.3, metric="p50"),
    ops=1500,
    quick_ops=200,
)
def request_reply(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop = event_loop(stack)
        setup = Responders(stack, loop)
        body = random.Random(BODY_SIZE).randbytes(BODY_SIZE)

        async def requests(name: str, n: int) -> list[float]:
            node, peer = setup.nodes[name], setup.dids[name]
            latencies = []
            for _ in range(n):
                start = perf_counter()
                reply = await node.request(peer, ECHO_TYPE, body, timeout=REQUEST_TIMEOUT)
                latencies.append(perf_counter() - start)
            if reply.body != body:
                raise RuntimeError("the echo reply does not carry the request body")
            return latencies

        yield Pair(
            lambda n: loop.run_until_complete(requests("cluster", n)),
            lambda n: loop.run_until_complete(requests("single", n)),
        )


@BENCHMARK.latency(
    "raw request/reply across servers",
    subject="raw nats-py `nc.request` from this process on s1 to the raw responder of the "
    "responder process on s2, payloads of the signed request / reply frames' sizes",
    floor="the same raw request and responder process code, both on the single server",
    ops=1500,
    quick_ops=200,
)
def raw_request_reply(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop = event_loop(stack)
        setup = Responders(stack, loop)
        request_size, reply_size = _echo_frame_sizes(random.Random(BODY_SIZE).randbytes(BODY_SIZE))
        raw, subject = _raw_request(reply_size, request_size), raw_echo_subject(MESH)

        async def connect(url: str) -> NatsClient:
            nc = await nats.connect(url, name="bench-cluster-raw-client")
            setup.astack.push_async_callback(nc.close)
            if nc.connected_url is None or nc.connected_url.port != int(url.rsplit(":", 1)[1]):
                raise RuntimeError(f"the raw client is not connected to {url}")
            return nc

        clients = {
            name: loop.run_until_complete(connect(client))
            for name, (client, _) in setup.urls.items()
        }

        async def requests(name: str, n: int) -> list[float]:
            nc = clients[name]
            latencies = []
            for _ in range(n):
                start = perf_counter()
                reply = await nc.request(subject, raw, timeout=REQUEST_TIMEOUT)
                latencies.append(perf_counter() - start)
            if len(reply.data) != reply_size:
                raise RuntimeError(f"raw reply of {len(reply.data)} bytes, not {reply_size}")
            return latencies

        yield Pair(
            lambda n: loop.run_until_complete(requests("cluster", n)),
            lambda n: loop.run_until_complete(requests("single", n)),
        )


# --------------------------------------------------------------------------- durability


@BENCHMARK.latency(
    "acknowledged write with fsync on every write (cluster)",
    subject="`stream.append` of 256 B to a 3-replica stream on a cluster with "
    "`sync_interval: always` (the setting `cluster-init` writes), writer pinned to s1",
    floor="the same append on a second 3-server cluster with the servers' default sync "
    "(every 2 minutes): the ratio is what fsync on every write costs",
    ops=600,
    quick_ops=60,
)
def durable_append(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop = event_loop(stack)
        astack = async_stack(stack, loop)
        streams = {}
        for name, sync in (("always", "always"), ("default", "default")):
            cluster = NatsCluster(size=3, sync=sync)
            stack.callback(cluster.close)
            cluster.start()
            transport = loop.run_until_complete(_pinned(astack, cluster.url(0), f"w-{name}"))
            streams[name] = loop.run_until_complete(
                transport.stream(f"DURABLE_{name}", [f"durable.{name}"])
            )
        body = random.Random(BODY_SIZE).randbytes(BODY_SIZE)

        async def appends(name: str, n: int) -> list[float]:
            stream, latencies = streams[name], []
            for _ in range(n):
                start = perf_counter()
                await stream.append(f"durable.{name}", body, timeout=REQUEST_TIMEOUT)
                latencies.append(perf_counter() - start)
            return latencies

        yield Pair(
            lambda n: loop.run_until_complete(appends("always", n)),
            lambda n: loop.run_until_complete(appends("default", n)),
        )


# --------------------------------------------------------------------------- revocation


class ListenerProcess(PeerProcess):
    """``python -m benchmarks.bench_cluster --url URL ... --authority DID``: a listener peer.

    Same control protocol (and the same ``call`` / ``close``) as the
    :mod:`benchmarks.mesh_peer` roles; only the command differs.
    """

    def __init__(self, urls: Sequence[str], authority: str) -> None:
        self.role = "revocation listener"
        self.info: dict[str, Any] = {}
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._lines: queue.Queue[str | None] = queue.Queue()
        args = [arg for url in urls for arg in ("--url", url)]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.bench_cluster",
                *args,
                "--mesh",
                MESH,
                "--authority",
                authority,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._pump, name="peer-listener", daemon=True).start()


class RevocationListeners(Peer):
    """One revocation list per URL (a transport pinned to each), stamping blocked subjects.

    Ready answer: ``servers`` (each list's ``server_url``). Command ``wait_blocked
    {did, within}``: block until one of the lists blocked ``did``; answers
    ``blocked_at`` (``time.monotonic()`` when its change listener saw the block).
    """

    def __init__(self, urls: Sequence[str], mesh: str, authority: str) -> None:
        super().__init__(",".join(urls), mesh)
        self.urls = list(urls)
        self.authorities = RevocationAuthorities(mesh=frozenset({authority}))
        self.lists: list[RevocationList] = []
        self.transports: list[NatsTransport] = []
        self.blocked: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}

    async def start(self) -> dict[str, Any]:
        for i, url in enumerate(self.urls):
            transport = NatsTransport(url, name=f"bench-cluster-listener-{i}")
            await transport.connect(timeout=CONNECT_TIMEOUT)
            self.transports.append(transport)
            revocations = RevocationList(transport, mesh=self.mesh, authorities=self.authorities)
            revocations.add_listener(self._changed)
            await revocations.start(timeout=START_TIMEOUT)
            self.lists.append(revocations)
        return {"servers": [t.server_url for t in self.transports]}

    def _changed(self, change: RevocationChange) -> None:
        if change.status not in BLOCKING_KINDS or change.did in self.blocked:
            return
        self.blocked[change.did] = at = monotonic()
        waiter = self.waiters.pop(change.did, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)

    async def cmd_wait_blocked(self, did: str, within: float = WAIT_TIMEOUT) -> dict[str, Any]:
        at = self.blocked.pop(did, None)
        if at is None:
            waiter = self.waiters[did] = asyncio.get_running_loop().create_future()
            try:
                at = await asyncio.wait_for(waiter, within)
            except TimeoutError:
                raise RuntimeError(f"{did} not blocked within {within:g}s") from None
            finally:
                self.waiters.pop(did, None)
                self.blocked.pop(did, None)
        return {"blocked_at": at}

    async def aclose(self) -> None:
        for revocations in self.lists:
            with contextlib.suppress(Exception):
                await revocations.aclose()
        for transport in self.transports:
            with contextlib.suppress(Exception):
                await transport.aclose()


@BENCHMARK.latency(
    "revocation propagation to three servers",
    subject="the authority signs a REVOKED entry and `RevocationList.issue(entry, signer=...)` "
    "through a list on s1, until the lists of three listener processes, on s1, s2 and s3, "
    "all block the subject (their change listeners' stamps)",
    floor="the same three processes' lists and the authority's list all on the single server "
    "(for scale; the goal is on the absolute p99)",
    goal=within(1.0, metric="p99"),
    ops=200,
    quick_ops=15,
)
def revocation(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        cluster = _cluster(stack)
        single = _single_server(stack)
        loop = event_loop(stack)
        astack = async_stack(stack, loop)
        authority = AgentIdentity.generate()
        authorities = RevocationAuthorities(mesh=frozenset({authority.did}))

        async def issuer(url: str, name: str) -> RevocationList:
            """The authority's list on ``url``: started first, it creates the bucket."""
            transport = await _pinned(astack, url, f"bench-cluster-authority-{name}")
            revocations = RevocationList(transport, mesh=MESH, authorities=authorities)
            await revocations.start(timeout=START_TIMEOUT)
            astack.push_async_callback(revocations.aclose)
            return revocations

        issuers = {
            "cluster": loop.run_until_complete(issuer(cluster.url(0), "cluster")),
            "single": loop.run_until_complete(issuer(single, "single")),
        }
        listeners = [ListenerProcess([cluster.url(i), single], authority.did) for i in range(3)]
        _start_peers(stack, listeners)
        for i, listener in enumerate(listeners):
            if listener.info["servers"] != [cluster.url(i), single]:
                raise RuntimeError(f"listener {i} is connected to {listener.info['servers']}")

        def blocked_at(listener: ListenerProcess, did: str) -> float:
            got = listener.call(
                "wait_blocked", did=did, within=WAIT_TIMEOUT, timeout=WAIT_TIMEOUT + 5
            )
            return float(got["blocked_at"])

        async def revoke(name: str, n: int) -> list[float]:
            revocations = issuers[name]
            latencies = []
            for _ in range(n):
                did = AgentIdentity.generate().did  # fresh subject, not timed
                start = monotonic()
                entry = sign_revocation(
                    authority,
                    subject=did,
                    kind=RevocationKind.REVOKED,
                    reason="benchmark",
                    issued_at_ms=int(time.time() * 1000),
                    sequence=0,
                )
                await revocations.issue(entry, signer=authority)
                stamps = await asyncio.gather(
                    *(asyncio.to_thread(blocked_at, listener, did) for listener in listeners)
                )
                latencies.append(max(stamps) - start)
            return latencies

        yield Pair(
            lambda n: loop.run_until_complete(revoke("cluster", n)),
            lambda n: loop.run_until_complete(revoke("single", n)),
        )


# --------------------------------------------------------------------------- listener peer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_cluster",
        description="A revocation listener peer of the cluster benchmark (JSON lines on stdio).",
    )
    parser.add_argument(
        "--url", action="append", required=True, help="a server (repeat: one list per server)"
    )
    parser.add_argument("--mesh", required=True, help="mesh (subject namespace)")
    parser.add_argument("--authority", required=True, help="the revocation authority's DID")
    args = parser.parse_args(argv)
    asyncio.run(serve(RevocationListeners(args.url, args.mesh, args.authority)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
