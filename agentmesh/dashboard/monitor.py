"""Follow a running mesh read-only and keep the dashboard's snapshot of it.

``async with MeshMonitor(transport, mesh=..., authorities=...) as monitor:`` reads,
on one connection, what the CLI inspection commands read once:

* the directory (signed cards, each verified on read) and the revocation list
  (quarantines, revocations, releases, verified against the mesh authorities);
* the receipt stream, folded into its own :class:`~trust.engine.TrustEngine`
  (scores, rings, the trust graph, drift flags);
* the saga index and each recent saga's durable log (steps and timeline);
* the signed status reports nodes broadcast on ``ops.status`` (counters, recent
  refusals, SLO burn), received through its own :class:`MeshNode`, so every
  report's signature is verified like any message.

It writes nothing to the mesh except the signed operations an
:class:`~agentmesh.dashboard.operations.OperationGate` hands to :meth:`apply`.
Every ``refresh_interval`` seconds (at once after a quarantine or release) it
rebuilds the snapshot; :meth:`changed` wakes server-sent-event streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections import Counter

from agentmesh.dashboard.errors import OperationNotApplied
from agentmesh.dashboard.snapshot import (
    Json,
    ReceivedReport,
    agent_rows,
    quarantine_rows,
    refusal_rows,
    saga_row,
    slo_rows,
    trust_graph,
)
from agentmesh.directory.directory import Directory
from agentmesh.directory.revocations import RevocationChange, RevocationList
from agentmesh.errors import TransportError
from agentmesh.lifecycle import Lifecycle
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.observability.status import STATUS_TOPIC, decode_status_report
from agentmesh.policy.errors import QuarantineOrderError
from agentmesh.policy.killswitch import KillSwitch
from agentmesh.saga.log import SagaIndexEntry, SagaLog
from agentmesh.saga.state import SagaState
from agentmesh.transport.base import Transport
from agentmesh.trustnet.ledger import ReceiptLedger
from iatp.clock import Clock, SystemClock
from iatp.errors import AgentMeshError
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities, RevocationEntry, RevocationKind
from trust.engine import TrustEngine

logger = logging.getLogger(__name__)

MAX_REPORTERS = 1000
MAX_SAGAS = 20
FORGET_AFTER_MS = 10 * 60 * 1000


class MonitorState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class MeshMonitor(Lifecycle):
    """The dashboard's live, read-only view of one mesh (see the module docstring).

    Args:
        transport: connected or not (then the monitor connects and closes it).
        mesh: mesh name.
        identity: the key of the monitor's own node (receives status reports; on a
            secured broker, the identity its JWT names). Default: a fresh one.
        authorities: mesh authority DIDs: whose quarantines count, and who may
            sign operations.
        pre_trusted: DIDs that anchor the trust engine (as in ``trust top``).
        mode: shown on the page (``nats`` or ``demo``).
        actions: whether signed operations are accepted (shown on the page).
        refresh_interval: seconds between snapshots.
        saga_interval: seconds between reads of the saga index.
        catch_up_timeout: seconds to fold the receipts already stored at start.
        clock: wall clock.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        mesh: str = "agentmesh",
        identity: AgentIdentity | None = None,
        authorities: tuple[str, ...] = (),
        pre_trusted: tuple[str, ...] = (),
        mode: str = "nats",
        actions: bool = False,
        refresh_interval: float = 1.0,
        saga_interval: float = 2.0,
        catch_up_timeout: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.transport = transport
        self.mesh = mesh
        self.identity = identity or AgentIdentity.generate()
        self.authorities = authorities
        self.mode = mode
        self.actions = actions
        self.refresh_interval = refresh_interval
        self.saga_interval = saga_interval
        self.catch_up_timeout = catch_up_timeout
        self.clock: Clock = clock or SystemClock()
        self.engine = TrustEngine(pre_trusted=pre_trusted, clock=self.clock)
        self.revocations = RevocationList(
            transport,
            mesh=mesh,
            authorities=RevocationAuthorities(mesh=frozenset(authorities)),
            node=self.identity.did,
            clock=self.clock,
        )
        self.directory = Directory(
            transport,
            mesh=mesh,
            revocations=self.revocations,
            node=self.identity.did,
            clock=self.clock,
            pin_authorities=frozenset(authorities),
        )
        self.kill_switch = KillSwitch(
            transport, self.revocations, mesh=mesh, node=self.identity.did, clock=self.clock
        )
        self.node = MeshNode(
            self.identity, transport, config=NodeConfig(mesh=mesh), clock=self.clock
        )
        self.ledger: ReceiptLedger | None = None
        self.sagas: SagaLog | None = None
        self.reports: dict[str, ReceivedReport] = {}
        self.invalid_reports: Counter[str] = Counter()
        self.warnings: list[str] = []
        self.version = 0
        self._state = MonitorState.NEW
        self._owns_connection = False
        self._snapshot: Json = {}
        self._fingerprint = ""
        self._saga_rows: list[Json] = []
        self._saga_cache: dict[str, tuple[tuple[int, str], SagaState]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._poke = asyncio.Event()
        self._changed = asyncio.Condition()

    @property
    def state(self) -> MonitorState:
        return self._state

    @property
    def did(self) -> str:
        return self.identity.did

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load and follow everything; the first snapshot is ready when this returns.

        Raises:
            TransportError: the mesh cannot be reached (its KV stores are required).
        """
        if self._state is not MonitorState.NEW:
            return
        self._state = MonitorState.RUNNING
        try:
            if not self.transport.is_connected:
                await self.transport.connect(timeout=5.0)
                self._owns_connection = True
            # An observer starts even on an incomplete revocation log, and says so.
            await self.revocations.start(require_complete=False)
            self.revocations.add_listener(self._on_revocation)
            await self.directory.start()
            await self.kill_switch.start()
            await self._start_trust()
            await self._start_sagas()
            await self.node.start()
            await self.node.subscribe_topic(STATUS_TOPIC, self._on_status)
            await self._refresh_sagas()
            self._rebuild()
            self._tasks.append(asyncio.create_task(self._refresh_loop(), name="dashboard-refresh"))
        except BaseException:
            await self.aclose()
            raise

    async def _start_trust(self) -> None:
        try:
            self.ledger = await ReceiptLedger.open(
                self.transport, self.engine, mesh=self.mesh, node=self.did, clock=self.clock
            )
            await self.ledger.catch_up(timeout=self.catch_up_timeout)
        except (TransportError, TimeoutError) as exc:
            self.warnings.append(f"trust: the receipt stream cannot be read ({exc})")
            self.ledger = None
            return
        self.engine.recompute()
        self._tasks.append(asyncio.create_task(self._follow_receipts(), name="dashboard-trust"))

    async def _follow_receipts(self) -> None:
        assert self.ledger is not None
        try:
            await self.ledger.follow()
        except TransportError as exc:
            self.warnings.append(f"trust: stopped following receipts ({exc.code})")

    async def _start_sagas(self) -> None:
        try:
            self.sagas = await SagaLog.open(self.transport, mesh=self.mesh, clock=self.clock)
        except (TransportError, AgentMeshError) as exc:
            self.warnings.append(f"sagas: the saga log cannot be read ({exc})")

    async def aclose(self) -> None:
        """Stop following and leave (idempotent)."""
        if self._state is MonitorState.CLOSED:
            return
        self._state = MonitorState.CLOSED
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        async with self._changed:
            self._changed.notify_all()
        await self.node.aclose()
        if self.ledger is not None:
            await self.ledger.aclose()
        await self.kill_switch.aclose()
        await self.directory.aclose()
        await self.revocations.aclose()
        if self._owns_connection:
            await self.transport.aclose()

    # -- inputs ------------------------------------------------------------------------------

    async def _on_status(self, message: InboundMessage) -> bytes | None:
        try:
            report = decode_status_report(message.sender, message.body)
        except AgentMeshError as exc:
            self.invalid_reports[exc.code] += 1
            return None
        known = self.reports.get(report.node)
        if known is not None and known.report.at_ms > report.at_ms:
            return None  # an older report overtaken by a newer one
        if known is None and len(self.reports) >= MAX_REPORTERS:
            oldest = min(self.reports, key=lambda did: self.reports[did].received_at_ms)
            del self.reports[oldest]
        self.reports[report.node] = ReceivedReport(report, self.clock.now_ms())
        return None

    def _forget_silent_nodes(self) -> None:
        """Drop the reports of nodes silent for ``FORGET_AFTER_MS`` (they left long ago)."""
        horizon = self.clock.now_ms() - FORGET_AFTER_MS
        for did in [d for d, r in self.reports.items() if r.received_at_ms < horizon]:
            del self.reports[did]

    def _on_revocation(self, change: RevocationChange) -> None:
        self._poke.set()

    def knows(self, entry: RevocationEntry) -> bool:
        """True when ``entry`` is already in the revocation list (a replayed order)."""
        return entry in self.revocations.entries(entry.subject)

    async def apply(self, entry: RevocationEntry) -> None:
        """Broadcast and store a verified order (it is checked once more here).

        Raises:
            OperationNotApplied: refused by this monitor's authorities or not stored.
        """
        try:
            await self.kill_switch.send(entry, timeout=5.0)
        except (QuarantineOrderError, TransportError) as exc:
            raise OperationNotApplied(f"the mesh did not take the order: {exc}") from None
        self._poke.set()

    # -- snapshots ---------------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sagas = loop.time() + self.saga_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=self.refresh_interval)
            self._poke.clear()
            if loop.time() >= next_sagas:
                next_sagas = loop.time() + self.saga_interval
                try:
                    await self._refresh_sagas()
                except (AgentMeshError, TimeoutError) as exc:
                    logger.warning("saga refresh failed: %s", exc)
            self._forget_silent_nodes()
            self.engine.recompute()
            if self._rebuild():
                async with self._changed:
                    self._changed.notify_all()

    async def _refresh_sagas(self) -> None:
        if self.sagas is None:
            return
        entries: list[SagaIndexEntry] = await self.sagas.entries()
        entries.sort(key=lambda e: (-e.updated_ms, e.saga_id))
        rows = []
        for entry in entries[:MAX_SAGAS]:
            rows.append(saga_row(entry, await self._saga_state(entry), self.names()))
        self._saga_rows = rows

    async def _saga_state(self, entry: SagaIndexEntry) -> SagaState | None:
        assert self.sagas is not None
        key = (entry.last_seq, entry.status)
        cached = self._saga_cache.get(entry.saga_id)
        # A running saga's steps move without an index update: read it every time.
        if cached is not None and cached[0] == key and cached[1].status.terminal:
            return cached[1]
        try:
            state = await self.sagas.load(entry.saga_id, timeout=2.0)
        except (AgentMeshError, TimeoutError) as exc:
            logger.info("saga %s unreadable: %s", entry.saga_id, exc)
            return cached[1] if cached is not None else None
        self._saga_cache[entry.saga_id] = (key, state)
        return state

    def names(self) -> dict[str, str]:
        """DID -> display name (cards first, then report names)."""
        names = {did: received.report.name for did, received in self.reports.items()}
        names.update({card.did: card.display_name for card in self.directory.cards()})
        return names

    def _status_of(self, did: str) -> str:
        status = self.kill_switch.status(did)
        if status in (RevocationKind.QUARANTINED, RevocationKind.REVOKED):
            return status.value
        if self.directory.rotations.statement_from(did) is not None:
            return "rotated"
        return "held" if self.directory.pins.is_held(did) else "ok"

    def _build(self) -> Json:
        now = self.clock.now_ms()
        names = self.names()
        listed = {did: kind.value for did, kind in self.revocations.listed().items()}
        warnings = list(self.warnings)
        for issuer, problem in self.revocations.incomplete.items():
            warnings.append(f"revocation log of {issuer} incomplete: {problem}")
        return {
            "mesh": self.mesh,
            "mode": self.mode,
            "dashboard": self.did,
            "actions": self.actions,
            "authorities": list(self.authorities),
            "warnings": warnings,
            "agents": agent_rows(
                self.directory.cards(),
                status_of=self._status_of,
                held=self.directory.pins.is_held,
                engine=self.engine if self.ledger is not None else None,
                reports=self.reports,
                listed=listed,
                now_ms=now,
            ),
            "trust": {
                **trust_graph(self.engine if self.ledger is not None else None, names),
                "receipts": self.ledger.folded if self.ledger is not None else 0,
                "refused": dict(self.ledger.refused) if self.ledger is not None else {},
            },
            "refusals": refusal_rows(self.reports, names),
            "quarantines": quarantine_rows(listed, self.revocations.entries, names),
            "sagas": self._saga_rows,
            "slo": slo_rows(self.reports, names),
            "reports_refused": dict(self.invalid_reports),
        }

    def _rebuild(self) -> bool:
        """Rebuild the snapshot; True when it changed."""
        snapshot = self._build()
        fingerprint = json.dumps(snapshot, sort_keys=True, default=str)
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        self.version += 1
        self._snapshot = {
            **snapshot,
            "version": self.version,
            "generated_at_ms": self.clock.now_ms(),
        }
        return True

    def snapshot(self) -> Json:
        """The newest snapshot (JSON-ready)."""
        return self._snapshot

    async def changed(self, after: int, *, timeout: float) -> int:
        """Wait until the version moves past ``after`` (or ``timeout``); the version now."""
        if self.version > after:
            return self.version
        if self._state is MonitorState.CLOSED:  # nothing changes any more
            await asyncio.sleep(timeout)
            return self.version
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(
                        lambda: self.version > after or self._state is MonitorState.CLOSED
                    ),
                    timeout=timeout,
                )
        return self.version


__all__ = ["MAX_SAGAS", "MeshMonitor", "MonitorState"]
