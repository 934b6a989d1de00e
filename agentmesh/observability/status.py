"""Signed status reports: what a node refused, its counters and its SLO burn, on the mesh.

Refusals and SLOs are local to each node, so an operator tool (the dashboard) cannot
read them from the mesh's stores. A node that runs a :class:`StatusReporter`
broadcasts a report every ``interval`` seconds on the topic ``ops.status`` as a
signed IATP envelope (``node.publish``): receivers verify the signature like any
other message, so a report is attributable to the node that sent it and cannot be
forged by anyone on the broker. The report carries no payloads and no keys: the
node's counters, the newest refusals it audited (code, peer, rule, detail, time),
and an optional SLO snapshot.

Refusals are tapped from the node's audit events: wrap the audit sink the node
writes to with :meth:`RecentRefusals.tap` (``agentmesh node run --status-interval``
does it)::

    refusals = RecentRefusals()
    node = MeshNode(identity, transport, audit=refusals.tap(audit))
    async with node, StatusReporter(node, refusals=refusals, interval=5.0):
        ...

A node whose policy denies by default must allow the outbound ``ops.status``
message type, or its reports are refused before they leave (counted in
``StatusReporter.failures``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentmesh.audit import AuditEvent, AuditSink, FanoutAuditSink
from agentmesh.errors import MeshError
from agentmesh.lifecycle import Lifecycle
from iatp.clock import Clock, SystemClock
from iatp.errors import AgentMeshError

if TYPE_CHECKING:
    from agentmesh.node.node import MeshNode

logger = logging.getLogger(__name__)

STATUS_TOPIC = "ops.status"
STATUS_TYPE = "ops.status"
REPORT_VERSION = 1
MAX_REPORT_BYTES = 256 * 1024
MAX_REFUSALS = 50
MAX_SLOS = 100
_RULE = re.compile(r"rule=([\w.:-]+)")
_REFUSAL_KINDS = frozenset({"rejected", "outbound_denied", "policy_denied", "federation_refused"})

SloSnapshot = Callable[[], Sequence[object]]


class StatusReportInvalid(MeshError):
    """A received status report is oversized, not JSON, or has the wrong shape."""

    code = "status_report_invalid"


def is_refusal(event: AuditEvent) -> bool:
    """True for audit events that record something this node refused."""
    if event.kind == "handshake":
        return event.code != "established"
    if event.kind == "saga":
        return event.code == "candidate_refused"
    return event.kind in _REFUSAL_KINDS or event.kind.endswith("_rejected")


def rule_of(detail: str) -> str | None:
    """The policy rule a refusal names (``... [rule=ID ring=N]``), if any."""
    found = _RULE.search(detail)
    if found is None or found.group(1) == "None":
        return None
    return found.group(1)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refusal as a report carries it (no payload, detail truncated)."""

    at_ms: int
    kind: str
    code: str
    peer: str | None
    rule: str | None
    detail: str

    @classmethod
    def of(cls, event: AuditEvent) -> Refusal:
        return cls(
            event.at_ms,
            event.kind,
            event.code,
            event.peer,
            rule_of(event.detail),
            event.detail[:240],
        )


class RecentRefusals:
    """An audit sink that keeps the newest ``capacity`` refusals (thread-safe)."""

    def __init__(self, capacity: int = MAX_REFUSALS) -> None:
        self._items: deque[Refusal] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.total = 0

    def append(self, event: AuditEvent) -> None:
        if not is_refusal(event):
            return
        refusal = Refusal.of(event)
        with self._lock:
            self._items.append(refusal)
            self.total += 1

    def newest(self) -> list[Refusal]:
        """The kept refusals, newest first."""
        with self._lock:
            return list(reversed(self._items))

    def tap(self, sink: AuditSink) -> AuditSink:
        """``sink`` that also feeds this collection (events still go to ``sink`` first)."""
        return FanoutAuditSink(sink, self)


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What a node says about itself. ``node`` is the envelope's verified sender."""

    node: str
    name: str
    at_ms: int
    seq: int
    interval_s: float
    counters: Mapping[str, object] = field(default_factory=dict)
    refusals_total: int = 0
    refusals: tuple[Refusal, ...] = ()
    slo: tuple[Mapping[str, object], ...] = ()

    def encode(self) -> bytes:
        """The report body (JSON; the node field is left out: the signature names it)."""
        body = {
            "v": REPORT_VERSION,
            "name": self.name,
            "at_ms": self.at_ms,
            "seq": self.seq,
            "interval_s": self.interval_s,
            "counters": dict(self.counters),
            "refusals_total": self.refusals_total,
            "refusals": [dataclasses.asdict(r) for r in self.refusals],
            "slo": [dict(s) for s in self.slo],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def _str(data: Mapping[str, object], key: str, limit: int = 300) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise StatusReportInvalid(f"{key} must be a string")
    return value[:limit]


def _int(data: Mapping[str, object], key: str) -> int:
    value = data.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise StatusReportInvalid(f"{key} must be an integer")
    return value


def _refusal(item: object) -> Refusal:
    if not isinstance(item, dict):
        raise StatusReportInvalid("a refusal must be an object")
    peer, rule = item.get("peer"), item.get("rule")
    if peer is not None and not isinstance(peer, str):
        raise StatusReportInvalid("refusal peer must be a string")
    if rule is not None and not isinstance(rule, str):
        raise StatusReportInvalid("refusal rule must be a string")
    return Refusal(
        _int(item, "at_ms"),
        _str(item, "kind", 64),
        _str(item, "code", 64),
        peer[:200] if peer else None,
        rule[:120] if rule else None,
        _str(item, "detail", 240),
    )


def decode_status_report(node: str, data: bytes) -> StatusReport:
    """Parse a report body sent by ``node`` (the verified sender of its envelope).

    Raises:
        StatusReportInvalid: oversized, not JSON, unknown version or wrong shape.
    """
    if len(data) > MAX_REPORT_BYTES:
        raise StatusReportInvalid(f"report is larger than {MAX_REPORT_BYTES} bytes")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise StatusReportInvalid("report is not JSON") from None
    if not isinstance(body, dict) or body.get("v") != REPORT_VERSION:
        raise StatusReportInvalid("report is not a version 1 object")
    counters, refusals, slo = body.get("counters"), body.get("refusals"), body.get("slo")
    if not isinstance(counters, dict) or not isinstance(refusals, list):
        raise StatusReportInvalid("counters must be an object and refusals a list")
    if not isinstance(slo, list) or not all(isinstance(s, dict) for s in slo):
        raise StatusReportInvalid("slo must be a list of objects")
    interval = body.get("interval_s")
    if not isinstance(interval, int | float) or isinstance(interval, bool):
        raise StatusReportInvalid("interval_s must be a number")
    return StatusReport(
        node=node,
        name=_str(body, "name", 120),
        at_ms=_int(body, "at_ms"),
        seq=_int(body, "seq"),
        interval_s=float(interval),
        counters=counters,
        refusals_total=_int(body, "refusals_total"),
        refusals=tuple(_refusal(r) for r in refusals[:MAX_REFUSALS]),
        slo=tuple(slo[:MAX_SLOS]),
    )


def slo_rows(items: Sequence[object]) -> tuple[dict[str, object], ...]:
    """SLO snapshot entries as plain dicts (dataclasses and mappings; others skipped)."""
    rows: list[dict[str, object]] = []
    for item in list(items)[:MAX_SLOS]:
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            rows.append(dataclasses.asdict(item))
        elif isinstance(item, Mapping):
            rows.append({str(k): v for k, v in item.items()})
    return tuple(rows)


class ReporterState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class StatusReporter(Lifecycle):
    """Broadcast a signed :class:`StatusReport` of ``node`` every ``interval`` seconds.

    ``async with StatusReporter(node, refusals=refusals):`` (the node must be running).

    Args:
        node: a running :class:`~agentmesh.node.node.MeshNode` (it signs the reports).
        interval: seconds between reports.
        refusals: the node's tapped refusals (:meth:`RecentRefusals.tap`).
        slo_snapshot: returns SLO entries (dataclasses or mappings) for each report;
            one that raises is logged and the report goes out without SLOs.
        name: a display name for operators (default: the DID's tail).
        clock: report timestamps.
    """

    def __init__(
        self,
        node: MeshNode,
        *,
        interval: float = 5.0,
        refusals: RecentRefusals | None = None,
        slo_snapshot: SloSnapshot | None = None,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.node = node
        self.interval = interval
        self.refusals = refusals
        self.slo_snapshot = slo_snapshot
        self.name = name or f"agent-{node.did[-8:]}"
        self.clock: Clock = clock or SystemClock()
        self.sent = 0
        self.failures = 0
        self._state = ReporterState.NEW
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> ReporterState:
        return self._state

    def report(self) -> StatusReport:
        """The report as it would be sent now."""
        slo: tuple[dict[str, object], ...] = ()
        if self.slo_snapshot is not None:
            try:
                slo = slo_rows(self.slo_snapshot())
            except Exception:
                logger.exception("SLO snapshot failed")
        refusals = self.refusals
        return StatusReport(
            node=self.node.did,
            name=self.name,
            at_ms=self.clock.now_ms(),
            seq=self.sent + self.failures + 1,
            interval_s=self.interval,
            counters=self.node.counters.snapshot(),
            refusals_total=refusals.total if refusals is not None else 0,
            refusals=tuple(refusals.newest()) if refusals is not None else (),
            slo=slo,
        )

    async def publish(self) -> bool:
        """Send one report now; False when it was refused or could not be sent."""
        try:
            await self.node.publish(STATUS_TOPIC, STATUS_TYPE, self.report().encode())
        except AgentMeshError as exc:
            self.failures += 1
            # A quarantined node sends nothing, its own reports included: expected.
            logger.debug("status report not sent: %s", exc.code)
            return False
        self.sent += 1
        return True

    async def start(self) -> None:
        if self._state is not ReporterState.NEW:
            return
        self._state = ReporterState.RUNNING
        self._task = asyncio.create_task(self._run(), name="status-reporter")

    async def _run(self) -> None:
        while True:
            await self.publish()
            await asyncio.sleep(self.interval)

    async def aclose(self) -> None:
        """Stop reporting (idempotent)."""
        self._state = ReporterState.CLOSED
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = [
    "MAX_REFUSALS",
    "STATUS_TOPIC",
    "STATUS_TYPE",
    "RecentRefusals",
    "Refusal",
    "ReporterState",
    "SloSnapshot",
    "StatusReport",
    "StatusReportInvalid",
    "StatusReporter",
    "decode_status_report",
    "is_refusal",
    "rule_of",
    "slo_rows",
]
