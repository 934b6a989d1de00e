"""Bounded trust history on the mesh: stale replays, stream retention, signed snapshots.

On both transports (memory and a real nats-server): a node that starts from a
signed snapshot and folds only the tail ends bit for bit where a node that
folded the whole stream ends; every kind of bad snapshot is refused with its
code, counted and audited, and the node falls back to the full fold.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.transport.base import Transport
from agentmesh.transport.memory import InMemoryBus, InMemoryTransport
from agentmesh.trustnet import (
    AUDIT_KIND,
    MeshTrust,
    SnapshotPolicy,
    SnapshotStore,
    receipt_subject,
)
from agentmesh.trustnet.snapshots import AUDIT_KIND as SNAPSHOT_KIND
from agentmesh.trustnet.snapshots import MANIFEST_KEY, chunk_key
from iatp.identity import AgentIdentity
from tests.conftest import TransportFactory
from trust import (
    Outcome,
    Receipt,
    SignedReceipt,
    TrustConfig,
    decode_manifest,
    pack_state,
    seal_snapshot,
    sign_receipt,
)

T0 = 1_700_000_000_000
AGENTS = [AgentIdentity.from_seed(bytes([i]) * 32) for i in range(1, 9)]
AUTHORITY = AgentIdentity.from_seed(b"\x51" * 32)
MALLORY = AgentIdentity.from_seed(b"\x66" * 32)
CONFIG = TrustConfig(receipt_horizon_ms=60_000, max_future_skew_ms=30_000)


def receipts(first: int, count: int, seed: int = 1) -> list[SignedReceipt]:
    rng = random.Random(seed * 1_000 + first)
    out = []
    for k in range(first, first + count):
        o, s = rng.sample(AGENTS, 2)
        bad = s is AGENTS[6] and k > 60  # a traitor, so drift state is in the snapshot
        outcome = (
            Outcome.POLICY_VIOLATION
            if bad
            else rng.choice([Outcome.SUCCESS] * 8 + [Outcome.FAILURE])
        )
        receipt = Receipt.create(
            observer=o.did,
            subject=s.did,
            interaction_id=f"s{k}",
            outcome=outcome,
            at_ms=T0 + k * 1_000 - rng.randrange(5_000),
            action=rng.choice(["read", "write"]),
        )
        out.append(sign_receipt(receipt, o))
    return out


def trust_node(
    transport: Transport,
    uid: str,
    who: AgentIdentity,
    *,
    snapshots: SnapshotPolicy | None = None,
    config: TrustConfig = CONFIG,
    audit: MemoryAuditSink | None = None,
    stream_max_age: float | None = None,
) -> MeshTrust:
    return MeshTrust(
        transport,
        who,
        mesh=uid,
        pre_trusted=[AGENTS[0].did],
        config=config,
        recompute_interval=None,  # deterministic: recompute every 10 folds at receipt time
        recompute_every=10,
        snapshots=snapshots,
        audit=audit,
        stream_max_age=stream_max_age,
    )


async def publish(trust: MeshTrust, batch: list[SignedReceipt]) -> None:
    for signed in batch:
        await trust.ledger.publish(signed)
    await trust.ledger.catch_up(timeout=20)


def state_of(trust: MeshTrust) -> bytes:
    """The engine state as bytes; a drift event's ``at_ms`` (the wall-clock moment a
    node noticed it) is the one field that may differ between nodes."""
    state = trust.engine.export_state()
    events = tuple((agent, replace(event, at_ms=0)) for agent, event in state.drift_events)
    return pack_state(replace(state, drift_events=events))


JOIN = SnapshotPolicy(signers=frozenset({AUTHORITY.did}))


async def test_a_node_joining_from_a_snapshot_equals_a_full_fold(
    transport_factory: TransportFactory, uid: str
) -> None:
    async with trust_node(await transport_factory.new("w"), uid, AUTHORITY) as writer:
        await publish(writer, receipts(0, 120))
        manifest = await writer.write_snapshot()
        assert manifest.seq == writer.ledger.position == 120
        assert manifest.folded == writer.ledger.folded
        await publish(writer, receipts(120, 60))
        # An old receipt re-appended with a fresh message id (the server cannot
        # de-duplicate it): refused by the replay horizon, on every node.
        old = receipts(0, 1)[0]
        await writer.ledger.stream.append(
            receipt_subject(uid, old.receipt.observer), old.encode(), msg_id="fresh-id"
        )
        await writer.ledger.catch_up(timeout=20)
        assert writer.ledger.refused["stale_receipt"] == 1
        reference = state_of(writer)
    joiner = trust_node(await transport_factory.new("j"), uid, AGENTS[1], snapshots=JOIN)
    full = trust_node(await transport_factory.new("f"), uid, AGENTS[2])
    async with joiner, full:
        assert joiner.started_from_seq == 120
        assert full.started_from_seq == 0
        assert joiner.ledger.folded == full.ledger.folded == writer.ledger.folded
        assert state_of(joiner) == state_of(full) == reference
        assert joiner.ledger.refused["stale_receipt"] == 1
        for agent in AGENTS:
            assert joiner.engine.score(agent.did) == full.engine.score(agent.did)
            assert joiner.engine.ring(agent.did) == full.engine.ring(agent.did)
        assert full.engine.flagged(AGENTS[6].did)
        assert joiner.engine.flagged(AGENTS[6].did)
        assert joiner.snapshot_refused == {}


Tamper = Callable[[SnapshotStore, str], Awaitable[None]]


async def _untrusted(store: SnapshotStore, uid: str) -> None:
    """A genuine snapshot, signed by a key the joiner does not trust."""
    entry = await store.kv.get(MANIFEST_KEY)
    body = b"".join([(await store.kv.get(chunk_key(decode_manifest(entry.value).seq, 0))).value])
    manifest = decode_manifest(entry.value)
    forged = seal_snapshot(
        body,
        mesh=uid,
        seq=manifest.seq,
        folded=manifest.folded,
        latest_ms=manifest.latest_ms,
        taken_at_ms=manifest.taken_at_ms,
        signer=MALLORY,
        chunk_bytes=len(body) + 1,
    )
    await store.kv.put(MANIFEST_KEY, forged.encode())


async def _forged(store: SnapshotStore, uid: str) -> None:
    """The authority's manifest with a field changed after signing."""
    manifest = decode_manifest((await store.kv.get(MANIFEST_KEY)).value)
    await store.kv.put(MANIFEST_KEY, replace(manifest, folded=manifest.folded + 1).encode())


async def _corrupt(store: SnapshotStore, uid: str) -> None:
    """A chunk of the body changed (the manifest still names the original digest)."""
    manifest = decode_manifest((await store.kv.get(MANIFEST_KEY)).value)
    key = chunk_key(manifest.seq, 0)
    piece = bytearray((await store.kv.get(key)).value)
    piece[len(piece) // 2] ^= 0x01
    await store.kv.put(key, bytes(piece))


async def _ahead(store: SnapshotStore, uid: str) -> None:
    """A genuine signature over a sequence the stream never reached."""
    manifest = decode_manifest((await store.kv.get(MANIFEST_KEY)).value)
    body = (await store.kv.get(chunk_key(manifest.seq, 0))).value
    ahead = seal_snapshot(
        body,
        mesh=uid,
        seq=10**6,
        folded=manifest.folded,
        latest_ms=manifest.latest_ms,
        taken_at_ms=manifest.taken_at_ms,
        signer=AUTHORITY,
        chunk_bytes=len(body) + 1,
    )
    await store.kv.put(chunk_key(10**6, 0), body)
    await store.kv.put(MANIFEST_KEY, ahead.encode())


async def _garbage(store: SnapshotStore, uid: str) -> None:
    await store.kv.put(MANIFEST_KEY, b"\x93\x01\x02")


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (_untrusted, "untrusted_snapshot_signer"),
        (_forged, "forged_snapshot"),
        (_corrupt, "corrupt_snapshot"),
        (_ahead, "snapshot_mismatch"),
        (_garbage, "malformed_snapshot"),
    ],
)
async def test_bad_snapshots_are_refused_audited_and_the_node_folds_everything(
    transport_factory: TransportFactory, uid: str, tamper: Tamper, code: str
) -> None:
    async with trust_node(await transport_factory.new("w"), uid, AUTHORITY) as writer:
        await publish(writer, receipts(0, 80))
        await writer.write_snapshot()
        await publish(writer, receipts(80, 30))
        reference = state_of(writer)
    store = await SnapshotStore.open(await transport_factory.new("mallory"), uid)
    await tamper(store, uid)
    audit = MemoryAuditSink()
    joiner = trust_node(
        await transport_factory.new("j"), uid, AGENTS[1], snapshots=JOIN, audit=audit
    )
    async with joiner:
        assert joiner.snapshot_refused == {code: 1}
        assert audit.codes(SNAPSHOT_KIND) == [code]
        assert joiner.started_from_seq == 0
        assert joiner.ledger.folded == writer.ledger.folded  # the full fold instead
        assert state_of(joiner) == reference


async def test_a_snapshot_for_another_engine_config_or_mesh_is_refused(
    transport_factory: TransportFactory, uid: str
) -> None:
    other = TrustConfig(receipt_horizon_ms=60_000, max_future_skew_ms=30_000, damping=0.3)
    async with trust_node(await transport_factory.new("w"), uid, AUTHORITY, config=other) as w:
        await publish(w, receipts(0, 40))
        await w.write_snapshot()
    async with trust_node(await transport_factory.new("x"), uid + "x", AUTHORITY) as elsewhere:
        await publish(elsewhere, receipts(0, 40))
        manifest = await elsewhere.write_snapshot()
        body = (await elsewhere._snapshot_store()).kv
        piece = (await body.get(chunk_key(manifest.seq, 0))).value
    joiner = trust_node(await transport_factory.new("j"), uid, AGENTS[1], snapshots=JOIN)
    async with joiner:
        assert joiner.snapshot_refused == {"snapshot_mismatch": 1}
        assert joiner.ledger.folded == 40
    # Now the other mesh's genuine snapshot, copied into this mesh's bucket.
    store = await SnapshotStore.open(await transport_factory.new("copy"), uid)
    await store.kv.put(chunk_key(manifest.seq, 0), piece)
    await store.kv.put(MANIFEST_KEY, manifest.encode())
    joiner = trust_node(await transport_factory.new("j2"), uid, AGENTS[2], snapshots=JOIN)
    async with joiner:
        assert joiner.snapshot_refused == {"snapshot_wrong_mesh": 1}
        assert joiner.ledger.folded == 40


async def test_large_snapshots_are_chunked_and_old_chunks_dropped(
    transport_factory: TransportFactory, uid: str
) -> None:
    policy = SnapshotPolicy(chunk_bytes=1024)
    async with trust_node(await transport_factory.new("w"), uid, AUTHORITY, snapshots=policy) as w:
        seqs = []
        for first in (0, 50, 100):
            await publish(w, receipts(first, 50))
            seqs.append((await w.write_snapshot()).seq)
        keys = await (await w._snapshot_store()).kv.keys()
        kept = {int(k.split(".")[1]) for k in keys if k.startswith("chunk.")}
        assert kept == set(seqs[-2:])  # the newest and the one before it
        assert w.snapshots_written == 3
        reference = state_of(w)
    joiner = trust_node(await transport_factory.new("j"), uid, AGENTS[1], snapshots=JOIN)
    async with joiner:
        assert joiner.started_from_seq == seqs[-1]
        assert state_of(joiner) == reference


async def test_stream_retention_needs_a_snapshot_to_join_exactly(uid: str) -> None:
    """With ``stream_max_age`` old receipts leave the stream; a snapshot carries them."""
    now = [0.0]
    bus = InMemoryBus(monotonic=lambda: now[0])

    async def transport(name: str) -> Transport:
        t = InMemoryTransport(bus, name=name)
        await t.connect(timeout=5)
        return t

    policy = SnapshotPolicy(signers=frozenset({AUTHORITY.did}), write_every=25, check_interval=0.01)
    async with trust_node(
        await transport("w"), uid, AUTHORITY, snapshots=policy, stream_max_age=100.0
    ) as writer:
        await publish(writer, receipts(0, 100))
        store = await SnapshotStore.open(await transport("reader"), uid)
        for _ in range(500):  # the writer's own loop writes one (every 25 folds)
            manifest = await store.manifest()
            if manifest is not None and manifest.seq == 100:
                break
            await asyncio.sleep(0.01)
        now[0] = 150.0  # the first 100 receipts are now older than the stream keeps
        await publish(writer, receipts(100, 20))
        reference = state_of(writer)
        async with (
            trust_node(await transport("j"), uid, AGENTS[1], snapshots=JOIN) as joiner,
            trust_node(await transport("f"), uid, AGENTS[2]) as full,
        ):
            assert await writer.ledger.stream.first_seq() == 101
            assert joiner.snapshot_refused == {}
            assert joiner.started_from_seq == 100
            assert state_of(joiner) == reference
            assert full.ledger.missing == 100  # reported, audited, and not the same state
            assert state_of(full) != reference
            assert full.ledger.audit.codes(AUDIT_KIND) == ["receipts_missing"]  # type: ignore[attr-defined]
