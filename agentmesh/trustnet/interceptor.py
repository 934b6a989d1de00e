"""Turn every handled message into a signed receipt about its sender."""

from __future__ import annotations

import logging

from agentmesh.errors import TransportError
from agentmesh.node.interceptors import InboundMessage, Outcome, PassThroughInterceptor
from agentmesh.trustnet.ledger import ReceiptLedger
from iatp.clock import Clock, SystemClock
from iatp.identity import AgentIdentity
from trust.evidence import Outcome as TrustOutcome
from trust.evidence import Receipt, SignedReceipt, sign_receipt

logger = logging.getLogger(__name__)

OUTCOMES = {
    Outcome.SUCCESS: TrustOutcome.SUCCESS,
    Outcome.FAILURE: TrustOutcome.FAILURE,
    Outcome.TIMEOUT: TrustOutcome.TIMEOUT,
    # Refused by this node's own checks (policy, rings, revocation): the sender asked
    # for something it may not do.
    Outcome.REJECTED: TrustOutcome.POLICY_VIOLATION,
}


class ReceiptInterceptor(PassThroughInterceptor):
    """Node hook: ``record_outcome`` signs a receipt (observer = this node) and publishes it.

    Allows every message; register it at ``Stage.TRUST``. A publish that fails is
    logged and counted in ``failed_publishes``; the message outcome is unaffected.

    Args:
        identity: this node's identity (the observer that signs).
        ledger: where receipts go.
        clock: receipt time.
        weight: weight of each receipt (0 < weight <= 10).
    """

    def __init__(
        self,
        identity: AgentIdentity,
        ledger: ReceiptLedger,
        *,
        clock: Clock | None = None,
        weight: float = 1.0,
        timeout: float = 2.0,
    ) -> None:
        self.identity = identity
        self.ledger = ledger
        self.clock: Clock = clock or SystemClock()
        self.weight = weight
        self.timeout = timeout
        self.published = 0
        self.failed_publishes = 0

    def receipt_for(self, message: InboundMessage, outcome: Outcome) -> SignedReceipt:
        """The signed receipt this node issues about ``message``'s sender."""
        receipt = Receipt.create(
            observer=self.identity.did,
            subject=message.sender,
            interaction_id=message.envelope.id.hex(),
            outcome=OUTCOMES[outcome],
            at_ms=self.clock.now_ms(),
            action=message.type[:256],
            weight=self.weight,
        )
        return sign_receipt(receipt, self.identity)

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        if message.sender == self.identity.did:
            return  # a node never reports on itself
        signed = self.receipt_for(message, outcome)
        try:
            await self.ledger.publish(signed, timeout=self.timeout)
        except TransportError as exc:
            self.failed_publishes += 1
            logger.warning("receipt %s not published: %s", signed.receipt.receipt_id, exc.code)
            return
        self.published += 1
