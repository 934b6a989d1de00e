"""Cascading-failure detection (OWASP ASI-08): one failing agent dragging its callers down.

The detector is an interceptor on a serving node. When a handler fails and the
last request that handler made downstream failed too (a timeout, no responders,
an error reply, an open circuit: noted by :class:`~agentmesh.resilience.peers.PeerBreakers`,
which must be installed), the failure is attributed to that call's *root*
(:class:`~agentmesh.resilience.failures.Attribution`) and remembered with the caller
whose request failed. The rule, per root, over the last ``window_ms``:

* **spread**: failures attributed to the root reached ``min_callers`` distinct
  callers of this node, or
* **depth**: one of them travelled a chain of ``min_depth`` hops or more
  (caller -> this node -> ... -> root; a relayed ``circuit_open`` says how deep),

raises one :class:`CascadeEvent` (audited as kind ``cascade``, code ``detected``;
callbacks from :meth:`CascadeDetector.on_cascade`), then stays quiet about that
root for ``rearm_ms``.

With ``action: quarantine`` the detector also calls the ``quarantine(did, reason)``
callback it was given. Only a mesh authority can sign a quarantine order, so the
callback is typically ``lambda did, why: kill_switch.quarantine(authority, did, why)``
on an authority's node. A root named only by a relayed ``circuit_open`` is the
peer's word, not something this node saw fail: the detector asks for a quarantine
only of a root it called itself (depth 1), and raises the event either way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agentmesh.audit import AuditEvent, AuditSink, MemoryAuditSink
from agentmesh.node.interceptors import InboundMessage, Outcome, PassThroughInterceptor
from agentmesh.resilience.failures import Attribution, last_failure
from iatp.clock import Clock, SystemClock

logger = logging.getLogger(__name__)

MAX_RECORDS_PER_ROOT = 10_000


class CascadeConfig(BaseModel):
    """The cascade rule and what to do about it (the ``cascade:`` section).

    Attributes:
        window_ms: how far back attributed failures count.
        min_callers: distinct callers of this node hit by one root's failures.
        min_depth: hops from a hit caller to the root that alone make a cascade.
        rearm_ms: quiet time per root after an event (default: ``window_ms``).
        action: ``alert`` (event only) or ``quarantine`` (event, then ask the
            quarantine callback about a root this node saw fail itself).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_ms: int = Field(default=30_000, ge=1)
    min_callers: int = Field(default=3, ge=1)
    min_depth: int = Field(default=3, ge=2)
    rearm_ms: int | None = Field(default=None, ge=0)
    action: Literal["alert", "quarantine"] = "alert"


@dataclass(frozen=True, slots=True)
class CascadeEvent:
    """A cascade seen by ``node``: ``root``'s failures reached ``affected`` in ``window_ms``.

    ``affected`` is this node then the callers whose requests failed (sorted);
    ``depth`` the longest chain seen (caller -> ... -> root, in hops); ``codes``
    how the downstream calls failed; ``first_hand`` whether this node itself saw
    ``root`` fail (depth 1), the condition for asking for a quarantine.
    """

    node: str
    root: str
    affected: tuple[str, ...]
    depth: int
    failures: int
    codes: tuple[str, ...]
    window_ms: int
    at_ms: int
    first_hand: bool


@dataclass(frozen=True, slots=True)
class _Hit:
    at_ms: int
    caller: str
    chain: int
    code: str
    first_hand: bool


CascadeCallback = Callable[[CascadeEvent], Awaitable[None] | None]
QuarantineCallback = Callable[[str, str], Awaitable[object]]


class CascadeDetector(PassThroughInterceptor):
    """Attributes handler failures to downstream roots and raises cascade events.

    Install on the node (any stage: it never refuses) together with
    :class:`~agentmesh.resilience.peers.PeerBreakers`, whose bookkeeping tells it
    which downstream call failed.

    Args:
        config: the rule and the action.
        quarantine: ``async quarantine(did, reason)`` for ``action: quarantine``.
        clock: time of failures and events.
        audit: where events are audited (default: the node's, at install).
        node: this node's DID (default: the node's, at install).
    """

    def __init__(
        self,
        config: CascadeConfig | None = None,
        *,
        quarantine: QuarantineCallback | None = None,
        clock: Clock | None = None,
        audit: AuditSink | None = None,
        node: str = "",
    ) -> None:
        self.config = config or CascadeConfig()
        self.quarantine = quarantine
        self.clock: Clock = clock or SystemClock()
        self._audit = audit
        self.node = node
        self.events: list[CascadeEvent] = []
        self.counters: Counter[str] = Counter()
        self._hits: dict[str, deque[_Hit]] = {}
        self._quiet_until: dict[str, int] = {}
        self._callbacks: list[CascadeCallback] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def audit(self) -> AuditSink:
        if self._audit is None:
            self._audit = MemoryAuditSink()
        return self._audit

    def adopt(self, *, node: str, audit: AuditSink, clock: Clock | None = None) -> None:
        """Take the node's DID and audit sink (and clock) unless they were given."""
        if not self.node:
            self.node = node
        if self._audit is None:
            self._audit = audit
        if clock is not None:
            self.clock = clock

    def on_cascade(self, callback: CascadeCallback) -> None:
        """Call ``callback(event)`` on every cascade event (sync or async)."""
        self._callbacks.append(callback)

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        if outcome not in (Outcome.FAILURE, Outcome.TIMEOUT):
            return
        cause = last_failure()
        if cause is not None:
            self.observe(message.sender, cause)

    def observe(self, caller: str, cause: Attribution, *, at_ms: int | None = None) -> None:
        """Record that ``caller``'s request failed because of ``cause``; raise a due event."""
        now = self.clock.now_ms() if at_ms is None else at_ms
        self.counters["attributed"] += 1
        hits = self._hits.setdefault(cause.root, deque(maxlen=MAX_RECORDS_PER_ROOT))
        first_hand = cause.depth == 1 and cause.root == cause.peer
        hits.append(_Hit(now, caller, cause.depth + 1, cause.code, first_hand))
        self._expire(now)
        if now < self._quiet_until.get(cause.root, now):
            return
        hits = self._hits[cause.root]
        callers = {hit.caller for hit in hits}
        depth = max(hit.chain for hit in hits)
        if len(callers) < self.config.min_callers and depth < self.config.min_depth:
            return
        event = CascadeEvent(
            node=self.node,
            root=cause.root,
            affected=(self.node, *sorted(callers - {self.node})),
            depth=depth,
            failures=len(hits),
            codes=tuple(sorted({hit.code for hit in hits})),
            window_ms=self.config.window_ms,
            at_ms=now,
            first_hand=any(hit.first_hand for hit in hits),
        )
        rearm = self.config.rearm_ms if self.config.rearm_ms is not None else self.config.window_ms
        self._quiet_until[cause.root] = now + rearm
        self._raise(event)

    def _expire(self, now: int) -> None:
        horizon = now - self.config.window_ms
        for root in list(self._hits):
            hits = self._hits[root]
            while hits and hits[0].at_ms <= horizon:
                hits.popleft()
            if not hits:
                del self._hits[root]
        for root in [r for r, until in self._quiet_until.items() if until <= now]:
            del self._quiet_until[root]

    def _raise(self, event: CascadeEvent) -> None:
        self.events.append(event)
        self.counters["events"] += 1
        self._audit_event(
            "detected",
            event.root,
            f"{len(event.affected) - 1} callers, depth {event.depth}, "
            f"{event.failures} failures in {event.window_ms} ms ({','.join(event.codes)})",
        )
        for callback in list(self._callbacks):
            try:
                self._spawn(callback(event))
            except Exception:
                logger.exception("cascade callback failed")
        if self.config.action == "quarantine":
            self._request_quarantine(event)

    def _request_quarantine(self, event: CascadeEvent) -> None:
        if self.quarantine is None:
            self._audit_event("quarantine_unavailable", event.root, "no quarantine callback")
            return
        if not event.first_hand:
            self._audit_event(
                "quarantine_skipped", event.root, "root named only by a relayed circuit_open"
            )
            return
        self.counters["quarantines_requested"] += 1
        self._audit_event("quarantine_requested", event.root, f"cascade depth {event.depth}")
        reason = (
            f"cascading failure: {len(event.affected) - 1} callers of {event.node} failed "
            f"within {event.window_ms} ms"
        )
        self._spawn(self._quarantine(event.root, reason))

    async def _quarantine(self, did: str, reason: str) -> None:
        assert self.quarantine is not None
        try:
            await self.quarantine(did, reason)
        except Exception as exc:
            self.counters["quarantines_failed"] += 1
            self._audit_event("quarantine_failed", did, f"{type(exc).__name__}: {exc}")

    def _spawn(self, result: Awaitable[None] | Awaitable[object] | None) -> None:
        if not inspect.isawaitable(result):
            return

        async def run() -> None:
            try:
                await result
            except Exception:
                logger.exception("cascade callback failed")

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the callbacks and quarantine requests started so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _audit_event(self, code: str, root: str, detail: str) -> None:
        self.audit.append(
            AuditEvent(
                at_ms=self.clock.now_ms(),
                node=self.node,
                kind="cascade",
                code=code,
                peer=root,
                detail=detail[:300],
            )
        )


__all__ = [
    "CascadeCallback",
    "CascadeConfig",
    "CascadeDetector",
    "CascadeEvent",
    "QuarantineCallback",
]
