"""Token buckets per (agent, action): a burst, then a steady rate.

Pure and synchronous: the time source is injected (seconds, monotonic), so
tests and simulations control it. Limits are matched by action glob; the first
matching limit applies. A refusal says how long until a token is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentmesh.policy.compiler import PatternSet
from agentmesh.policy.errors import RateLimited

MonotonicClock = Callable[[], float]

_ACTIONS_CACHED = 10_000


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``rate`` tokens per second, up to ``burst`` saved; applies to ``actions`` (globs)."""

    actions: tuple[str, ...]
    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        if not self.actions:
            raise ValueError("a rate limit names at least one action pattern")


class TokenBucket:
    """One bucket. ``take`` returns 0.0 on success, else the seconds until enough tokens."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float, cost: float = 1.0) -> float:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class RateLimiter:
    """Buckets per agent and action, created on first use.

    Args:
        limits: checked in order; the first whose actions match applies.
        clock: monotonic seconds (default ``time.monotonic``).
        max_buckets: above this, full (idle) buckets are forgotten.
    """

    def __init__(
        self,
        limits: Sequence[RateLimit],
        *,
        clock: MonotonicClock = time.monotonic,
        max_buckets: int = 100_000,
    ) -> None:
        self._limits = [(PatternSet(limit.actions), limit) for limit in limits]
        self._clock = clock
        self._max = max_buckets
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._lock = threading.Lock()
        self._limit_of: dict[str, RateLimit | None] = {}  # action -> first matching limit

    def limit_for(self, action: str) -> RateLimit | None:
        try:
            return self._limit_of[action]
        except KeyError:
            pass
        found = next((limit for patterns, limit in self._limits if patterns.matches(action)), None)
        if len(self._limit_of) >= _ACTIONS_CACHED:
            self._limit_of.clear()  # actions come from callers: keep the cache bounded
        self._limit_of[action] = found
        return found

    def acquire(self, agent: str, action: str, *, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from ``agent``'s bucket for ``action``.

        Raises:
            RateLimited: the bucket is empty (``retry_after_s`` says for how long).
        """
        limit = self.limit_for(action)
        if limit is None:
            return
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get((agent, action))
            if bucket is None:
                if len(self._buckets) >= self._max:
                    self._forget_idle(now)
                bucket = self._buckets[(agent, action)] = TokenBucket(limit.rate, limit.burst, now)
            wait = bucket.take(now, cost)
        if wait:
            raise RateLimited(
                f"rate limit for {action!r}: {limit.rate:g}/s, burst {limit.burst}; "
                f"retry in {wait:.3f}s",
                retry_after_s=wait,
                did=agent,
                action=action,
                rule="rate-limit",
            )

    def adopt(self, previous: RateLimiter) -> int:
        """Take over ``previous``'s buckets whose limit still exists (a policy reload).

        A limit still exists when this limiter's first matching limit for the
        action names the same action patterns as the one that made the bucket;
        the bucket keeps its tokens (at most the new burst) and takes the new
        rate. Returns how many buckets were taken over.
        """
        now = self._clock()
        with previous._lock:
            buckets = list(previous._buckets.items())
        kept = 0
        with self._lock:
            for (agent, action), bucket in buckets:
                before, after = previous.limit_for(action), self.limit_for(action)
                if before is None or after is None or before.actions != after.actions:
                    continue
                tokens = bucket.tokens + max(0.0, now - bucket.updated) * bucket.rate
                carried = TokenBucket(after.rate, after.burst, now)
                carried.tokens = min(carried.burst, bucket.burst, tokens)
                self._buckets[(agent, action)] = carried
                kept += 1
        return kept

    def _forget_idle(self, now: float) -> None:
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * bucket.rate >= bucket.burst:
                del self._buckets[key]


__all__ = ["MonotonicClock", "RateLimit", "RateLimiter", "TokenBucket"]
