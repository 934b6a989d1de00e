"""Broker-enforced identity (``docs/broker.md``) over real nats-servers, across processes.

Every case starts what it measures and stops it all when it ends, whatever
happens: a *secured* mesh (``init_mesh`` in a temporary directory, then a real
``nats-server -c nats-server.conf``: operator mode, decentralized JWT auth, the
full account resolver, JetStream; stores provisioned by the authority, as
``tests.agentmesh.broker.securemesh.SecureMesh`` does), and where the case needs
one an *open* ``nats-server`` (no auth, no JetStream), both on loopback with
random ports. Peer processes are ``python -m benchmarks.mesh_peer ROLE`` (JSON
lines on stdin / stdout, see that module).

* **connect with nkey + JWT** (latency, no goal: the issue asks to measure it):
  ``NatsTransport(url, config=BrokerCredentials(identity, user_jwt).nats_config())
  .connect()`` to the secured server (the server's nonce signed with the agent's
  key, the user JWT checked against the account's signing key and its
  revocations), against the same ``NatsTransport(url).connect()`` anonymously to
  the open server. Only the connect is timed; each connection is closed before
  the next (not timed).
* **signed request/reply, auth on vs off** (latency, goal p50 ratio <= 1.05):
  this process's :class:`MeshNode` does ``node.request(peer, "bench.echo", 256 B)``
  to a MeshNode responder in a peer process, both connected to the secured server
  with their own identities and user JWTs (``mesh_peer responder --seed --jwt``),
  against exactly the same setup on the open server. Both servers, both responder
  processes and both client nodes live for the whole case, so rounds interleave.
* **revocation to disconnect** (latency, goal: absolute p99 <= 1 s): a peer
  process (``mesh_peer broker_agents``) holds the connections of fresh agents
  (connected before the round, not timed), each with an ``on_close`` callback
  stamping ``time.monotonic()``. Per operation, the authority (this process,
  ``authority_session``) signs a ``REVOKED`` entry for one agent, stores it with
  ``RevocationList.issue`` (KV) and pushes the account JWT with
  ``BrokerRevoker.sync()``; the latency runs from the start of the signing until
  the server closed that agent's connection in the peer process (the peer's
  monotonic stamp minus ours: CLOCK_MONOTONIC is shared by the processes of one
  Linux host). The floor is "tell another process something": a raw nats-py
  publish of 8 bytes by this process (as the authority) to a raw nats-py
  subscriber in the same peer process, on the same secured server, stamped on
  receipt. Revocations are permanent, so the account JWT lists every agent
  revoked so far in the case: it grows by one entry per operation, to about
  1,400 by the last round (110 with ``--quick``), and every push rebuilds and
  re-sends the whole list, so later rounds are slower than the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from time import monotonic, perf_counter

import nats
from nats.aio.client import Client as NatsClient

from agentmesh.broker.revocation_sync import BrokerRevoker
from agentmesh.broker.session import authority_session
from agentmesh.broker.subject_map import Role
from agentmesh.directory.revocations import RevocationList
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.transport.nats import NatsConfig, NatsTransport
from benchmarks.bench_mesh import BODY_SIZE, MESH, REQUEST_TIMEOUT, PeerProcess
from benchmarks.harness import Benchmark, Pair, RunConfig, async_stack, at_most, event_loop, within
from benchmarks.mesh_peer import ECHO_TYPE, raw_connect_options
from iatp.identity import AgentIdentity
from registry.revocation import RevocationKind, sign_revocation
from tests.agentmesh.broker.securemesh import SecureMesh
from tests.natsserver import NatsServerProcess

BENCHMARK = Benchmark(
    name="broker",
    title="Broker-enforced identity: secured nats-server (nkey + JWT) vs open, across processes",
    description=(
        "Each case starts a secured mesh (`init_mesh` in a temporary directory, a real "
        "`nats-server` on its generated config: operator mode, JWT auth, full account "
        "resolver, JetStream, stores provisioned) and, where it needs one, an open "
        "`nats-server` (no auth), both on loopback, plus its peer processes "
        "(`python -m benchmarks.mesh_peer`), all alive for the whole case so rounds "
        "interleave. Connect: only `connect()` is timed, each connection is closed (not "
        "timed) before the next; no goal. Request/reply: the same two processes and 256 B "
        "body on both servers, each node with its own identity (and user JWT on the "
        "secured one). Revocation: latency from the authority signing a `REVOKED` entry "
        "(then `RevocationList.issue`, `BrokerRevoker.sync()`) until the server closed the "
        "agent's connection, held by a peer process that stamps `time.monotonic()` in its "
        "`on_close` callback; the floor is a raw 8-byte core-NATS publish from this process "
        "to a raw subscriber in the same peer process on the same server. Revocations are "
        "permanent: the account JWT grows by one entry per operation (to ~1,400 by the "
        "last round; 110 with `--quick`), and each push re-lists them all, so the "
        "revocation rounds get slower from the first to the last (the min / max columns). "
        "The revocation goal is absolute (p99 <= 1 s)."
    ),
)

CONNECT_TIMEOUT = 10.0
WAIT_TIMEOUT = 10.0  # a revoked agent not disconnected by then fails the case


# --------------------------------------------------------------------------- set-up


def _secure_mesh(stack: contextlib.ExitStack) -> SecureMesh:
    """A secured mesh in a temporary directory, served and provisioned; removed at the end."""
    directory = Path(tempfile.mkdtemp(prefix="agentmesh-bench-broker-"))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)  # last: after the server
    sm = SecureMesh(directory / "mesh", mesh=MESH)
    stack.callback(sm.close)  # registered first: stopped even if start() fails half-way
    sm.start()
    return sm


def _open_server(stack: contextlib.ExitStack) -> str:
    server = NatsServerProcess(jetstream=False)
    stack.callback(server.close)
    server.start()
    return server.url


def _peers(
    stack: contextlib.ExitStack, *specs: tuple[str, str, tuple[str, ...]]
) -> list[PeerProcess]:
    """Start ``(role, url, extra args)`` peers in parallel; each is closed by ``stack``."""
    peers = []
    for role, url, extra in specs:
        peer = PeerProcess(role, url, *extra)
        stack.callback(peer.close)
        peers.append(peer)
    for peer in peers:
        peer.wait_ready()
    return peers


def _peer_credentials(sm: SecureMesh, identity: AgentIdentity, name: str) -> tuple[str, ...]:
    """``--seed HEX --jwt FILE`` for a peer process running as ``identity`` (an agent)."""
    jwt_file = sm.directory.parent / f"{name}.jwt"
    jwt_file.write_text(sm.powers.issue_user(identity.did, Role.AGENT) + "\n")
    return ("--seed", identity.seed().hex(), "--jwt", str(jwt_file))


# --------------------------------------------------------------------------- connect


@BENCHMARK.latency(
    "connect with nkey + JWT",
    subject="`NatsTransport(url, config=BrokerCredentials(identity, user_jwt).nats_config())"
    ".connect()` to the secured server (nonce signed with the agent's key, user JWT checked)",
    floor="the same `NatsTransport(url).connect()`, anonymous, to an open nats-server started "
    "in the same case",
    ops=300,
    quick_ops=30,
)
def connect(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        sm = _secure_mesh(stack)
        open_url = _open_server(stack)
        loop = event_loop(stack)
        secured = sm.member(Role.AGENT).credentials().nats_config()

        async def connects(url: str, nats_config: NatsConfig | None, n: int) -> list[float]:
            latencies = []
            for _ in range(n):
                transport = NatsTransport(url, name="bench-connect", config=nats_config)
                start = perf_counter()
                await transport.connect(timeout=CONNECT_TIMEOUT)
                latencies.append(perf_counter() - start)
                await transport.aclose()
            return latencies

        yield Pair(
            lambda n: loop.run_until_complete(connects(sm.url, secured, n)),
            lambda n: loop.run_until_complete(connects(open_url, None, n)),
        )


# --------------------------------------------------------------------------- request/reply


async def _started_node(
    astack: contextlib.AsyncExitStack,
    url: str,
    identity: AgentIdentity,
    nats_config: NatsConfig | None,
) -> MeshNode:
    node = MeshNode(
        identity,
        NatsTransport(url, name="bench-client", config=nats_config),
        config=NodeConfig(mesh=MESH),
    )
    astack.push_async_callback(node.aclose)
    await node.start()
    return node


@BENCHMARK.latency(
    "signed request/reply, auth on vs off",
    subject="`node.request(peer, 'bench.echo', 256 B)` to a MeshNode echoing in a peer "
    "process, both on the secured server with their own identities and user JWTs",
    floor="exactly the same on an open nats-server (no auth): another responder process "
    "and client node, same code, same body",
    goal=at_most(1.05, metric="p50"),
    ops=1500,
    quick_ops=300,
)
def request_reply_auth(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        sm = _secure_mesh(stack)
        open_url = _open_server(stack)
        responder = AgentIdentity.generate()  # the identity the responder's JWT names
        secured_peer, open_peer = _peers(
            stack,
            ("responder", sm.url, _peer_credentials(sm, responder, "responder")),
            ("responder", open_url, ()),
        )
        if secured_peer.info["did"] != responder.did or secured_peer.info["raw"]:
            raise RuntimeError(f"the secured responder runs as {secured_peer.info}")
        loop = event_loop(stack)
        astack = async_stack(stack, loop)
        client = sm.member(Role.AGENT)
        secured_node = loop.run_until_complete(
            _started_node(astack, sm.url, client.identity, client.credentials().nats_config())
        )
        open_node = loop.run_until_complete(
            _started_node(astack, open_url, AgentIdentity.generate(), None)
        )
        body = random.Random(BODY_SIZE).randbytes(BODY_SIZE)

        async def requests(node: MeshNode, peer_did: str, n: int) -> list[float]:
            latencies = []
            for _ in range(n):
                start = perf_counter()
                reply = await node.request(peer_did, ECHO_TYPE, body, timeout=REQUEST_TIMEOUT)
                latencies.append(perf_counter() - start)
            if reply.body != body:
                raise RuntimeError("the echo reply does not carry the request body")
            return latencies

        secured_did, open_did = secured_peer.info["did"], open_peer.info["did"]
        yield Pair(
            lambda n: loop.run_until_complete(requests(secured_node, secured_did, n)),
            lambda n: loop.run_until_complete(requests(open_node, open_did, n)),
        )


# --------------------------------------------------------------------------- revocation


@BENCHMARK.latency(
    "revocation to disconnect",
    subject="the authority signs a REVOKED entry, `RevocationList.issue` (KV), "
    "`BrokerRevoker.sync()` (account JWT pushed), until the server closed the agent's "
    "connection held by a peer process (its `on_close` stamp)",
    floor="a raw nats-py publish of 8 bytes from this process until a raw subscriber in the "
    "same peer process received it, same server (for scale; the goal is on the absolute p99)",
    goal=within(1.0, metric="p99"),
    ops=150,
    quick_ops=30,
)
def revocation(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        sm = _secure_mesh(stack)
        listener = AgentIdentity.generate()
        (peer,) = _peers(
            stack, ("broker_agents", sm.url, _peer_credentials(sm, listener, "listener"))
        )
        loop = event_loop(stack)
        astack = async_stack(stack, loop)
        authority = sm.authority.identity

        async def start() -> tuple[NatsClient, RevocationList, BrokerRevoker]:
            session = await astack.enter_async_context(
                authority_session(sm.directory, authority, url=sm.url)
            )
            revocations = await astack.enter_async_context(session.revocation_list())
            revoker = BrokerRevoker(session.powers, session.system, revocations)
            options = raw_connect_options(sm.authority.credentials().nats_config())
            nc = await nats.connect(sm.url, name="bench-authority-raw", **options)
            astack.push_async_callback(nc.close)
            return nc, revocations, revoker

        nc, revocations, revoker = loop.run_until_complete(start())
        subject_to_listener = peer.info["subject"]
        sequence = itertools.count()

        async def revoke(dids: Sequence[str]) -> list[float]:
            latencies = []
            for did in dids:
                start = monotonic()
                entry = sign_revocation(
                    authority,
                    subject=did,
                    kind=RevocationKind.REVOKED,
                    reason="benchmark",
                    issued_at_ms=int(time.time() * 1000),
                    sequence=0,
                )
                await revocations.issue(entry)
                if not await revoker.sync():
                    raise RuntimeError("the revoker pushed nothing for a new revocation")
                closed = await asyncio.to_thread(
                    peer.call, "wait_closed", did=did, within=WAIT_TIMEOUT, timeout=WAIT_TIMEOUT + 5
                )
                if not closed["revoked"]:
                    raise RuntimeError(f"{did} was disconnected, but not as revoked: {closed}")
                latencies.append(float(closed["closed_at"]) - start)
            return latencies

        async def tell(n: int) -> list[float]:
            latencies = []
            for _ in range(n):
                seq = next(sequence)
                start = monotonic()
                await nc.publish(subject_to_listener, seq.to_bytes(8, "big"))
                got = await asyncio.to_thread(
                    peer.call,
                    "wait_message",
                    seq=seq,
                    within=WAIT_TIMEOUT,
                    timeout=WAIT_TIMEOUT + 5,
                )
                latencies.append(float(got["received_at"]) - start)
            return latencies

        def subject(n: int) -> list[float]:
            agents = [sm.member(Role.AGENT) for _ in range(n)]  # fresh agents, not timed
            connected = peer.call(
                "connect",
                agents=[{"seed": a.identity.seed().hex(), "jwt": a.user_jwt} for a in agents],
                timeout=60 + n / 10,
            )
            if connected["connected"] != n:
                raise RuntimeError(f"the peer connected {connected['connected']} of {n} agents")
            return loop.run_until_complete(revoke([a.did for a in agents]))

        yield Pair(subject, lambda n: loop.run_until_complete(tell(n)))
