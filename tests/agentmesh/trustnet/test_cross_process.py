"""Trust across processes over a real nats-server, including a late joiner.

Five processes share one mesh: a server node whose handled requests become
receipts, a client node that sends requests and publishes its own receipts, two
publishers that publish the same set of signed receipts in different orders
(plus a forged one), and a late joiner that starts once the others are done and
catches up from the JetStream stream. Every process must end with exactly the
same local trust, scores and rings (bit for bit: they fold the same stream in the
same order, recomputing at the same stream positions), including the drift flag
raised on a traitor, and every process must refuse the forged receipt.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from tests.agentmesh.trustnet.trust_peer import CLIENT, SERVER, WORLD, world_receipts
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

ROOT = Path(__file__).resolve().parents[3]
REQUESTS = 5
EXPECT = len(world_receipts()) + 2 * REQUESTS  # the published set + both sides of the requests


class Peer:
    def __init__(self, process: asyncio.subprocess.Process, role: str) -> None:
        self.process = process
        self.role = role

    async def event(self, name: str, timeout: float = 60.0) -> dict[str, object]:
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not line:
                assert self.process.stderr is not None
                err = (await self.process.stderr.read()).decode()[-2000:]
                raise AssertionError(f"{self.role} exited before {name!r}: {err}")
            event = json.loads(line)
            if event["event"] == name:
                return event


async def start(url: str, mesh: str, role: str, at_ms: int, seed: int = 0) -> Peer:
    return await start_peer(url, mesh, role, at_ms, EXPECT, [], seed=seed)


async def start_peer(
    url: str,
    mesh: str,
    role: str,
    at_ms: int,
    expect: int,
    extra: list[str],
    *,
    seed: int = 0,
) -> Peer:
    """One ``trust_peer`` process (``extra``: more command-line arguments)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.agentmesh.trustnet.trust_peer",
        "--role",
        role,
        "--nats",
        url,
        "--mesh",
        mesh,
        "--expect",
        str(expect),
        "--at-ms",
        str(at_ms),
        "--requests",
        str(REQUESTS),
        "--seed",
        str(seed),
        *extra,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Peer(process, role)


async def test_five_processes_agree_and_a_late_joiner_catches_up(
    nats_server: NatsServerProcess, uid: str
) -> None:
    at_ms = int(time.time() * 1000) + 60_000
    peers: list[Peer] = []
    try:
        server = await start(nats_server.url, uid, "server", at_ms)
        peers.append(server)
        await server.event("ready")
        for role, seed in (("client", 0), ("publisher", 1), ("publisher", 2)):
            peers.append(await start(nats_server.url, uid, role, at_ms, seed))
        results = [await peer.event("result") for peer in peers]
        late = await start(nats_server.url, uid, "late", at_ms)
        peers.append(late)
        caught_up = await late.event("caught_up")
        results.append(await late.event("result"))
    finally:
        for peer in peers:
            if peer.process.returncode is None:
                peer.process.kill()
            await peer.process.wait()

    assert caught_up["folded"] == EXPECT  # everything came from the stream at start
    reference = {k: v for k, v in results[0].items() if k != "role"}
    assert reference["folded"] == EXPECT
    assert reference["refused"] == {"forged_receipt": 1}
    assert reference["flagged"] == [WORLD[4].did]  # the traitor, on every node
    assert reference["recomputes"] == EXPECT // 10 + 1
    for other in results[1:]:
        assert {k: v for k, v in other.items() if k != "role"} == reference, other["role"]
    scores = {d: float.fromhex(s) for d, s in reference["scores"].items()}  # type: ignore[union-attr]
    assert scores[SERVER.did] > 0.3
    assert scores[CLIENT.did] > 0.0
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    assert all(r in (1, 2, 3) for r in reference["rings"].values())  # type: ignore[union-attr]
