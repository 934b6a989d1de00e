"""The processes of the scale-out benchmark: ``python -m benchmarks.scaleout_peer ROLE``.

Driven like ``benchmarks.mesh_peer`` (same control protocol: one JSON command per
line on stdin, one answer per line on stdout, end of stdin stops the process).

Roles:

``member`` (``--seed HEX``, optional ``--partition I/P``)
    A :class:`MeshNode` of the identity of that seed that verifies signatures on
    its event loop (one thread, one core: the benchmark asks how throughput grows
    with processes, not threads), as member I of P (or the identity's only process
    without ``--partition``), counting handled ``bench.oneway`` messages.
    ``expect {n}`` arms it for ``n`` messages; ``wait {timeout}`` answers the
    ``time.monotonic()`` of the first and last handled (CLOCK_MONOTONIC is shared
    by the processes of one Linux host) and the node's counters.

``sender``
    A raw nats-py client with its own identity. ``seal {n, to, count}`` pre-seals
    ``n`` distinct envelopes to ``to`` and answers how many fall in each of
    ``count`` partitions; ``blast {inbox}`` publishes each to its owner's subject
    (``inbox`` itself when ``count`` is 1) as fast as nats-py can, and flushes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections import Counter
from time import monotonic
from typing import Any

import nats

from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.node.partitions import Partition, partition_of, partition_subject
from agentmesh.transport.nats import NatsTransport
from benchmarks.mesh_peer import ONEWAY_BODY, ONEWAY_LIFETIME_MS, ONEWAY_TYPE, Peer, serve
from iatp.clock import SystemClock
from iatp.envelope import new_envelope, seal_envelope
from iatp.identity import AgentIdentity

INLINE_ALWAYS = 1 << 30  # no batch is this large: every frame is verified inline


class Member(Peer):
    def __init__(
        self, url: str, mesh: str, identity: AgentIdentity, partition: Partition | None
    ) -> None:
        super().__init__(url, mesh)
        self.identity = identity
        self.partition = partition
        self.target = self.count = 0
        self.first = self.last = 0.0
        self.done = asyncio.Event()

    async def start(self) -> dict[str, Any]:
        self.node = MeshNode(
            self.identity,
            NatsTransport(self.url, name=f"bench-member-{self.partition}"),
            # One thread per process: signatures verified on the event loop.
            config=NodeConfig(
                mesh=self.mesh,
                verify_workers=1,
                inline_verify_below=INLINE_ALWAYS,
                partition=self.partition,
            ),
        )
        self.node.handle(ONEWAY_TYPE, self._handled)
        await self.node.start()
        return {"did": self.node.did, "partition": str(self.partition)}

    async def _handled(self, message: InboundMessage) -> None:
        self.count += 1
        now = monotonic()
        if self.count == 1:
            self.first = now
        self.last = now
        if self.count == self.target:
            self.done.set()

    async def cmd_expect(self, n: int) -> dict[str, Any]:
        self.target, self.count = n, 0
        self.first = self.last = 0.0
        self.done = asyncio.Event()
        if n == 0:
            self.done.set()
        return {"armed": n}

    async def cmd_wait(self, timeout: float = 60.0) -> dict[str, Any]:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout)
        return {
            "count": self.count,
            "target": self.target,
            "first": self.first,
            "last": self.last,
            "counters": self.node.counters.snapshot(),
        }

    async def aclose(self) -> None:
        await self.node.aclose()


class Sender(Peer):
    async def start(self) -> dict[str, Any]:
        self.identity = AgentIdentity.generate()
        self.clock = SystemClock()
        self.body = os.urandom(ONEWAY_BODY)
        self.frames: list[tuple[int, bytes]] = []
        self.count = 1
        self.nc = await nats.connect(self.url, name="bench-scaleout-sender")
        return {"did": self.identity.did}

    async def cmd_seal(self, n: int, to: str, count: int) -> dict[str, Any]:
        did, body, now_ms = self.identity.did, self.body, self.clock.now_ms
        self.count = count
        self.frames = []
        for _ in range(n):
            envelope = new_envelope(
                sender=did,
                type=ONEWAY_TYPE,
                recipient=to,
                body=body,
                now_ms=now_ms(),
                lifetime_ms=ONEWAY_LIFETIME_MS,
            )
            owner = partition_of(envelope.id, count)
            self.frames.append((owner, seal_envelope(envelope, self.identity)))
        per = Counter(owner for owner, _ in self.frames)
        return {"per_partition": [per[i] for i in range(count)]}

    async def cmd_blast(self, inbox: str) -> dict[str, Any]:
        count = self.count
        subjects = (
            [inbox] if count == 1 else [partition_subject(inbox, count, i) for i in range(count)]
        )
        publish = self.nc.publish
        for owner, frame in self.frames:
            await publish(subjects[owner], frame)
        await self.nc.flush(timeout=30)
        return {"sent": len(self.frames)}

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout_peer")
    parser.add_argument("role", choices=("member", "sender"))
    parser.add_argument("--url", required=True, help="nats://host:port")
    parser.add_argument("--mesh", required=True, help="mesh (subject namespace)")
    parser.add_argument("--seed", help="member: the identity's Ed25519 seed (hex)")
    parser.add_argument("--partition", help="member: I/P (member I of P)")
    args = parser.parse_args(argv)
    if args.role == "sender":
        asyncio.run(serve(Sender(args.url, args.mesh)))
        return 0
    if not args.seed:
        parser.error("member needs --seed")
    identity = AgentIdentity.from_seed(bytes.fromhex(args.seed))
    partition = Partition.parse(args.partition) if args.partition else None
    asyncio.run(serve(Member(args.url, args.mesh, identity, partition)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
