"""ReceiptInterceptor: outcome mapping, signed-only evidence, background queue, failures."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.node.interceptors import InboundMessage, Outcome
from agentmesh.trustnet import OUTCOMES, ReceiptInterceptor, ReceiptLedger
from iatp.clock import ManualClock
from iatp.envelope import new_envelope
from tests.agentmesh.trustnet.test_ledger import AGENTS, T0, engine
from tests.conftest import TransportFactory
from trust import MalformedReceipt, verify_receipt
from trust import Outcome as TrustOutcome

ME, PEER = AGENTS[0], AGENTS[1]


def inbound(sender: str = PEER.did, *, authenticated_by: str = "signature") -> InboundMessage:
    envelope = new_envelope(
        sender=sender, type="tools.search", recipient=ME.did, body=b"q", now_ms=T0
    )
    return InboundMessage(envelope, "subj", True, authenticated_by)


def test_every_node_outcome_maps_to_a_receipt_outcome() -> None:
    assert set(OUTCOMES) == set(Outcome)
    assert OUTCOMES[Outcome.REJECTED] is TrustOutcome.POLICY_VIOLATION


async def test_receipts_are_signed_by_the_node_about_the_sender(
    transport_factory: TransportFactory, uid: str
) -> None:
    ledger = await ReceiptLedger.open(await transport_factory.new("i"), engine(), mesh=uid)
    hook = ReceiptInterceptor(ME, ledger, clock=ManualClock(T0))
    message = inbound()
    signed = hook.receipt_for(message, Outcome.FAILURE)
    receipt = verify_receipt(signed, sender=ME.did)
    assert (receipt.observer, receipt.subject) == (ME.did, PEER.did)
    assert receipt.interaction_id == message.envelope.id.hex()
    assert receipt.action == "tools.search"
    await hook.record_outcome(message, Outcome.SUCCESS)
    await hook.record_outcome(inbound(ME.did), Outcome.SUCCESS)  # never about itself
    await hook.record_outcome(inbound(authenticated_by="session"), Outcome.SUCCESS)
    assert (hook.published, hook.skipped_unsigned) == (1, 1)
    await ledger.catch_up(timeout=10)
    assert ledger.folded == 1


async def test_background_mode_queues_publishes_and_drops_when_full(
    transport_factory: TransportFactory, uid: str
) -> None:
    ledger = await ReceiptLedger.open(await transport_factory.new("b"), engine(), mesh=uid)
    hook = ReceiptInterceptor(ME, ledger, clock=ManualClock(T0), background=True, max_pending=3)
    for _ in range(5):
        await hook.record_outcome(inbound(), Outcome.SUCCESS)
    assert (hook.published, hook.dropped) == (0, 2)
    runner = asyncio.create_task(hook.run())
    try:
        await hook.flush(timeout=10)
    finally:
        runner.cancel()
    assert hook.published == 3
    await ledger.catch_up(timeout=10)
    assert ledger.folded == 3


async def test_a_failed_publish_is_counted_not_raised(
    transport_factory: TransportFactory, uid: str
) -> None:
    transport = await transport_factory.new("x")
    ledger = await ReceiptLedger.open(transport, engine(), mesh=uid)
    hook = ReceiptInterceptor(ME, ledger, clock=ManualClock(T0))
    await transport.aclose()
    await hook.record_outcome(inbound(), Outcome.SUCCESS)
    assert (hook.published, hook.failed_publishes) == (0, 1)


def test_bad_weight_is_refused_when_the_receipt_is_built() -> None:
    hook = ReceiptInterceptor(ME, None, weight=0.0)  # type: ignore[arg-type]
    with pytest.raises(MalformedReceipt):
        hook.receipt_for(inbound(), Outcome.SUCCESS)
