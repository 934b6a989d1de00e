"""The other process of the mesh benchmarks: ``python -m benchmarks.mesh_peer ROLE --url URL``.

The benchmarks (``bench_mesh.py``, ``bench_broker.py``) start one process per role
and drive it with a small control protocol on stdin / stdout, one JSON object per
line: they write a command ``{"cmd": NAME, ...}`` and read exactly one answer line
(``{"error": ...}`` if the command failed). The first line a peer prints is
``{"ready": true, ...}``. End of stdin (the benchmark closed the pipe or died)
stops the peer, so a peer never outlives its benchmark; ``{"cmd": "quit"}`` does
the same.

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
from time import monotonic, perf_counter, process_time, thread_time
from typing import Any

import nats
from nacl.signing import VerifyKey

from agentmesh.broker.authority import read_jwt
from agentmesh.broker.credentials import BrokerCredentials
from agentmesh.errors import AccessRevoked, TransportError
from agentmesh.node.addressing import MeshAddressing
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.transport.nats import NatsConfig, NatsTransport
from iatp.clock import SystemClock
from iatp.did import public_key_from_did
from iatp.envelope import SIGNING_DOMAIN, new_envelope, parse_frame, seal_envelope
from iatp.identity import AgentIdentity

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


ROLES: dict[str, type[Peer]] = {
    "responder": Responder,
    "receiver": Receiver,
    "sender": Sender,
    "broker_agents": BrokerAgents,
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
        "--seed", help="responder, broker_agents: the Ed25519 identity seed (hex) to use"
    )
    parser.add_argument(
        "--jwt", help="responder, broker_agents: a user JWT file: connect to a secured mesh"
    )
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
