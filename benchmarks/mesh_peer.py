"""The other process of the mesh benchmarks: ``python -m benchmarks.mesh_peer ROLE --url URL``.

The benchmarks (``bench_mesh.py``, ``bench_broker.py``, ``bench_federation.py``)
start one process per role and drive it with a small control protocol on stdin /
stdout, one JSON object per line: they write a command ``{"cmd": NAME, ...}`` and
read exactly one answer line (``{"error": ...}`` if the command failed). The first
line a peer prints is ``{"ready": true, ...}``. End of stdin (the benchmark closed
the pipe or died) stops the peer, so a peer never outlives its benchmark;
``{"cmd": "quit"}`` does the same.

Roles:

``responder`` (request/reply and handshake cases; broker request/reply)
    A :class:`MeshNode` that answers ``bench.echo`` with the request body (and
    handshakes, as every node does), plus a raw nats-py responder on
    ``{mesh}.raw.echo`` on its own connection in the same process and event loop:
    it answers a request whose first 4 bytes say ``L`` (big-endian) with ``L``
    bytes, so the floor can mirror the signed frames' sizes in both directions.
    ``--seed HEX`` makes the node's identity the one of that Ed25519 seed (else
    a fresh one); ``--jwt FILE`` connects it to a secured mesh with that user JWT
    (``BrokerCredentials(identity, jwt).nats_config()``, ``docs/broker.md``), and
    then there is no raw responder (an agent's JWT grants no ``{mesh}.raw.*``).

``broker_agents`` (broker benchmark, revocation case)
    Holds agents' connections to a secured mesh and records when the server
    closes them, plus one raw nats-py listener on its own inbox subject
    (``{mesh}.agent.{key}.inbox``; ``--seed`` / ``--jwt`` are the listener's
    identity and user JWT, anonymous without them) that stamps each message.
    Times are ``time.monotonic()`` (CLOCK_MONOTONIC, shared by the processes of
    one Linux host, so the benchmark subtracts its own ``time.monotonic()``).
    Commands:

    * ``connect {agents: [{seed, jwt}], connect_timeout}``: connect one
      :class:`NatsTransport` per agent with its credentials (not timed) and
      register an ``on_close`` callback stamping the close; answers ``dids``;
    * ``wait_closed {did, within}``: block until that agent's connection closed;
      answers ``closed_at`` and ``revoked`` (whether the transport saw a
      revocation: ``AccessRevoked``);
    * ``closed {clear}``: every recorded close time so far (DID -> ``closed_at``);
    * ``wait_message {seq, within}``: block until the listener received the
      message whose first 8 bytes are ``seq`` (big-endian); answers ``received_at``.

``receiver`` (one-way throughput case)
    A :class:`MeshNode` with the default :class:`NodeConfig` (``verify_workers`` =
    CPU count) that counts handled ``bench.oneway`` messages, plus a raw nats-py
    subscriber on ``{mesh}.raw.oneway`` that only counts (and keeps the frames for
    the verification floor). Commands:

    * ``expect {mode: "mesh"|"raw", n}``: reset the count, arm for ``n`` messages;
    * ``wait {timeout}``: block until ``n`` arrived; answers ``seconds`` from the
      first to the last message handled (mesh) or received (raw), and the node's
      counters;
    * ``verify {n, threads}``: raw PyNaCl verification of the last ``n`` frames the
      raw subscriber received, split in ``threads`` chunks on a pool of ``threads``
      (as the node's BatchVerifier does); answers ``seconds``.

``sender`` (one-way throughput case)
    A raw nats-py client with its own identity. ``seal {n, to, reuse}`` pre-seals
    ``n`` distinct envelopes (256 B body, 5 min lifetime) to DID ``to`` (``reuse``:
    keep the current frames if there are enough); ``blast {subject, n}`` publishes
    them as fast as nats-py can, flushes, and answers ``seconds``.

``fed_responder`` (federation benchmark, request/reply)
    A :class:`MeshNode` of one organization of a federation lab
    (``--mesh`` is the organization's mesh) with :class:`NodeFederation` installed
    (``--organization DID``: its authority; ``--membership FILE``: the node's
    membership credential, if any), that answers ``bench.echo`` with the request
    body and registers its card (capability ``bench``) in its mesh's directory, so
    the organization's steward can ship it to partners. ``--seed`` / ``--jwt`` are
    the node's identity and user JWT (required). With ``--raw-seed HEX --raw-jwt
    FILE``, also a raw nats-py responder (the mirror protocol of ``responder``) on
    the inbox subject of that second identity (``{mesh}.agent.{key}.inbox``), which
    an agreement can export like any agent. Commands: ``stats`` (the node's
    counters), ``view`` (what its federation view holds: partner orgs, status
    lists, partner cards, refusals).

``fed_steward`` (federation benchmark)
    The steward of one organization (:func:`agentmesh.federation.service.run_steward`):
    ``--mesh-dir DIR`` is the organization's mesh directory, ``--seed`` its
    authority's seed (no ``--jwt``: the authority's JWTs are in the directory),
    ``--resync SECONDS`` the re-shipment period. Ready once the steward runs;
    ``stats`` answers its last counters.

``--profile PATH`` (receiver) runs cProfile on the event-loop thread while mesh
messages are counted and writes the stats to ``PATH`` on quit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import json
import os
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import monotonic, perf_counter, process_time, thread_time
from typing import Any

import nats
from nacl.signing import VerifyKey

from agentmesh.broker.authority import read_jwt
from agentmesh.broker.credentials import BrokerCredentials
from agentmesh.directory.membership import DirectoryMembership
from agentmesh.errors import AccessRevoked, TransportError
from agentmesh.federation.runtime import NodeFederation
from agentmesh.federation.service import run_steward
from agentmesh.node.addressing import MeshAddressing
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.transport.nats import NatsConfig, NatsTransport
from iatp.clock import SystemClock
from iatp.did import public_key_from_did
from iatp.envelope import SIGNING_DOMAIN, new_envelope, parse_frame, seal_envelope
from iatp.identity import AgentIdentity
from registry.card import parse_capability

ECHO_TYPE = "bench.echo"
ONEWAY_TYPE = "bench.oneway"
ONEWAY_BODY = 256
ONEWAY_LIFETIME_MS = 300_000  # the receiver's maximum (EnvelopeLimits.max_lifetime_ms)

Command = Callable[..., Awaitable[dict[str, Any]]]


def raw_echo_subject(mesh: str) -> str:
    return f"{mesh}.raw.echo"


def raw_oneway_subject(mesh: str) -> str:
    return f"{mesh}.raw.oneway"


def raw_connect_options(config: NatsConfig) -> dict[str, Any]:
    """``nats.connect`` keyword arguments for the credentials in ``config`` (if any)."""
    if config.nkey is None:
        return {}
    user_jwt = config.nkey.user_jwt
    options: dict[str, Any] = {
        "nkeys_seed_str": config.nkey.seed,
        "inbox_prefix": config.inbox_prefix,
    }
    if user_jwt is not None:
        options["user_jwt_cb"] = lambda: user_jwt.encode()
    return options


def _say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- roles


class Peer:
    """A role: ``start()``, then commands ``cmd_<name>(**args) -> dict``, then ``aclose()``."""

    def __init__(self, url: str, mesh: str) -> None:
        self.url = url
        self.mesh = mesh

    async def start(self) -> dict[str, Any]:
        return {}

    async def aclose(self) -> None:
        return None

    async def cmd_ping(self) -> dict[str, Any]:
        return {"pong": True}


class Responder(Peer):
    def __init__(
        self,
        url: str,
        mesh: str,
        identity: AgentIdentity | None = None,
        credentials: BrokerCredentials | None = None,
    ) -> None:
        super().__init__(url, mesh)
        self.identity = identity or AgentIdentity.generate()
        self.credentials = credentials
        self.nc: Any = None

    async def start(self) -> dict[str, Any]:
        config = None if self.credentials is None else self.credentials.nats_config()
        self.node = MeshNode(
            self.identity,
            NatsTransport(self.url, name="bench-responder", config=config),
            config=NodeConfig(mesh=self.mesh),
        )
        self.node.handle(ECHO_TYPE, self._echo)
        await self.node.start()
        if self.credentials is None:  # an agent's JWT grants no {mesh}.raw.* subject
            self.nc = await nats.connect(self.url, name="bench-raw-responder")
            self._replies: dict[int, bytes] = {}
            await self.nc.subscribe(raw_echo_subject(self.mesh), cb=self._raw)
            await self.nc.flush()
        return {"did": self.node.did, "raw": self.nc is not None}

    @staticmethod
    async def _echo(message: InboundMessage) -> bytes:
        return message.body

    async def _raw(self, msg: Any) -> None:
        size = int.from_bytes(msg.data[:4], "big")
        reply = self._replies.get(size)
        if reply is None:
            reply = self._replies[size] = bytes(size)
        await msg.respond(reply)

    async def cmd_stats(self) -> dict[str, Any]:
        return self.node.counters.snapshot()

    async def aclose(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        await self.node.aclose()


class Receiver(Peer):
    def __init__(self, url: str, mesh: str, profile: str | None = None) -> None:
        super().__init__(url, mesh)
        self.profile_path = profile
        self.profiler = cProfile.Profile() if profile else None
        self.mode = "idle"
        self.target = 0
        self.count = 0
        self.first = self.last = 0.0
        self.done = asyncio.Event()
        self.frames: list[bytes] = []
        self.pool: ThreadPoolExecutor | None = None
        self.pool_threads = 0
        self.cpu_start = (0.0, 0.0)

    async def start(self) -> dict[str, Any]:
        self.node = MeshNode(
            AgentIdentity.generate(),
            NatsTransport(self.url, name="bench-receiver"),
            config=NodeConfig(mesh=self.mesh),  # defaults: verify_workers = CPU count
        )
        self.node.handle(ONEWAY_TYPE, self._handled)
        await self.node.start()
        self.nc = await nats.connect(self.url, name="bench-raw-receiver")
        await self.nc.subscribe(raw_oneway_subject(self.mesh), cb=self._raw)
        await self.nc.flush()
        return {
            "did": self.node.did,
            "inbox": self.node.addressing.inbox(self.node.did),
            "verify_workers": self.node.config.verify_workers,
        }

    def _tick(self) -> None:
        self.count += 1
        now = perf_counter()
        if self.count == 1:
            self.first = now
        self.last = now
        if self.count == self.target:
            self.done.set()

    async def _handled(self, message: InboundMessage) -> None:
        if self.mode == "mesh":
            self._tick()

    async def _raw(self, msg: Any) -> None:
        if self.mode == "raw":
            self.frames.append(msg.data)
            self._tick()

    async def cmd_expect(self, mode: str, n: int) -> dict[str, Any]:
        if mode not in ("mesh", "raw"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mode, self.target, self.count = mode, n, 0
        self.first = self.last = 0.0
        self.done = asyncio.Event()
        if mode == "raw":
            self.frames = []
        if mode == "mesh" and self.profiler is not None:
            self.profiler.enable()
        self.cpu_start = (thread_time(), process_time())
        return {"armed": n}

    async def cmd_wait(self, timeout: float = 60.0) -> dict[str, Any]:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), timeout)
        finally:
            if self.mode == "mesh" and self.profiler is not None:
                self.profiler.disable()
        loop_cpu, process_cpu = thread_time(), process_time()
        answer = {
            "mode": self.mode,
            "count": self.count,
            "target": self.target,
            "seconds": self.last - self.first,
            # CPU seconds since `expect`: the event-loop thread, and the whole process
            "loop_cpu": loop_cpu - self.cpu_start[0],
            "process_cpu": process_cpu - self.cpu_start[1],
            "counters": self.node.counters.snapshot(),
        }
        self.mode = "idle"
        return answer

    async def cmd_verify(self, n: int, threads: int) -> dict[str, Any]:
        frames = self.frames[-n:]
        if len(frames) < n:
            raise ValueError(f"only {len(frames)} frames received, {n} asked")
        keys: dict[str, VerifyKey] = {}
        signed: list[bytes] = []
        for data in frames:  # preparation, not measured: the floor is the verification
            frame = parse_frame(data)
            if frame.sender not in keys:
                keys[frame.sender] = VerifyKey(public_key_from_did(frame.sender))
            signed.append(frame.signature + SIGNING_DOMAIN + frame.payload)
        (key,) = keys.values()
        if self.pool is None or self.pool_threads != threads:
            if self.pool is not None:
                self.pool.shutdown()
            self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="raw-verify")
            self.pool_threads = threads
        size = -(-n // threads)
        chunks = [signed[i : i + size] for i in range(0, n, size)]
        loop = asyncio.get_running_loop()

        def verify_chunk(chunk: list[bytes]) -> int:
            verify = key.verify
            for message in chunk:
                verify(message)
            return len(chunk)

        start = perf_counter()
        done = await asyncio.gather(
            *(loop.run_in_executor(self.pool, verify_chunk, chunk) for chunk in chunks)
        )
        seconds = perf_counter() - start
        return {"seconds": seconds, "verified": sum(done), "threads": threads}

    async def aclose(self) -> None:
        if self.profiler is not None and self.profile_path:
            self.profiler.dump_stats(self.profile_path)
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            await self.nc.close()
        await self.node.aclose()


class Sender(Peer):
    async def start(self) -> dict[str, Any]:
        self.identity = AgentIdentity.generate()
        self.clock = SystemClock()
        self.body = os.urandom(ONEWAY_BODY)
        self.frames: list[bytes] = []
        self.nc = await nats.connect(self.url, name="bench-sender")
        return {"did": self.identity.did}

    async def cmd_seal(self, n: int, to: str, reuse: bool = False) -> dict[str, Any]:
        if not (reuse and len(self.frames) >= n):
            did, body, now_ms = self.identity.did, self.body, self.clock.now_ms
            self.frames = [
                seal_envelope(
                    new_envelope(
                        sender=did,
                        type=ONEWAY_TYPE,
                        recipient=to,
                        body=body,
                        now_ms=now_ms(),
                        lifetime_ms=ONEWAY_LIFETIME_MS,
                    ),
                    self.identity,
                )
                for _ in range(n)
            ]
        return {"frames": len(self.frames), "frame_bytes": len(self.frames[0])}

    async def cmd_blast(self, subject: str, n: int) -> dict[str, Any]:
        frames = self.frames[:n]
        publish = self.nc.publish
        start = perf_counter()
        for frame in frames:
            await publish(subject, frame)
        await self.nc.flush(timeout=30)
        return {"seconds": perf_counter() - start, "sent": len(frames)}

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()


class BrokerAgents(Peer):
    def __init__(
        self,
        url: str,
        mesh: str,
        identity: AgentIdentity | None = None,
        credentials: BrokerCredentials | None = None,
    ) -> None:
        super().__init__(url, mesh)
        self.identity = identity or AgentIdentity.generate()
        self.credentials = credentials
        self.transports: dict[str, NatsTransport] = {}
        self.closed_at: dict[str, float] = {}
        self.revoked: dict[str, bool] = {}
        self.received_at: dict[int, float] = {}
        self._waiters: dict[object, asyncio.Future[None]] = {}

    async def start(self) -> dict[str, Any]:
        options = (
            {} if self.credentials is None else raw_connect_options(self.credentials.nats_config())
        )
        self.nc = await nats.connect(self.url, name="bench-listener", **options)
        subject = MeshAddressing(self.mesh).inbox(self.identity.did)
        await self.nc.subscribe(subject, cb=self._received)
        await self.nc.flush()
        return {"did": self.identity.did, "subject": subject}

    def _wake(self, key: object) -> None:
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, kind: str, key: Any, table: dict[Any, float], within: float) -> float:
        """``table[key]``, once it is there (``_wake((kind, key))`` says it may be)."""
        if key not in table:
            loop = asyncio.get_running_loop()
            waiter = self._waiters.setdefault((kind, key), loop.create_future())
            try:
                await asyncio.wait_for(asyncio.shield(waiter), within)
            except TimeoutError:
                self._waiters.pop((kind, key), None)
                raise TimeoutError(f"no {kind} for {key!r} after {within:g}s") from None
        return table[key]

    async def _received(self, msg: Any) -> None:
        now = monotonic()
        seq = int.from_bytes(msg.data[:8], "big")
        self.received_at[seq] = now
        self._wake(("message", seq))

    def _on_close(self, did: str) -> None:
        self.closed_at[did] = monotonic()
        transport = self.transports.pop(did, None)
        revoked = False
        if transport is not None:
            try:
                transport.check_open()
            except AccessRevoked:
                revoked = True
            except TransportError:
                pass
        self.revoked[did] = revoked
        self._wake(("closed", did))

    async def cmd_connect(
        self, agents: list[dict[str, str]], connect_timeout: float = 10.0
    ) -> dict[str, Any]:
        built: dict[str, NatsTransport] = {}
        for agent in agents:
            identity = AgentIdentity.from_seed(bytes.fromhex(agent["seed"]))
            credentials = BrokerCredentials(identity, agent["jwt"])
            built[identity.did] = NatsTransport(
                self.url, name=f"bench-agent-{identity.did[-8:]}", config=credentials.nats_config()
            )
        self.transports.update(built)
        await asyncio.gather(*(t.connect(timeout=connect_timeout) for t in built.values()))
        for did, transport in built.items():
            transport.on_close(functools.partial(self._on_close, did))
        return {"connected": len(built), "dids": list(built)}

    async def cmd_wait_closed(self, did: str, within: float = 10.0) -> dict[str, Any]:
        closed_at = await self._wait("closed", did, self.closed_at, within)
        return {"did": did, "closed_at": closed_at, "revoked": self.revoked.get(did, False)}

    async def cmd_closed(self, clear: bool = False) -> dict[str, Any]:
        answer = {"closed": dict(self.closed_at), "revoked": dict(self.revoked)}
        if clear:
            self.closed_at.clear()
            self.revoked.clear()
        return answer

    async def cmd_wait_message(self, seq: int, within: float = 10.0) -> dict[str, Any]:
        received_at = await self._wait("message", seq, self.received_at, within)
        del self.received_at[seq]
        return {"seq": seq, "received_at": received_at}

    async def aclose(self) -> None:
        for transport in list(self.transports.values()):
            with contextlib.suppress(Exception):
                await transport.aclose()
        with contextlib.suppress(Exception):
            await self.nc.close()


class FedResponder(Peer):
    """A federated echo node of one organization, plus an optional raw responder."""

    def __init__(
        self,
        url: str,
        mesh: str,
        credentials: BrokerCredentials,
        organization: str,
        membership: str | None = None,
        raw_credentials: BrokerCredentials | None = None,
    ) -> None:
        super().__init__(url, mesh)
        self.identity = credentials.identity
        self.credentials = credentials
        self.organization = organization
        self.membership = membership
        self.raw_credentials = raw_credentials
        self.nc: Any = None
        self._replies: dict[int, bytes] = {}
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> dict[str, Any]:
        stack = self._stack
        transport = NatsTransport(
            self.url, name="bench-fed-responder", config=self.credentials.nats_config()
        )
        await transport.connect(timeout=10.0)
        stack.push_async_callback(transport.aclose)
        self.federation = await stack.enter_async_context(
            NodeFederation(
                transport,
                self.identity,
                mesh=self.mesh,
                organization=self.organization,
                membership=self.membership,
            )
        )
        card = await stack.enter_async_context(
            DirectoryMembership(
                self.identity,
                transport,
                mesh=self.mesh,
                capabilities=(parse_capability("bench"),),
                authorities=(self.organization,),
            )
        )
        self.federation.directory = card.directory
        self.node = MeshNode(self.identity, transport, config=NodeConfig(mesh=self.mesh))
        self.federation.install(self.node)  # the guard before the handler is reachable
        self.node.handle(ECHO_TYPE, Responder._echo)
        await self.node.start()
        stack.push_async_callback(self.node.aclose)
        answer: dict[str, Any] = {"did": self.node.did, "raw_did": None, "raw_subject": None}
        if self.raw_credentials is not None:
            options = raw_connect_options(self.raw_credentials.nats_config())
            self.nc = await nats.connect(self.url, name="bench-fed-raw-responder", **options)
            stack.push_async_callback(self.nc.close)
            raw_did = self.raw_credentials.identity.did
            subject = MeshAddressing(self.mesh).inbox(raw_did)
            await self.nc.subscribe(subject, cb=self._raw)
            await self.nc.flush()
            answer.update(raw_did=raw_did, raw_subject=subject)
        return answer

    async def _raw(self, msg: Any) -> None:
        size = int.from_bytes(msg.data[:4], "big")
        reply = self._replies.get(size)
        if reply is None:
            reply = self._replies[size] = bytes(size)
        await msg.respond(reply)

    async def cmd_stats(self) -> dict[str, Any]:
        return self.node.counters.snapshot()

    async def cmd_view(self) -> dict[str, Any]:
        view = self.federation.view
        return {
            "partners": [p.theirs.org for p in view.partnerships()],
            "status": sorted(
                p.theirs.org for p in view.partnerships() if view.status_of(p.theirs.authority)
            ),
            "cards": sorted(a.card.did for a in view.partner_agents()),
            "refused": dict(view.refused),
        }

    async def aclose(self) -> None:
        await self._stack.aclose()


class FedSteward(Peer):
    """One organization's steward (``run_steward``) until the benchmark quits."""

    def __init__(
        self, url: str, mesh: str, mesh_dir: str, authority: AgentIdentity, resync: float
    ) -> None:
        super().__init__(url, mesh)
        self.mesh_dir = mesh_dir
        self.authority = authority
        self.resync = resync
        self.stop = asyncio.Event()
        self.events: dict[str, dict[str, Any]] = {}
        self._running = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _emit(self, event: str, **fields: Any) -> None:
        self.events[event] = fields  # stdout is the control channel: keep the last of each
        if event == "steward":
            self._running.set()

    async def start(self) -> dict[str, Any]:
        self._task = asyncio.create_task(
            run_steward(
                self.mesh_dir,
                self.authority,
                url=self.url,
                stop=self.stop,
                emit=self._emit,
                resync_every=self.resync,
                report_every=1.0,
            )
        )
        running = asyncio.create_task(self._running.wait())
        await asyncio.wait({self._task, running}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():  # it failed to start: say why
            running.cancel()
            self._task.result()
            raise RuntimeError("the steward stopped before it ran")
        return dict(self.events["steward"])

    async def cmd_stats(self) -> dict[str, Any]:
        return {"events": self.events}

    async def aclose(self) -> None:
        self.stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10.0)


ROLES: dict[str, type[Peer]] = {
    "responder": Responder,
    "receiver": Receiver,
    "sender": Sender,
    "broker_agents": BrokerAgents,
    "fed_responder": FedResponder,
    "fed_steward": FedSteward,
}


# --------------------------------------------------------------------------- control loop


async def serve(peer: Peer) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _say(ready=True, pid=os.getpid(), **await peer.start())
    try:
        while line := await reader.readline():
            request = json.loads(line)
            name = request.pop("cmd")
            if name == "quit":
                break
            command: Command | None = getattr(peer, f"cmd_{name}", None)
            try:
                if command is None:
                    raise ValueError(f"unknown command {name!r}")
                _say(**await command(**request))
            except Exception as exc:  # report, keep serving: the benchmark decides
                _say(error=f"{type(exc).__name__}: {exc}")
    finally:
        await peer.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mesh_peer")
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--url", required=True, help="nats://host:port")
    parser.add_argument("--mesh", required=True, help="mesh (subject namespace)")
    parser.add_argument("--profile", help="receiver: cProfile stats file (mesh runs only)")
    parser.add_argument(
        "--seed",
        help="responder, broker_agents, fed_responder: the Ed25519 identity seed (hex) to use; "
        "fed_steward: the organization authority's",
    )
    parser.add_argument(
        "--jwt",
        help="responder, broker_agents, fed_responder: a user JWT file: connect to a secured mesh",
    )
    parser.add_argument("--organization", help="fed_responder: its organization's authority DID")
    parser.add_argument("--membership", help="fed_responder: its membership credential file")
    parser.add_argument("--raw-seed", help="fed_responder: a raw responder's identity seed (hex)")
    parser.add_argument("--raw-jwt", help="fed_responder: the raw responder's user JWT file")
    parser.add_argument("--mesh-dir", help="fed_steward: the organization's mesh directory")
    parser.add_argument(
        "--resync", type=float, default=10.0, help="fed_steward: seconds between re-shipments"
    )
    args = parser.parse_args(argv)
    if args.role == "fed_responder":
        return _fed_responder(parser, args)
    if args.role == "fed_steward":
        if not (args.mesh_dir and args.seed) or args.jwt:
            parser.error("fed_steward needs --mesh-dir and --seed (the authority's), no --jwt")
        authority = AgentIdentity.from_seed(bytes.fromhex(args.seed))
        asyncio.run(serve(FedSteward(args.url, args.mesh, args.mesh_dir, authority, args.resync)))
        return 0
    if (args.seed or args.jwt) and args.role not in ("responder", "broker_agents"):
        parser.error("--seed and --jwt are for the responder and broker_agents roles")
    if args.jwt and not args.seed:
        parser.error("--jwt needs --seed (the identity the JWT names)")
    identity = AgentIdentity.from_seed(bytes.fromhex(args.seed)) if args.seed else None
    credentials = None
    if args.jwt:
        assert identity is not None
        credentials = BrokerCredentials(identity, read_jwt(args.jwt))
    if args.role == "receiver":
        peer: Peer = Receiver(args.url, args.mesh, profile=args.profile)
    elif args.role == "responder":
        peer = Responder(args.url, args.mesh, identity, credentials)
    elif args.role == "broker_agents":
        peer = BrokerAgents(args.url, args.mesh, identity, credentials)
    else:
        peer = ROLES[args.role](args.url, args.mesh)
    asyncio.run(serve(peer))
    return 0


def _fed_responder(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not (args.seed and args.jwt and args.organization):
        parser.error("fed_responder needs --seed, --jwt and --organization")
    if bool(args.raw_seed) != bool(args.raw_jwt):
        parser.error("--raw-seed and --raw-jwt go together")
    identity = AgentIdentity.from_seed(bytes.fromhex(args.seed))
    raw = None
    if args.raw_seed:
        raw_identity = AgentIdentity.from_seed(bytes.fromhex(args.raw_seed))
        raw = BrokerCredentials(raw_identity, read_jwt(args.raw_jwt))
    membership = Path(args.membership).read_text().strip() if args.membership else None
    peer = FedResponder(
        args.url,
        args.mesh,
        BrokerCredentials(identity, read_jwt(args.jwt)),
        args.organization,
        membership,
        raw,
    )
    asyncio.run(serve(peer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
