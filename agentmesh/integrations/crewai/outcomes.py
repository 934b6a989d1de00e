"""Tool and task outcomes as signed trust receipts, from any thread.

CrewAI runs tools in its own threads; the mesh runs on an event loop. The tool
hook calls :meth:`OutcomeReporter.report` from CrewAI's thread, and the loop signs
each receipt with the crew's identity (the observer) and appends it to the mesh's
receipt stream, where every node's trust engine folds it: an agent whose tool
calls keep being refused or whose delegated tasks keep failing drifts, is demoted
to ring 3 and stops being chosen.

From another thread, ``report`` only appends to an inbox (a microsecond) and does
not wake the loop: waking it (``call_soon_threadsafe`` writes to its self-pipe)
lets the loop thread take the GIL in the middle of the tool call, which then
waits for the receipt's work (measured: ~15 us at the median, ~90 us at p99 of
every governed call; ``benchmarks/bench_crewai.py``). The loop collects the inbox
every ``collect_interval`` seconds (50 ms) and at once on :meth:`~OutcomeReporter.flush`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections import Counter, deque
from dataclasses import dataclass

from agentmesh.errors import TransportError
from agentmesh.trustnet.ledger import ReceiptLedger
from iatp.clock import Clock, SystemClock
from iatp.identity import AgentIdentity
from trust.errors import TrustError
from trust.evidence import Outcome, Receipt, sign_receipt

logger = logging.getLogger(__name__)

MAX_ACTION_CHARS = 256
#: Seconds between two collections of the outcomes reported from other threads.
COLLECT_INTERVAL = 0.05


@dataclass(frozen=True, slots=True)
class ReportedOutcome:
    """What happened, about whom (``subject``), for which action."""

    subject: str
    outcome: Outcome
    action: str
    at_ms: int


class OutcomeReporter:
    """Turns reported outcomes into receipts signed by ``identity`` (the crew).

    Args:
        identity: the observer; signs every receipt.
        ledger: the mesh's receipt ledger (publishes; the stream's followers fold).
        loop: the event loop the ledger lives on.
        clock: receipt times.
        weight: weight of each receipt (0 < weight <= 10).
        max_pending: outcomes queued before new ones are dropped (``dropped``); the
            inbox of other threads' outcomes holds as many again.
        timeout: seconds to wait for each stream acknowledgement.
        collect_interval: seconds between two collections of other threads' outcomes.
    """

    def __init__(
        self,
        identity: AgentIdentity,
        ledger: ReceiptLedger,
        *,
        loop: asyncio.AbstractEventLoop,
        clock: Clock | None = None,
        weight: float = 1.0,
        max_pending: int = 10_000,
        timeout: float = 2.0,
        collect_interval: float = COLLECT_INTERVAL,
    ) -> None:
        if collect_interval <= 0:
            raise ValueError("collect_interval must be positive")
        self.identity = identity
        self.ledger = ledger
        self.loop = loop
        self.clock: Clock = clock or SystemClock()
        self.weight = weight
        self.timeout = timeout
        self.collect_interval = collect_interval
        self.max_pending = max_pending
        self.published = 0
        self.failed = 0
        self.dropped = 0
        self.outcomes: Counter[str] = Counter()
        self._queue: asyncio.Queue[ReportedOutcome] = asyncio.Queue(maxsize=max_pending)
        # Other threads' outcomes; deque.append / popleft are atomic, so no lock.
        self._inbox: deque[ReportedOutcome] = deque()
        self._loop_thread: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Start publishing (call on the loop)."""
        self._loop_thread = threading.get_ident()
        self._task = self.loop.create_task(self._run(), name="crewai-receipts")

    def report(self, subject: str, outcome: Outcome, action: str) -> None:
        """Queue a receipt about ``subject`` (thread-safe, never blocks, never raises)."""
        item = ReportedOutcome(subject, outcome, action[:MAX_ACTION_CHARS], self.clock.now_ms())
        if threading.get_ident() == self._loop_thread:
            self._enqueue(item)
        elif self._closed or len(self._inbox) >= self.max_pending:
            self.dropped += 1  # closed: nothing will publish it; full: the loop is stuck
        else:
            self._inbox.append(item)  # collected by the loop (see the module docstring)

    def _collect(self) -> None:
        """Move other threads' outcomes to the publishing queue (on the loop)."""
        inbox = self._inbox
        while inbox:
            self._enqueue(inbox.popleft())

    def _enqueue(self, item: ReportedOutcome) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.warning("receipt queue full: an outcome about %s was dropped", item.subject)

    async def _run(self) -> None:
        while True:
            self._collect()
            try:
                async with asyncio.timeout(self.collect_interval):
                    item = await self._queue.get()
            except TimeoutError:
                continue
            try:
                await self._publish(item)
            finally:
                self._queue.task_done()

    async def _publish(self, item: ReportedOutcome) -> None:
        if item.subject == self.identity.did:
            return  # a crew never reports on itself
        try:
            receipt = Receipt.create(
                observer=self.identity.did,
                subject=item.subject,
                interaction_id=os.urandom(12).hex(),
                outcome=item.outcome,
                at_ms=item.at_ms,
                action=item.action or None,
                weight=self.weight,
            )
            await self.ledger.publish(sign_receipt(receipt, self.identity), timeout=self.timeout)
        except (TransportError, TrustError) as exc:
            self.failed += 1
            logger.warning("receipt about %s not published: %s", item.subject, exc.code)
            return
        self.published += 1
        self.outcomes[item.outcome.value] += 1

    async def flush(self, *, timeout: float = 5.0) -> None:
        """Wait until everything queued so far is published (or failed).

        Raises:
            TimeoutError: not drained within ``timeout``.
        """
        await asyncio.sleep(0)  # let callbacks scheduled before the call land first
        self._collect()
        async with asyncio.timeout(timeout):
            await self._queue.join()

    async def aclose(self) -> None:
        """Publish what is queued (best effort, 2 s), then stop. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closed = True  # what other threads report from now on is dropped
        try:
            await self.flush(timeout=2.0)
        except TimeoutError:
            logger.warning("crew receipts still queued at close: %d", self._queue.qsize())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["COLLECT_INTERVAL", "OutcomeReporter", "ReportedOutcome"]
