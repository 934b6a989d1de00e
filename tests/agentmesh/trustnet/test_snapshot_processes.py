"""Joining from a signed snapshot across processes, over a real nats-server.

One process publishes half of a receipt history, writes a signed snapshot, then
publishes the rest (and a forged receipt). Two late processes join afterwards:
one trusts the snapshot's signer, loads it and folds only the tail; the other
folds the whole stream. All three must end with exactly the same local trust,
scores, rings and drift flags, and the same refusals.
"""

from __future__ import annotations

import time

import pytest

from tests.agentmesh.trustnet.test_cross_process import Peer, start_peer
from tests.agentmesh.trustnet.trust_peer import SNAPSHOTTER, WORLD, world_receipts
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

EXPECT = len(world_receipts())
HORIZON = ["--horizon-ms", "600000"]


async def test_a_snapshot_joiner_in_another_process_equals_a_full_fold(
    nats_server: NatsServerProcess, uid: str
) -> None:
    at_ms = int(time.time() * 1000) + 60_000
    peers: list[Peer] = []
    try:
        writer = await start_peer(
            nats_server.url, uid, "history", at_ms, EXPECT, [*HORIZON, "--write-snapshot"]
        )
        peers.append(writer)
        snapshot = await writer.event("snapshot")
        results = [await writer.event("result")]
        joiner = await start_peer(
            nats_server.url,
            uid,
            "late",
            at_ms,
            EXPECT,
            [*HORIZON, "--snapshot-signer", SNAPSHOTTER.did],
            seed=1,
        )
        full = await start_peer(nats_server.url, uid, "late", at_ms, EXPECT, HORIZON, seed=2)
        peers += [joiner, full]
        joined, replayed = await joiner.event("caught_up"), await full.event("caught_up")
        results += [await joiner.event("result"), await full.event("result")]
    finally:
        for peer in peers:
            if peer.process.returncode is None:
                peer.process.kill()
            await peer.process.wait()

    assert snapshot["seq"] == EXPECT // 2
    assert joined["started_from"] == snapshot["seq"]
    assert joined["refused_snapshots"] == {}
    assert replayed["started_from"] == 0
    reference = {k: v for k, v in results[0].items() if k != "role"}
    assert reference["folded"] == EXPECT
    assert reference["refused"] == {"forged_receipt": 1}
    assert reference["flagged"] == [WORLD[4].did]
    for other in results[1:]:
        assert {k: v for k, v in other.items() if k != "role"} == reference
