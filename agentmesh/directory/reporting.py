"""Counting and auditing refusals and changes, shared by the directory's components."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from agentmesh.audit import AuditEvent, AuditSink, MemoryAuditSink
from iatp.clock import Clock, SystemClock
from iatp.errors import AgentMeshError


class Reporter:
    """Counts refusals by code and appends audit events (never to the logger).

    Args:
        audit: the sink (default: in memory).
        node: the DID recorded as ``node``.
        clock: for timestamps.
        on_refusal: also called with ``(code, did)`` for every refusal.
    """

    def __init__(
        self,
        audit: AuditSink | None = None,
        *,
        node: str = "directory",
        clock: Clock | None = None,
        on_refusal: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.audit: AuditSink = audit if audit is not None else MemoryAuditSink()
        self.clock: Clock = clock or SystemClock()
        self.node = node
        self.rejected: Counter[str] = Counter()
        self.on_refusal = on_refusal

    def refuse(self, kind: str, error: AgentMeshError, did: str | None, where: str) -> None:
        """Count ``error.code`` and audit it as ``kind``."""
        self.rejected[error.code] += 1
        self.record(kind, error.code, did, f"{where}: {error}")
        if self.on_refusal is not None:
            self.on_refusal(error.code, did)

    def record(self, kind: str, code: str, peer: str | None, detail: str) -> None:
        self.audit.append(
            AuditEvent(
                at_ms=self.clock.now_ms(),
                node=self.node,
                kind=kind,
                code=code,
                peer=peer,
                detail=detail[:300],
            )
        )
