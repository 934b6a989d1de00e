"""Turn every handled message into a signed receipt about its sender."""

from __future__ import annotations

import asyncio
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

    With ``background=True`` the hook only queues the signed receipt (so a handled
    message never waits for a stream acknowledgement) and :meth:`run` publishes the
    queue in pipelined batches; a full queue drops the receipt (``dropped``).

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
        background: bool = False,
        max_pending: int = 10_000,
        batch: int = 256,
    ) -> None:
        self.identity = identity
        self.ledger = ledger
        self.clock: Clock = clock or SystemClock()
        self.weight = weight
        self.timeout = timeout
        self.published = 0
        self.failed_publishes = 0
        self.dropped = 0
        self.skipped_unsigned = 0
        self.batch = batch
        self._queue: asyncio.Queue[SignedReceipt] | None = (
            asyncio.Queue(maxsize=max_pending) if background else None
        )

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
        if not message.is_signed:
            # A session MAC convinces only this node: evidence comes from signed messages.
            self.skipped_unsigned += 1
            return
        signed = self.receipt_for(message, outcome)
        if self._queue is None:
            await self._publish(signed)
            return
        try:
            self._queue.put_nowait(signed)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.warning("receipt queue full: receipt %s dropped", signed.receipt.receipt_id)

    async def _publish(self, signed: SignedReceipt) -> None:
        try:
            # Signed by this node a moment ago (receipt_for): its fold skips the check.
            await self.ledger.publish(signed, timeout=self.timeout, signed_here=True)
        except TransportError as exc:
            self.failed_publishes += 1
            logger.warning("receipt %s not published: %s", signed.receipt.receipt_id, exc.code)
            return
        self.published += 1

    async def run(self) -> None:
        """Publish queued receipts (background mode) until cancelled; batches are pipelined."""
        queue = self._queue
        if queue is None:
            return
        while True:
            pending = [await queue.get()]
            while len(pending) < self.batch and not queue.empty():
                pending.append(queue.get_nowait())
            try:
                await asyncio.gather(*(self._publish(signed) for signed in pending))
            finally:
                for _ in pending:
                    queue.task_done()

    async def flush(self, *, timeout: float = 5.0) -> None:
        """Wait until every queued receipt was published or failed (background mode).

        Raises:
            TimeoutError: the queue did not drain within ``timeout``.
        """
        if self._queue is not None:
            async with asyncio.timeout(timeout):
                await self._queue.join()
