"""The mesh's receipt ledger: signed receipts in a stream, folded by every node.

Stream ``TRUST-<mesh>``, subject ``trust.<mesh>.receipt.<observer key>``, JetStream on
NATS (the embedded stream otherwise). Each observer appends only under its own key
(on a secured broker the server enforces it, ``docs/broker.md``), and a receipt stored
under another observer's key is refused here too. A receipt is appended with
``msg_id = receipt_id``, so the server de-duplicates re-publications inside its window; the engine
de-duplicates by id after that, inside its replay horizon (``TrustConfig.receipt_horizon_ms``),
and refuses receipts older than the horizon (``stale_receipt``). With ``max_age`` the stream
itself forgets receipts after that many seconds; a node then starts from a signed snapshot
(``agentmesh.trustnet.snapshots``) and folds only the tail. Every node folds the stream
*in stream order* (nodes do not fold their own receipts before publishing them), so all nodes fold
the same receipts in the same order and end with the same local trust; a node
that joins late reads the stream from sequence 1 and catches up.

Each stored receipt is checked before it counts: canonical bytes, the observer's
signature (a receipt signed by anyone else is forged), then the engine's rules.
A refused receipt is counted by its error code and audited; the fold goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator

from agentmesh.audit import AuditEvent, AuditSink, MemoryAuditSink
from agentmesh.errors import NodeStateError
from agentmesh.node.addressing import MeshAddressing
from agentmesh.transport.base import PublishAck, Stream, StreamMessage, Transport
from iatp.clock import Clock, SystemClock
from trust.engine import TrustEngine
from trust.errors import SignerMismatch, TrustError
from trust.evidence import Receipt, SignedReceipt, decode_signed_receipt, verify_receipt

logger = logging.getLogger(__name__)

AUDIT_KIND = "trust_receipt"
_MAX_OWN = 65_536


def stream_name(mesh: str) -> str:
    return f"TRUST-{mesh}"


def receipt_subjects(mesh: str) -> str:
    """The stream's subjects: every observer's receipts."""
    return f"trust.{mesh}.receipt.*"


def receipt_subject(mesh: str, observer: str) -> str:
    """Where ``observer`` (a DID) appends its receipts."""
    return f"trust.{mesh}.receipt.{MeshAddressing.agent_key(observer)}"


class ReceiptLedger:
    """Publish signed receipts and fold the mesh's receipt stream into ``engine``.

    Build with :meth:`open`. Not thread-safe: use it from one event loop.

    With ``recompute_every=K`` the engine recomputes after every K-th folded receipt,
    evaluated at the newest receipt time seen (``latest_ms``): stream positions and
    times every node shares, so every node goes through the same sequence of engine
    states, drift flags and rings included.

    Attributes:
        position: sequence of the last stream message folded (0 before any).
        folded: receipts that entered the engine.
        duplicates: stored receipts whose id the engine had already seen.
        refused: refused receipts by error code (``forged_receipt``, ``malformed_receipt``...).
        missing: receipts that were stored but are gone (the stream was purged or
            trimmed before this ledger read them); reported and audited, never waited for.
    """

    def __init__(
        self,
        stream: Stream,
        engine: TrustEngine,
        *,
        mesh: str,
        node: str = "",
        audit: AuditSink | None = None,
        clock: Clock | None = None,
        recompute_every: int | None = None,
    ) -> None:
        if recompute_every is not None and recompute_every < 1:
            raise ValueError("recompute_every must be >= 1 (or None)")
        self.stream = stream
        self.recompute_every = recompute_every
        self.latest_ms = 0
        self.engine = engine
        self.mesh = mesh
        self.node = node
        self.audit: AuditSink = audit if audit is not None else MemoryAuditSink()
        self.clock: Clock = clock or SystemClock()
        self.subjects = receipt_subjects(mesh)
        self.position = 0
        self.folded = 0
        self.duplicates = 0
        self.refused: Counter[str] = Counter()
        self.missing = 0
        self._reader: AsyncGenerator[StreamMessage, None] | None = None
        # Receipts this ledger published and has not folded yet, by their exact wire
        # bytes: folding one of those needs no decode or signature check (this node made
        # the signature). Bounded: the oldest entries go first.
        self._own: dict[bytes, SignedReceipt] = {}
        self._lock = asyncio.Lock()
        self._following = False

    @classmethod
    async def open(
        cls,
        transport: Transport,
        engine: TrustEngine,
        *,
        mesh: str = "agentmesh",
        node: str = "",
        audit: AuditSink | None = None,
        clock: Clock | None = None,
        duplicate_window: float = 120.0,
        recompute_every: int | None = None,
        max_age: float | None = None,
    ) -> ReceiptLedger:
        """Create-or-bind the receipt stream of ``mesh``.

        Args:
            max_age: seconds the stream keeps a receipt (None: for ever). Applies when
                this call creates the stream; an existing stream keeps its own limits.

        Raises:
            TransportError: the stream could not be created or bound.
        """
        stream = await transport.stream(
            stream_name(mesh),
            [receipt_subjects(mesh)],
            duplicate_window=duplicate_window,
            max_age=max_age,
        )
        return cls(
            stream,
            engine,
            mesh=mesh,
            node=node,
            audit=audit,
            clock=clock,
            recompute_every=recompute_every,
        )

    async def publish(
        self, signed: SignedReceipt, *, timeout: float = 2.0, signed_here: bool = False
    ) -> PublishAck:
        """Append a signed receipt (de-duplicated by its id). Does not fold it here.

        Args:
            signed_here: this process just made the signature itself (the receipt
                interceptor does): when these exact bytes come back from the stream,
                the fold skips decoding and the signature check. Never set it for
                receipts that came from elsewhere.

        Raises:
            TransportError: the stream did not acknowledge the append.
        """
        data = signed.encode()
        if signed_here:
            if len(self._own) >= _MAX_OWN:
                del self._own[next(iter(self._own))]
            self._own[data] = signed
        return await self.stream.append(
            receipt_subject(self.mesh, signed.receipt.observer),
            data,
            msg_id=signed.receipt.receipt_id,
            timeout=timeout,
        )

    def resume_at(self, seq: int, *, folded: int, latest_ms: int) -> None:
        """Continue after a snapshot that includes the stream up to ``seq``.

        Raises:
            NodeStateError: this ledger already folded something.
        """
        if self.position or self.folded or self._reader is not None:
            raise NodeStateError("resume_at needs a ledger that has not read the stream")
        self.position, self.folded, self.latest_ms = seq, folded, latest_ms

    def fold(self, message: StreamMessage) -> bool:
        """Check one stored message and record it; False when refused or a duplicate."""
        self.position = max(self.position, message.seq)
        try:
            own = self._own.pop(message.data, None)
            receipt = own.receipt if own is not None else self._verified(message.data)
            if message.subject != receipt_subject(self.mesh, receipt.observer):
                raise SignerMismatch(
                    "receipt stored under another observer's subject",
                    observer=receipt.observer,
                    receipt_id=receipt.receipt_id,
                )
            if not self.engine.record(receipt):
                self.duplicates += 1
                return False
        except TrustError as exc:
            self._refuse(exc, message)
            return False
        self.folded += 1
        self.latest_ms = max(self.latest_ms, receipt.at_ms)
        if self.recompute_every is not None and self.folded % self.recompute_every == 0:
            # A stream position and a time every node agrees on: the whole engine state
            # (drift flags and rings included) stays the same on every node.
            self.engine.recompute(at_ms=self.latest_ms)
        return True

    @staticmethod
    def _verified(data: bytes) -> Receipt:
        return verify_receipt(decode_signed_receipt(data))

    def _refuse(self, error: TrustError, message: StreamMessage) -> None:
        self.refused[error.code] += 1
        observer = getattr(error, "observer", None)
        logger.info("refused receipt at seq %d: %s", message.seq, error.code)
        self.audit.append(
            AuditEvent(
                at_ms=self.clock.now_ms(),
                node=self.node,
                kind=AUDIT_KIND,
                code=error.code,
                peer=observer,
                envelope_id=getattr(error, "receipt_id", None),
                subject=message.subject,
                detail=f"seq {message.seq}: {error}"[:300],
            )
        )

    async def catch_up(self, *, timeout: float = 10.0) -> int:
        """Fold everything stored now (up to the current last sequence); returns folds.

        While :meth:`follow` runs, this waits for the follower to reach that sequence.

        Raises:
            TimeoutError: the stored messages did not all arrive within ``timeout``.
            TransportError: the stream could not be read.
        """
        if self._following:
            return await self._await_position(await self.stream.last_seq(timeout=timeout), timeout)
        async with self._lock:
            target = await self.stream.last_seq(timeout=timeout)
            await self._skip_gap(await self.stream.first_seq(timeout=timeout))
            before = self.folded
            if self.position >= target:
                return 0
            try:
                async with asyncio.timeout(timeout):
                    async for message in self._ensure_reader():
                        self.fold(message)
                        if message.seq >= target:
                            break
            except TimeoutError:
                await self.aclose()  # a cancelled reader cannot resume; reopen from position
                raise
            return self.folded - before

    async def _skip_gap(self, first: int) -> None:
        """Start from what the stream still holds: a purge must not stall the fold."""
        if first <= self.position + 1:
            return
        lost = first - 1 - self.position
        self.missing += lost
        logger.warning(
            "receipt stream lost seq %d..%d before they were folded", self.position + 1, first - 1
        )
        self.audit.append(
            AuditEvent(
                at_ms=self.clock.now_ms(),
                node=self.node,
                kind=AUDIT_KIND,
                code="receipts_missing",
                subject=self.subjects,
                detail=f"seq {self.position + 1}..{first - 1} ({lost}) gone from the stream",
            )
        )
        self.position = first - 1
        await self.aclose()  # a reader from the old position would wait for them

    async def follow(self) -> None:
        """Fold live receipts as they are stored, until cancelled or the transport closes."""
        async with self._lock:
            self._following = True
            try:
                async for message in self._ensure_reader():
                    self.fold(message)
            finally:
                self._following = False
                await self.aclose()

    async def _await_position(self, target: int, timeout: float) -> int:
        before = self.folded
        async with asyncio.timeout(timeout):
            while self.position < target:  # noqa: ASYNC110 (the follower owns the reader)
                await asyncio.sleep(0.01)
        return self.folded - before

    def _ensure_reader(self) -> AsyncGenerator[StreamMessage, None]:
        if self._reader is None:
            self._reader = self.stream.read(start_seq=self.position + 1, subject=self.subjects)
        return self._reader

    async def aclose(self) -> None:
        """Release the stream reader (idempotent)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader.aclose()
