"""Receipt ledger and interceptor on both transports (memory and a real nats-server)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import Stage
from agentmesh.node.node import MeshNode
from agentmesh.trustnet import AUDIT_KIND, MeshTrust, ReceiptLedger, receipt_subject
from iatp.clock import ManualClock
from iatp.identity import AgentIdentity
from tests.conftest import TransportFactory
from trust import Outcome, Receipt, SignedReceipt, TrustEngine, sign_receipt
from trust.evidence import RECEIPT_DOMAIN

T0 = 1_700_000_000_000


def ident(i: int) -> AgentIdentity:
    return AgentIdentity.from_seed(bytes([i]) * 32)


AGENTS = [ident(i) for i in range(1, 7)]


def signed(
    observer: AgentIdentity, subject: AgentIdentity, k: int, outcome: Outcome = Outcome.SUCCESS
) -> SignedReceipt:
    receipt = Receipt.create(
        observer=observer.did,
        subject=subject.did,
        interaction_id=f"x{k}",
        outcome=outcome,
        at_ms=T0 + k,
        action="work",
    )
    return sign_receipt(receipt, observer)


def world(seed: int, count: int = 60) -> list[SignedReceipt]:
    rng = random.Random(seed)
    out = []
    for k in range(count):
        o, s = rng.sample(AGENTS, 2)
        out.append(signed(o, s, k, Outcome.SUCCESS if rng.random() < 0.85 else Outcome.FAILURE))
    return out


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def engine() -> TrustEngine:
    return TrustEngine(pre_trusted=[AGENTS[0].did], clock=ManualClock(T0 + 10_000))


async def test_same_receipts_same_scores_whatever_the_publication_order(
    transport_factory: TransportFactory, uid: str
) -> None:
    receipts = world(3)
    publisher_a = await ReceiptLedger.open(await transport_factory.new("a"), engine(), mesh=uid)
    publisher_b = await ReceiptLedger.open(await transport_factory.new("b"), engine(), mesh=uid)
    shuffled = list(receipts)
    random.Random(9).shuffle(shuffled)
    await asyncio.gather(
        *(publisher_a.publish(r) for r in receipts[:30]),
        *(publisher_b.publish(r) for r in shuffled),  # overlaps: de-duplicated by id
    )
    results = []
    for name in ("n1", "n2"):
        ledger = await ReceiptLedger.open(await transport_factory.new(name), engine(), mesh=uid)
        await ledger.catch_up(timeout=10)
        assert ledger.folded == len(receipts)
        ledger.engine.recompute(at_ms=T0 + 10_000, cold=True)
        results.append([ledger.engine.score(a.did) for a in AGENTS])
        await ledger.aclose()
    # Reference: the same receipts recorded directly, in another order.
    direct = engine()
    for r in reversed(receipts):
        direct.record(r.receipt)
    direct.recompute(at_ms=T0 + 10_000, cold=True)
    assert results[0] == results[1]  # same stream order: bit for bit
    assert results[0] == pytest.approx([direct.score(a.did) for a in AGENTS], abs=1e-9)


async def test_forged_and_malformed_receipts_are_refused_and_audited(
    transport_factory: TransportFactory, uid: str
) -> None:
    transport = await transport_factory.new("w")
    writer = await ReceiptLedger.open(transport, engine(), mesh=uid)
    good = signed(AGENTS[1], AGENTS[2], 1)
    # Mallory signs a receipt that claims Alice observed a failure of Bob.
    claim = Receipt.create(
        observer=AGENTS[1].did,
        subject=AGENTS[2].did,
        interaction_id="f",
        outcome=Outcome.FAILURE,
        at_ms=T0,
    )
    forged = SignedReceipt(claim, AGENTS[5].sign(RECEIPT_DOMAIN + claim.canonical_body()))
    await writer.publish(good)
    await writer.publish(forged)
    subject = receipt_subject(uid, AGENTS[1].did)
    await writer.stream.append(subject, b"not a receipt", msg_id="junk")
    await writer.stream.append(subject, good.encode().replace(b"x1", b"x2"), msg_id="tampered")
    # A genuine receipt re-stored under another observer's subject counts for nobody.
    moved = signed(AGENTS[3], AGENTS[2], 7)
    await writer.stream.append(receipt_subject(uid, AGENTS[4].did), moved.encode(), msg_id="moved")
    audit = MemoryAuditSink()
    reader = await ReceiptLedger.open(
        await transport_factory.new("r"), engine(), mesh=uid, audit=audit
    )
    await reader.catch_up(timeout=10)
    assert reader.folded == 1
    assert reader.refused == {"forged_receipt": 2, "malformed_receipt": 1, "signer_mismatch": 1}
    assert sorted(audit.codes(AUDIT_KIND)) == [
        "forged_receipt",
        "forged_receipt",
        "malformed_receipt",
        "signer_mismatch",
    ]
    assert reader.engine.local(AGENTS[1].did, AGENTS[2].did).negative == 0.0
    await reader.aclose()


async def test_republished_receipt_counts_once(
    transport_factory: TransportFactory, uid: str
) -> None:
    ledger = await ReceiptLedger.open(await transport_factory.new("w"), engine(), mesh=uid)
    r = signed(AGENTS[0], AGENTS[1], 5)
    first = await ledger.publish(r)
    again = await ledger.publish(r)
    assert again.duplicate
    assert again.seq == first.seq
    await ledger.catch_up(timeout=10)
    assert ledger.folded == 1
    assert ledger.engine.local(AGENTS[0].did, AGENTS[1].did, at_ms=T0 + 5).positive == 1.0
    await ledger.aclose()


async def test_slander_from_nobody_weighs_nothing(
    transport_factory: TransportFactory, uid: str
) -> None:
    honest, target, nobody = AGENTS[0], AGENTS[1], AGENTS[5]
    ledger = await ReceiptLedger.open(await transport_factory.new("w"), engine(), mesh=uid)
    for k in range(20):
        await ledger.publish(signed(honest, target, k))
    await ledger.catch_up(timeout=10)
    for _ in range(3):  # promotion is earned over several recomputes
        ledger.engine.recompute(at_ms=T0 + 10_000, cold=True)
    before = ledger.engine.score(target.did)
    assert ledger.engine.ring(target.did) == 2
    for k in range(100, 160):
        await ledger.publish(signed(nobody, target, k, Outcome.POLICY_VIOLATION))
    await ledger.catch_up(timeout=10)
    ledger.engine.recompute(at_ms=T0 + 10_000, cold=True)
    assert ledger.engine.score(target.did) == before
    assert ledger.engine.ring(target.did) == 2
    assert not ledger.engine.flagged(target.did)
    await ledger.aclose()


async def test_handled_messages_become_receipts_on_every_node(
    transport_factory: TransportFactory, uid: str
) -> None:
    server_id, client_id = AGENTS[0], AGENTS[1]
    server_t, client_t, watcher_t = [await transport_factory.new(n) for n in ("s", "c", "w")]
    server = MeshNode(server_id, server_t, config=NodeConfig(mesh=uid))
    client = MeshNode(client_id, client_t, config=NodeConfig(mesh=uid))
    async with (
        MeshTrust(server_t, server_id, mesh=uid, pre_trusted=[server_id.did]) as server_trust,
        MeshTrust(
            watcher_t, AGENTS[2], mesh=uid, pre_trusted=[server_id.did], recompute_interval=0.05
        ) as watcher,
        server,
        client,
    ):
        server.add_interceptor(server_trust.interceptor, stage=Stage.TRUST)

        @server.on("work")
        async def work(message: object) -> bytes:
            return b"done"

        for _ in range(6):
            await client.request(server_id.did, "work", b"job", timeout=5)
        await eventually(
            lambda: watcher.ledger.folded >= 6 and server_trust.interceptor.published >= 6
        )
        assert server_trust.interceptor.published == 6
        local = watcher.engine.local(server_id.did, client_id.did)
        assert local.positive == pytest.approx(6.0, rel=0.01)
        await asyncio.sleep(0.1)
        assert watcher.engine.score(client_id.did) > 0.0
        assert watcher.engine.explain(client_id.did).receipts[0].outcome == "success"


async def test_recompute_every_k_receipts_at_receipt_time(
    transport_factory: TransportFactory, uid: str
) -> None:
    transport = await transport_factory.new("k")
    with pytest.raises(ValueError, match="recompute_every"):
        await ReceiptLedger.open(transport, engine(), mesh=uid, recompute_every=0)
    ledger = await ReceiptLedger.open(transport, engine(), mesh=uid, recompute_every=5)
    for receipt in world(4, count=12):
        await ledger.publish(receipt)
    await ledger.catch_up(timeout=10)
    assert ledger.engine.recomputes == 2
    assert ledger.latest_ms == max(r.receipt.at_ms for r in world(4, count=12))
    await ledger.aclose()


async def test_catch_up_while_following_waits_for_the_follower(
    transport_factory: TransportFactory, uid: str
) -> None:
    writer = await ReceiptLedger.open(await transport_factory.new("w"), engine(), mesh=uid)
    async with MeshTrust(
        await transport_factory.new("f"), AGENTS[3], mesh=uid, recompute_interval=None
    ) as trust:
        for receipt in world(6, count=15):
            await writer.publish(receipt)
        await trust.ledger.catch_up(timeout=10)
        assert trust.ledger.folded == 15
        assert trust.engine.recomputes == 0  # no wall-clock recomputes when disabled
