"""Liveness under store attacks on an open server: purges and deletes do not stall the mesh.

A plain nats-py client with JetStream API access (what an open development
server gives anyone) purges the trust receipt stream: a node that joins later
starts from what is left, reports the gap and audits it, instead of waiting for
sequences that no longer exist. (The deleted cards bucket is in
``tests/agentmesh/directory/test_tampering.py``; on a secured broker neither
attack is possible, ``tests/attacks/test_broker_attacks.py``.)
"""

from __future__ import annotations

import time

import nats
import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.transport.nats import NatsTransport
from agentmesh.trustnet import AUDIT_KIND, MeshTrust, ReceiptLedger, stream_name
from iatp.identity import AgentIdentity
from tests.natsserver import NatsServerProcess
from trust import Outcome, Receipt, TrustEngine, sign_receipt

pytestmark = pytest.mark.nats


def receipt(observer: AgentIdentity, subject: AgentIdentity, n: int) -> object:
    return sign_receipt(
        Receipt.create(
            observer=observer.did,
            subject=subject.did,
            interaction_id=f"i{n}",
            outcome=Outcome.SUCCESS,
            at_ms=int(time.time() * 1000) - 1000 + n,
        ),
        observer,
    )


async def test_purged_receipt_stream_does_not_stall_a_joining_node(
    nats_server: NatsServerProcess, uid: str
) -> None:
    alice, bob = AgentIdentity.generate(), AgentIdentity.generate()
    async with NatsTransport(nats_server.url, name="writer") as writer:
        ledger = await ReceiptLedger.open(writer, TrustEngine(), mesh=uid)
        for n in range(6):
            await ledger.publish(receipt(alice, bob, n))  # type: ignore[arg-type]
        attacker = await nats.connect(nats_server.url)
        try:
            await attacker.request(f"$JS.API.STREAM.PURGE.{stream_name(uid)}", b"", timeout=2)
        finally:
            await attacker.close()
        # Every receipt is gone; a node that joins now must not wait for them.
        audit = MemoryAuditSink()
        async with NatsTransport(nats_server.url, name="late") as late:
            started = time.monotonic()
            trust = MeshTrust(late, bob, mesh=uid, audit=audit, catch_up_timeout=5)
            await trust.start()
            assert time.monotonic() - started < 3
            assert trust.ledger.missing == 6
            assert trust.ledger.folded == 0
            assert "receipts_missing" in audit.codes(AUDIT_KIND)
            await trust.aclose()
        # New receipts after the purge are folded; only the purged ones are missing.
        for n in range(6, 8):
            await ledger.publish(receipt(alice, bob, n))  # type: ignore[arg-type]
        async with NatsTransport(nats_server.url, name="later") as later:
            fresh = await ReceiptLedger.open(later, TrustEngine(), mesh=uid)
            assert await fresh.catch_up(timeout=5) == 2
            assert fresh.missing == 6
            await fresh.aclose()
        await ledger.aclose()
