"""A node's trust service: engine, ledger, live fold and periodic recompute."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable

from agentmesh.audit import AuditEvent, AuditSink
from agentmesh.errors import NodeStateError, TransportError
from agentmesh.lifecycle import Lifecycle
from agentmesh.transport.base import Transport
from agentmesh.trustnet.interceptor import ReceiptInterceptor
from agentmesh.trustnet.ledger import ReceiptLedger
from agentmesh.trustnet.snapshots import (
    AUDIT_KIND as SNAPSHOT_AUDIT_KIND,
)
from agentmesh.trustnet.snapshots import (
    DEFAULT_CHUNK_BYTES,
    SnapshotPolicy,
    SnapshotStore,
    bucket_name,
)
from iatp.clock import Clock, SystemClock
from iatp.identity import AgentIdentity
from trust.config import TrustConfig
from trust.engine import TrustEngine
from trust.errors import SnapshotError, SnapshotMismatch
from trust.snapshot import SnapshotManifest, check_body, seal_snapshot, verify_manifest
from trust.state import pack_state, unpack_state

logger = logging.getLogger(__name__)


class MeshTrust(Lifecycle):
    """``async with MeshTrust(transport, identity, pre_trusted=...) as trust:``.

    On start it binds the receipt stream, folds everything already stored (a late
    joiner catches up here), then follows new receipts. Recomputes happen every
    ``recompute_interval`` seconds of wall-clock time (fresh decay, but each node at
    its own moments) and/or every ``recompute_every`` folded receipts (deterministic:
    every node passes through the same engine states; see :class:`ReceiptLedger`).
    ``trust.engine`` answers ``score``/``ring``; ``trust.interceptor`` turns this
    node's handled messages into receipts
    (``node.add_interceptor(trust.interceptor, stage=Stage.TRUST)``).

    Bounded history (``docs/trust.md`` section 10): ``config.receipt_horizon_ms``
    bounds the receipt ids remembered; ``stream_max_age`` makes the stream forget
    receipts (when this node creates it); ``snapshots`` lets the node start from a
    signed snapshot and fold only the tail (``SnapshotPolicy.signers``) and/or write
    snapshots itself (``SnapshotPolicy.write_every``). A refused snapshot is counted
    in ``snapshot_refused`` by code, audited, and the node folds the whole stream.
    """

    def __init__(
        self,
        transport: Transport,
        identity: AgentIdentity,
        *,
        mesh: str = "agentmesh",
        pre_trusted: Iterable[str] = (),
        config: TrustConfig | None = None,
        clock: Clock | None = None,
        audit: AuditSink | None = None,
        recompute_interval: float | None = 5.0,
        recompute_every: int | None = None,
        catch_up_timeout: float = 30.0,
        engine: TrustEngine | None = None,
        snapshots: SnapshotPolicy | None = None,
        stream_max_age: float | None = None,
    ) -> None:
        self.transport = transport
        self.identity = identity
        self.mesh = mesh
        self.clock: Clock = clock or SystemClock()
        # ``engine``: one made beforehand (e.g. already handed to a ring enforcer);
        # then ``pre_trusted`` and ``config`` are the engine's own.
        # Not ``engine or ...``: an engine with no evidence yet has len() 0, so it is falsy.
        self.engine = (
            engine
            if engine is not None
            else TrustEngine(pre_trusted=pre_trusted, clock=self.clock, config=config)
        )
        self._audit = audit
        self.recompute_interval = recompute_interval
        self.recompute_every = recompute_every
        self.catch_up_timeout = catch_up_timeout
        self._ledger: ReceiptLedger | None = None
        self._interceptor: ReceiptInterceptor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.snapshots = snapshots
        self.stream_max_age = stream_max_age
        self._store: SnapshotStore | None = None
        self.started_from_seq = 0
        self.snapshots_written = 0
        self.snapshot_failures = 0
        self.snapshot_refused: Counter[str] = Counter()

    @property
    def ledger(self) -> ReceiptLedger:
        if self._ledger is None:
            raise NodeStateError("MeshTrust is not started")
        return self._ledger

    @property
    def interceptor(self) -> ReceiptInterceptor:
        if self._interceptor is None:
            raise NodeStateError("MeshTrust is not started")
        return self._interceptor

    async def start(self) -> None:
        """Bind the stream, catch up, recompute and start following.

        Raises:
            TransportError: the stream could not be bound or read.
            TimeoutError: catching up took longer than ``catch_up_timeout``.
        """
        self._ledger = await ReceiptLedger.open(
            self.transport,
            self.engine,
            mesh=self.mesh,
            node=self.identity.did,
            audit=self._audit,
            clock=self.clock,
            recompute_every=self.recompute_every,
            max_age=self.stream_max_age,
        )
        if self.snapshots is not None and self.snapshots.signers:
            await self._start_from_snapshot(self.snapshots.signers)
        self._interceptor = ReceiptInterceptor(
            self.identity, self._ledger, clock=self.clock, background=True
        )
        await self._ledger.catch_up(timeout=self.catch_up_timeout)
        self._tasks = [
            asyncio.create_task(self._ledger.follow(), name="trust-follow"),
            asyncio.create_task(self._interceptor.run(), name="trust-publish"),
        ]
        if self.recompute_interval is not None:
            self.engine.recompute()
            self._tasks.append(asyncio.create_task(self._recompute_loop(), name="trust-recompute"))
        if self.snapshots is not None and self.snapshots.write_every is not None:
            # The starting count is read now: the task's first step may run after folds.
            loop = self._snapshot_loop(self.ledger.folded)
            self._tasks.append(asyncio.create_task(loop, name="trust-snapshot"))

    async def _snapshot_store(self) -> SnapshotStore:
        if self._store is None:
            self._store = await SnapshotStore.open(self.transport, self.mesh)
        return self._store

    async def _start_from_snapshot(self, signers: frozenset[str]) -> None:
        """Load the newest trusted snapshot into the (fresh) engine, or leave it fresh."""
        ledger = self.ledger
        try:
            store = await self._snapshot_store()
            manifest = await store.manifest(timeout=self.catch_up_timeout)
            if manifest is None:
                return
            verify_manifest(manifest, mesh=self.mesh, signers=signers)
            last = await ledger.stream.last_seq(timeout=self.catch_up_timeout)
            if manifest.seq > last:
                raise SnapshotMismatch(
                    f"snapshot is ahead of the stream (last seq {last})",
                    signer=manifest.signer,
                    seq=manifest.seq,
                )
            body = await store.body(manifest, timeout=self.catch_up_timeout)
            check_body(manifest, body)
            state = await asyncio.to_thread(unpack_state, body)
            self.engine.load_state(state)  # all checks first: nothing half-applied
        except SnapshotError as exc:
            self.snapshot_refused[exc.code] += 1
            logger.warning("trust snapshot refused (%s): folding the whole stream", exc.code)
            ledger.audit.append(
                AuditEvent(
                    at_ms=self.clock.now_ms(),
                    node=self.identity.did,
                    kind=SNAPSHOT_AUDIT_KIND,
                    code=exc.code,
                    peer=exc.signer,
                    subject=bucket_name(self.mesh),
                    detail=str(exc)[:300],
                )
            )
            return
        ledger.resume_at(manifest.seq, folded=manifest.folded, latest_ms=manifest.latest_ms)
        self.started_from_seq = manifest.seq

    async def write_snapshot(self, *, timeout: float = 10.0) -> SnapshotManifest:
        """Sign and store a snapshot of the engine as of the ledger's position.

        The state is copied at once (between two folds, so it is exactly the fold
        of the stream up to ``ledger.position``); encoding and signing run in a
        worker thread.

        Raises:
            NodeStateError: not started.
            TransportError: the snapshot could not be stored.
        """
        ledger = self.ledger
        state = self.engine.export_state()
        seq, folded, latest_ms = ledger.position, ledger.folded, ledger.latest_ms
        chunk = self.snapshots.chunk_bytes if self.snapshots else DEFAULT_CHUNK_BYTES

        def seal() -> tuple[SnapshotManifest, bytes]:
            body = pack_state(state)
            manifest = seal_snapshot(
                body,
                mesh=self.mesh,
                seq=seq,
                folded=folded,
                latest_ms=latest_ms,
                taken_at_ms=self.clock.now_ms(),
                signer=self.identity,
                chunk_bytes=chunk,
            )
            return manifest, body

        manifest, body = await asyncio.to_thread(seal)
        store = await self._snapshot_store()
        await store.write(manifest, body, chunk_bytes=chunk, timeout=timeout)
        self.snapshots_written += 1
        return manifest

    async def _snapshot_loop(self, written_at: int) -> None:
        policy = self.snapshots
        assert policy is not None
        assert policy.write_every is not None
        while True:
            await asyncio.sleep(policy.check_interval)
            if self.ledger.folded - written_at < policy.write_every:
                continue
            folded = self.ledger.folded
            try:
                await self.write_snapshot()
            except (TransportError, TimeoutError) as exc:
                self.snapshot_failures += 1
                logger.warning("trust snapshot not written: %s", exc)
                continue
            written_at = folded

    async def _recompute_loop(self) -> None:
        interval = self.recompute_interval or 5.0
        while True:
            await asyncio.sleep(interval)
            self.engine.recompute()

    async def aclose(self) -> None:
        """Publish what is queued (best effort), stop following and recomputing (idempotent)."""
        if self._interceptor is not None and self._tasks:
            try:
                await self._interceptor.flush(timeout=2.0)
            except TimeoutError:
                logger.warning("trust: receipts still queued at close")
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._ledger is not None:
            await self._ledger.aclose()
