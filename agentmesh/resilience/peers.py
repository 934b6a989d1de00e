"""Per-peer circuit breakers around ``node.request``.

Install with ``PeerBreakers(config).install(node)``: the node then calls
:meth:`PeerBreakers.call` around every request (``node.breakers``; the default
None costs one None check). A request to a peer whose circuit is open fails at
once with :class:`~agentmesh.errors.CircuitOpen`, without a message sent; a
``circuit_open`` reply from the peer (a breaker further down the chain is open)
becomes a :class:`CircuitOpen` too, one hop deeper. Which outcomes count against
the peer is decided by :func:`~agentmesh.resilience.failures.classify`.

Every transition is audited (kind ``circuit``, code ``open`` / ``half_open`` /
``closed``, ``peer`` the breaker's peer) and counted in :attr:`PeerBreakers.transitions`.
:meth:`PeerBreakers.snapshot` is the stable read for metrics and dashboards::

    BreakerSnapshot(peer, state, consecutive_failures, probes_in_flight,
                    retry_at_ms, opened, rejected)

``state`` is ``"closed"``, ``"open"`` or ``"half_open"``; ``opened`` counts the
times the circuit opened and ``rejected`` the requests refused without being sent.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from agentmesh.audit import AuditEvent, AuditSink, MemoryAuditSink
from agentmesh.errors import CircuitOpen, RemoteError
from agentmesh.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker, Transition
from agentmesh.resilience.failures import (
    CallResult,
    attribute,
    classify,
    note_failure,
    relayed_circuit_open,
)
from iatp.clock import Clock, SystemClock

if TYPE_CHECKING:
    from agentmesh.node.node import MeshNode

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """One peer's breaker, as metrics and dashboards read it (see the module docstring)."""

    peer: str
    state: str
    consecutive_failures: int
    probes_in_flight: int
    retry_at_ms: int | None
    opened: int
    rejected: int


class PeerBreakers:
    """A circuit breaker per peer, for one node (a ``RequestGuard`` of ``agentmesh.node``).

    Args:
        config: parameters shared by every peer's breaker.
        clock: time of transitions and cool-downs (default: the node's, at install).
        rng: jitter of the cool-downs (seed it for reproducible runs).
        audit: where transitions are audited (default: the node's, at install).
        node: DID recorded in audit events (default: the node's, at install).
    """

    def __init__(
        self,
        config: BreakerConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        audit: AuditSink | None = None,
        node: str = "",
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._audit = audit
        self.node = node
        self.transitions: Counter[str] = Counter()
        self._breakers: dict[str, CircuitBreaker] = {}

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = SystemClock()
        return self._clock

    @property
    def audit(self) -> AuditSink:
        if self._audit is None:
            self._audit = MemoryAuditSink()
        return self._audit

    def install(self, node: MeshNode) -> None:
        """Guard ``node``'s requests; adopt its clock, audit sink and DID unless given."""
        if self._clock is None:
            self._clock = node.clock
        if self._audit is None:
            self._audit = node.audit
        if not self.node:
            self.node = node.did
        node.breakers = self

    # -- the guard ---------------------------------------------------------------------------

    async def call(self, peer: str, send: Callable[[], Awaitable[T]]) -> T:
        """Run ``send`` (a request to ``peer``) unless the circuit is open; record the outcome.

        Raises:
            CircuitOpen: the circuit to ``peer`` is open (nothing was sent), or ``peer``
                answered ``circuit_open``.
            Whatever ``send`` raises otherwise.
        """
        breaker = self._breaker(peer)
        permit = breaker.admit(self.clock.now_ms())
        if permit is None:
            refused = CircuitOpen(
                f"the circuit to {peer} is {breaker.state.value}: failed fast",
                peer=peer,
                retry_at_ms=breaker.retry_at_ms,
            )
            note_failure(attribute(peer, refused))
            raise refused
        try:
            reply = await send()
        except BaseException as exc:
            breaker.settle(
                permit,
                classify(exc, failure_codes=self.config.failure_codes),
                self.clock.now_ms(),
                _code(exc),
            )
            if isinstance(exc, RemoteError) and exc.remote_code == CircuitOpen.code:
                relayed = relayed_circuit_open(peer, exc)
                note_failure(attribute(peer, relayed))
                raise relayed from exc
            note_failure(attribute(peer, exc))
            raise
        breaker.settle(permit, CallResult.ANSWERED, self.clock.now_ms())
        note_failure(None)
        return reply

    # -- reads -------------------------------------------------------------------------------

    def state(self, peer: str) -> BreakerState:
        """The circuit's state for ``peer`` now (CLOSED for a peer never failed)."""
        breaker = self._breakers.get(peer)
        if breaker is None:
            return BreakerState.CLOSED
        return breaker.state_at(self.clock.now_ms())

    def snapshot(self) -> list[BreakerSnapshot]:
        """Every known peer's breaker, sorted by peer (states brought up to now)."""
        now = self.clock.now_ms()
        return [
            BreakerSnapshot(
                peer=peer,
                state=breaker.state_at(now).value,
                consecutive_failures=breaker.consecutive_failures,
                probes_in_flight=breaker.probes_in_flight,
                retry_at_ms=breaker.retry_at_ms,
                opened=breaker.opened,
                rejected=breaker.rejected,
            )
            for peer, breaker in sorted(self._breakers.items())
        ]

    # -- internals ---------------------------------------------------------------------------

    def _breaker(self, peer: str) -> CircuitBreaker:
        breaker = self._breakers.get(peer)
        if breaker is None:
            if len(self._breakers) >= self.config.max_peers:
                self._forget_one_healthy()
            breaker = CircuitBreaker(
                self.config, rng=self._rng, on_transition=self._transitioned(peer)
            )
            self._breakers[peer] = breaker
        return breaker

    def _forget_one_healthy(self) -> None:
        for peer, breaker in self._breakers.items():
            if (
                breaker.state is BreakerState.CLOSED
                and breaker.consecutive_failures == 0
                and breaker.probes_in_flight == 0
            ):
                del self._breakers[peer]
                return
        # Every breaker remembers a failure: keep them all rather than forget an open one.

    def _transitioned(self, peer: str) -> Callable[[Transition], None]:
        def record(transition: Transition) -> None:
            self.transitions[transition.after.value] += 1
            self.audit.append(
                AuditEvent(
                    at_ms=transition.at_ms,
                    node=self.node,
                    kind="circuit",
                    code=transition.after.value,
                    peer=peer,
                    detail=f"{transition.before.value} -> {transition.after.value}: "
                    f"{transition.reason}"[:300],
                )
            )

        return record


def _code(error: BaseException) -> str:
    if isinstance(error, RemoteError):
        return error.remote_code
    code = getattr(error, "code", None)
    return code if isinstance(code, str) else type(error).__name__


__all__ = ["BreakerSnapshot", "PeerBreakers"]
