"""Service-level objectives per capability, tracked on the serving node.

An :class:`SloSpec` (the ``slos:`` list of a resilience file) names a capability
(a message type, or an ``fnmatch`` pattern of them) and one or both objectives:

* ``success_rate``: the fraction of handled requests whose handler succeeded;
* ``latency``: the fraction answered within ``threshold_ms`` (``objective`` 0.95
  and ``threshold_ms`` 200 reads "p95 under 200 ms").

:class:`SloTracker` is an interceptor: it stamps each admitted message of a
tracked capability and, at the handler's outcome, records success or failure and
the latency (admission to outcome, including any wait for a handler slot).
Messages refused before the handler (policy, quarantine, trust) are the caller's
problem, not the service's: they count in ``rejected`` (since start) and in no objective. A
handler that never ends records nothing; its callers' timeouts show on *their*
side (and in the circuit breakers).

Maths, for an objective ``o`` and a window ``w`` (``bad`` = failed, or slower than
the threshold)::

    burn_rate(w)           = (bad(w) / total(w)) / (1 - o)        (0 with no events)
    error_budget_remaining = 1 - burn_rate(window_s)

A burn rate of 1 spends the budget exactly over the SLO window; 10 spends it in a
tenth of it. The remaining budget is 1 untouched, 0 spent, negative overspent.
Two burn windows (``burn_windows_s``, default ``window_s / 12`` and ``window_s``)
give a fast and a slow signal; ``burning`` is true when both are at or above
``alert_burn_rate`` (a short spike alone does not page, a slow leak alone does not
page until it is also visible now). Events are counted in buckets of
``bucket_ms`` (1 s): a window is the last ``w / bucket`` buckets, the current one
included.

:meth:`SloTracker.snapshot` is the stable read for metrics and dashboards, one
:class:`SloSnapshot` per spec, in spec order::

    SloSnapshot(capability, objective, latency_objective, latency_threshold_ms,
                window_s, total, rejected, success_rate, latency_ok_rate,
                error_budget_remaining, burn_rate, burn_rate_long, burning)

``objective`` is the success-rate objective (None when only latency is set);
``success_rate`` and ``latency_ok_rate`` are over ``window_s`` (1.0 with no events;
``latency_ok_rate`` is None without a latency objective); ``error_budget_remaining``
is the smaller of the objectives' remaining budgets; ``burn_rate`` (short window)
and ``burn_rate_long`` are the larger of the objectives' burn rates.
"""

from __future__ import annotations

import fnmatch
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentmesh.node.interceptors import InboundMessage, Outcome, PassThroughInterceptor, Verdict
from iatp.clock import Clock, SystemClock

DEFAULT_BUCKET_MS = 1_000
MAX_PENDING = 100_000


class LatencyObjective(BaseModel):
    """``objective`` of the requests answered within ``threshold_ms``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold_ms: float = Field(gt=0)
    objective: float = Field(gt=0, lt=1)


class SloSpec(BaseModel):
    """One capability's objectives (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capability: str = Field(min_length=1)
    success_rate: float | None = Field(default=None, gt=0, lt=1)
    latency: LatencyObjective | None = None
    window_s: int = Field(default=3600, ge=1)
    burn_windows_s: tuple[int, int] | None = None
    alert_burn_rate: float = Field(default=14.4, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> SloSpec:
        if self.success_rate is None and self.latency is None:
            raise ValueError(f"SLO {self.capability!r} sets neither success_rate nor latency")
        short, long = self.windows_s
        if not 1 <= short <= long <= self.window_s:
            raise ValueError(
                f"burn windows must satisfy 1 <= short <= long <= window_s, got {short}, {long}"
            )
        return self

    @property
    def windows_s(self) -> tuple[int, int]:
        """The (short, long) burn-rate windows in seconds."""
        if self.burn_windows_s is not None:
            return self.burn_windows_s
        return max(1, self.window_s // 12), self.window_s

    def matches(self, message_type: str) -> bool:
        return fnmatch.fnmatchcase(message_type, self.capability)


def burn_rate(bad: int, total: int, objective: float) -> float:
    """How fast the error budget of ``objective`` burns: ``(bad / total) / (1 - objective)``.

    0.0 with no events. Raises ValueError for counts out of range or an objective
    outside (0, 1).
    """
    if not 0 < objective < 1:
        raise ValueError(f"an objective is in (0, 1), got {objective}")
    if not 0 <= bad <= total:
        raise ValueError(f"need 0 <= bad <= total, got {bad}, {total}")
    if total == 0:
        return 0.0
    return (bad / total) / (1.0 - objective)


def budget_remaining(bad: int, total: int, objective: float) -> float:
    """Fraction of the window's error budget left: ``1 - burn_rate`` (negative: overspent)."""
    return 1.0 - burn_rate(bad, total, objective)


@dataclass(frozen=True, slots=True)
class SloSnapshot:
    """One capability's objectives now (fields: see the module docstring)."""

    capability: str
    objective: float | None
    latency_objective: float | None
    latency_threshold_ms: float | None
    window_s: int
    total: int
    rejected: int
    success_rate: float
    latency_ok_rate: float | None
    error_budget_remaining: float
    burn_rate: float
    burn_rate_long: float
    burning: bool


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """Events in one window: all, successful, answered within the latency threshold."""

    total: int = 0
    good: int = 0
    fast: int = 0


class SloWindow:
    """Counts in time buckets, kept for ``horizon_ms``; sums over any shorter window."""

    def __init__(self, horizon_ms: int, bucket_ms: int = DEFAULT_BUCKET_MS) -> None:
        if bucket_ms < 1 or horizon_ms < bucket_ms:
            raise ValueError("need 1 <= bucket_ms <= horizon_ms")
        self.bucket_ms = bucket_ms
        self._keep = -(-horizon_ms // bucket_ms)
        # [bucket index, total, good, fast], oldest first; only buckets with events.
        self._buckets: deque[list[int]] = deque()

    def add(self, at_ms: int, *, good: bool, fast: bool) -> None:
        index = at_ms // self.bucket_ms
        if self._buckets and self._buckets[-1][0] >= index:
            bucket = self._buckets[-1]
            if bucket[0] != index:  # a late event (clock skew): count it in the newest bucket
                index = bucket[0]
        else:
            bucket = [index, 0, 0, 0]
            self._buckets.append(bucket)
        bucket[1] += 1
        bucket[2] += good
        bucket[3] += fast
        while self._buckets and self._buckets[0][0] <= index - self._keep:
            self._buckets.popleft()

    def counts(self, now_ms: int, window_ms: int) -> WindowCounts:
        """Events in the last ``ceil(window_ms / bucket_ms)`` buckets, the current included."""
        first = now_ms // self.bucket_ms - (-(-window_ms // self.bucket_ms)) + 1
        last = now_ms // self.bucket_ms
        total = good = fast = 0
        for index, t, g, f in reversed(self._buckets):
            if index < first:
                break
            if index <= last:
                total, good, fast = total + t, good + g, fast + f
        return WindowCounts(total, good, fast)


class _Tracked:
    __slots__ = ("rejected", "spec", "window")

    def __init__(self, spec: SloSpec, bucket_ms: int) -> None:
        self.spec = spec
        self.window = SloWindow(spec.window_s * 1000, bucket_ms)
        self.rejected = 0


class SloTracker(PassThroughInterceptor):
    """Tracks every spec's objectives from the node's handled outcomes.

    Install last (``Stage.SAGA``): it never refuses, and it should stamp only
    messages every other check admitted. A message type is tracked by the first
    spec whose capability pattern matches it.

    Args:
        specs: the objectives.
        clock: time of outcomes and latency (milliseconds).
        bucket_ms: width of the counting buckets.
    """

    def __init__(
        self,
        specs: Sequence[SloSpec],
        *,
        clock: Clock | None = None,
        bucket_ms: int = DEFAULT_BUCKET_MS,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self._tracked = [_Tracked(spec, bucket_ms) for spec in specs]
        self._pending: dict[bytes, tuple[_Tracked, int]] = {}

    def _find(self, message_type: str) -> _Tracked | None:
        for tracked in self._tracked:
            if tracked.spec.matches(message_type):
                return tracked
        return None

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        tracked = self._find(message.type)
        if tracked is not None and len(self._pending) < MAX_PENDING:
            self._pending[message.envelope.id] = (tracked, self.clock.now_ms())
        return await super().check_inbound(message)

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        started = self._pending.pop(message.envelope.id, None)
        if outcome is Outcome.REJECTED:
            tracked = started[0] if started is not None else self._find(message.type)
            if tracked is not None:
                tracked.rejected += 1
            return
        if started is None:
            return
        tracked, at_ms = started
        now = self.clock.now_ms()
        self._add(tracked, now, ok=outcome is Outcome.SUCCESS, latency_ms=now - at_ms)

    def record(
        self, message_type: str, *, ok: bool, latency_ms: float, at_ms: int | None = None
    ) -> bool:
        """Record one handled message of ``message_type``; False if no spec tracks it."""
        tracked = self._find(message_type)
        if tracked is None:
            return False
        self._add(
            tracked,
            self.clock.now_ms() if at_ms is None else at_ms,
            ok=ok,
            latency_ms=latency_ms,
        )
        return True

    @staticmethod
    def _add(tracked: _Tracked, at_ms: int, *, ok: bool, latency_ms: float) -> None:
        latency = tracked.spec.latency
        fast = latency is None or latency_ms <= latency.threshold_ms
        tracked.window.add(at_ms, good=ok, fast=fast)

    def snapshot(self, *, now_ms: int | None = None) -> list[SloSnapshot]:
        """Every spec's state now (see the module docstring for the fields)."""
        now = self.clock.now_ms() if now_ms is None else now_ms
        return [_snapshot(tracked, now) for tracked in self._tracked]


def _objectives(spec: SloSpec) -> list[tuple[float, bool]]:
    """(objective, is_latency) of each objective the spec sets."""
    found: list[tuple[float, bool]] = []
    if spec.success_rate is not None:
        found.append((spec.success_rate, False))
    if spec.latency is not None:
        found.append((spec.latency.objective, True))
    return found


def _bad(counts: WindowCounts, is_latency: bool) -> int:
    return counts.total - (counts.fast if is_latency else counts.good)


def _snapshot(tracked: _Tracked, now: int) -> SloSnapshot:
    spec = tracked.spec
    short_s, long_s = spec.windows_s
    whole = tracked.window.counts(now, spec.window_s * 1000)
    short = tracked.window.counts(now, short_s * 1000)
    long = tracked.window.counts(now, long_s * 1000)
    objectives = _objectives(spec)
    remaining = min(budget_remaining(_bad(whole, lat), whole.total, o) for o, lat in objectives)
    burn_short = max(burn_rate(_bad(short, lat), short.total, o) for o, lat in objectives)
    burn_long = max(burn_rate(_bad(long, lat), long.total, o) for o, lat in objectives)
    return SloSnapshot(
        capability=spec.capability,
        objective=spec.success_rate,
        latency_objective=spec.latency.objective if spec.latency is not None else None,
        latency_threshold_ms=spec.latency.threshold_ms if spec.latency is not None else None,
        window_s=spec.window_s,
        total=whole.total,
        rejected=tracked.rejected,
        success_rate=whole.good / whole.total if whole.total else 1.0,
        latency_ok_rate=(
            (whole.fast / whole.total if whole.total else 1.0) if spec.latency is not None else None
        ),
        error_budget_remaining=remaining,
        burn_rate=burn_short,
        burn_rate_long=burn_long,
        burning=burn_short >= spec.alert_burn_rate and burn_long >= spec.alert_burn_rate,
    )


__all__ = [
    "LatencyObjective",
    "SloSnapshot",
    "SloSpec",
    "SloTracker",
    "SloWindow",
    "WindowCounts",
    "budget_remaining",
    "burn_rate",
]
