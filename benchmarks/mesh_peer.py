"""The other process of the mesh benchmarks: ``python -m benchmarks.mesh_peer ROLE --url URL``.

The benchmark (``bench_mesh.py``) starts one process per role and drives it with a
small control protocol on stdin / stdout, one JSON object per line: it writes a
command ``{"cmd": NAME, ...}`` and reads exactly one answer line (``{"error": ...}``
if the command failed). The first line a peer prints is ``{"ready": true, ...}``.
End of stdin (the benchmark closed the pipe or died) stops the peer, so a peer
never outlives its benchmark; ``{"cmd": "quit"}`` does the same.

Roles:

``responder`` (request/reply and handshake cases)
    A :class:`MeshNode` that answers ``bench.echo`` with the request body (and
    handshakes, as every node does), plus a raw nats-py responder on
    ``{mesh}.raw.echo`` on its own connection in the same process and event loop:
    it answers a request whose first 4 bytes say ``L`` (big-endian) with ``L``
    bytes, so the floor can mirror the signed frames' sizes in both directions.

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
import json
import os
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter, process_time, thread_time
from typing import Any

import nats
from nacl.signing import VerifyKey

from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.transport.nats import NatsTransport
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
    async def start(self) -> dict[str, Any]:
        self.node = MeshNode(
            AgentIdentity.generate(),
            NatsTransport(self.url, name="bench-responder"),
            config=NodeConfig(mesh=self.mesh),
        )
        self.node.handle(ECHO_TYPE, self._echo)
        await self.node.start()
        self.nc = await nats.connect(self.url, name="bench-raw-responder")
        self._replies: dict[int, bytes] = {}
        await self.nc.subscribe(raw_echo_subject(self.mesh), cb=self._raw)
        await self.nc.flush()
        return {"did": self.node.did}

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


ROLES: dict[str, type[Peer]] = {"responder": Responder, "receiver": Receiver, "sender": Sender}


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
    args = parser.parse_args(argv)
    if args.role == "receiver":
        peer: Peer = Receiver(args.url, args.mesh, profile=args.profile)
    else:
        peer = ROLES[args.role](args.url, args.mesh)
    asyncio.run(serve(peer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
