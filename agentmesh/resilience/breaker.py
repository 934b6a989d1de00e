"""One peer's circuit breaker: a pure state machine over an injected time.

States and transitions (docs/resilience.md)::

    CLOSED --(failure_threshold consecutive failures)--> OPEN
    OPEN --(cool-down, jittered, elapsed; seen at the next look)--> HALF_OPEN
    HALF_OPEN --(close_after probe successes)--> CLOSED
    HALF_OPEN --(a probe fails)--> OPEN

While OPEN every request is refused without being sent. While HALF_OPEN at most
``half_open_probes`` requests (probes) are in flight at once; the rest are
refused. A request is admitted with a :class:`Permit` and settled with its
:class:`~agentmesh.resilience.failures.CallResult`; a permit from before the last
transition is stale and changes nothing (a slow request that fails after the
breaker opened must not extend the cool-down, nor one from before the cool-down
close it).

Nothing here reads a clock or does I/O: every method takes ``now_ms``, and the
jitter comes from an injected ``random.Random``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from agentmesh.resilience.failures import FAILURE_CODES, CallResult


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerConfig(BaseModel):
    """Parameters of every peer's breaker on one node (the ``breakers:`` section).

    Attributes:
        failure_threshold: consecutive failures that open the circuit.
        cool_down_ms: how long it stays open before probes are let through.
        jitter: the cool-down is stretched by a uniform random fraction in
            ``[0, jitter]``, so callers of one failed peer do not probe in step.
        half_open_probes: requests in flight at once while half-open.
        close_after: probe successes that close the circuit again.
        failure_codes: remote error codes that count as the peer's failure.
        max_peers: breakers kept; beyond it, healthy closed ones are forgotten.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=5, ge=1)
    cool_down_ms: int = Field(default=5_000, ge=1)
    jitter: float = Field(default=0.2, ge=0.0, le=1.0)
    half_open_probes: int = Field(default=1, ge=1)
    close_after: int = Field(default=1, ge=1)
    failure_codes: frozenset[str] = FAILURE_CODES
    max_peers: int = Field(default=10_000, ge=1)

    @property
    def max_cool_down_ms(self) -> int:
        """The longest a circuit stays open: ``cool_down_ms * (1 + jitter)``, rounded up."""
        return self.cool_down_ms + int(self.cool_down_ms * self.jitter) + 1


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to send one request; settle it with :meth:`CircuitBreaker.settle`."""

    generation: int
    probe: bool


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, for audit and counters."""

    before: BreakerState
    after: BreakerState
    at_ms: int
    reason: str


TransitionHook = Callable[[Transition], None]


class CircuitBreaker:
    """The breaker of one peer (see the module docstring).

    Args:
        config: thresholds and timings.
        rng: source of the cool-down jitter (seeded in tests and simulations).
        on_transition: called with every state change.
    """

    __slots__ = (
        "_on_transition",
        "_rng",
        "config",
        "consecutive_failures",
        "generation",
        "opened",
        "probe_successes",
        "probes_in_flight",
        "rejected",
        "retry_at_ms",
        "state",
    )

    def __init__(
        self,
        config: BreakerConfig,
        *,
        rng: random.Random,
        on_transition: TransitionHook | None = None,
    ) -> None:
        self.config = config
        self._rng = rng
        self._on_transition = on_transition
        self.state = BreakerState.CLOSED
        self.generation = 0
        self.consecutive_failures = 0
        self.probes_in_flight = 0
        self.probe_successes = 0
        self.retry_at_ms: int | None = None
        self.opened = 0
        self.rejected = 0

    def state_at(self, now_ms: int) -> BreakerState:
        """The state at ``now_ms`` (an elapsed cool-down turns OPEN into HALF_OPEN)."""
        if (
            self.state is BreakerState.OPEN
            and self.retry_at_ms is not None
            and now_ms >= self.retry_at_ms
        ):
            self._move(BreakerState.HALF_OPEN, now_ms, "cool-down elapsed")
        return self.state

    def admit(self, now_ms: int) -> Permit | None:
        """A permit to send now, or None: the circuit is open (or the probes are out)."""
        state = self.state_at(now_ms)
        if state is BreakerState.CLOSED:
            return Permit(self.generation, probe=False)
        if state is BreakerState.HALF_OPEN and self.probes_in_flight < self.config.half_open_probes:
            self.probes_in_flight += 1
            return Permit(self.generation, probe=True)
        self.rejected += 1
        return None

    def settle(self, permit: Permit, result: CallResult, now_ms: int, code: str = "") -> None:
        """Record how the request sent under ``permit`` ended (``code``: the error's)."""
        if permit.generation != self.generation:
            return  # sent before the last transition: it says nothing about this state
        if permit.probe:
            self.probes_in_flight -= 1
        if result is CallResult.IGNORED:
            return
        if self.state is BreakerState.CLOSED:
            if result is CallResult.ANSWERED:
                self.consecutive_failures = 0
                return
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.config.failure_threshold:
                self._open(now_ms, f"{self.consecutive_failures} consecutive failures ({code})")
        elif self.state is BreakerState.HALF_OPEN:
            if result is CallResult.FAILED:
                self._open(now_ms, f"probe failed ({code})")
                return
            self.probe_successes += 1
            if self.probe_successes >= self.config.close_after:
                self.consecutive_failures = 0
                self._move(BreakerState.CLOSED, now_ms, f"{self.probe_successes} probes answered")

    def _open(self, now_ms: int, reason: str) -> None:
        stretch = 1.0 + self._rng.uniform(0.0, self.config.jitter)
        self.retry_at_ms = now_ms + int(self.config.cool_down_ms * stretch)
        self.opened += 1
        self._move(BreakerState.OPEN, now_ms, reason)

    def _move(self, after: BreakerState, now_ms: int, reason: str) -> None:
        before, self.state = self.state, after
        self.generation += 1
        self.probes_in_flight = 0
        self.probe_successes = 0
        if after is not BreakerState.OPEN:
            self.retry_at_ms = None
        if self._on_transition is not None:
            self._on_transition(Transition(before, after, now_ms, reason))


__all__ = [
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "Permit",
    "Transition",
    "TransitionHook",
]
