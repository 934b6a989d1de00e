"""Who may run a step: the seams to the directory, revocations, rings, trust and policy.

The coordinator asks a :class:`StepGuard` before every attempt (and before every
handoff candidate) and a :class:`SubstituteFinder` for candidates. Both are small
protocols, so the real directory, revocation list, ring enforcer, trust engine and
policy engine plug in through thin adapters (see :class:`EligibilityGuard`).
:class:`InFlightAlarm` is how a kill switch or a revocation list tells the
coordinator *while a request is in flight* that its agent must be abandoned.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from agentmesh.node.interceptors import ALLOW, Verdict
from agentmesh.saga.definition import SagaStep

AlarmCallback = Callable[[str, str], None]
"""``callback(did, reason)``: stop using ``did`` now (quarantined, revoked, ...)."""


@runtime_checkable
class StepGuard(Protocol):
    async def check(self, did: str, step: SagaStep, *, compensation: bool = False) -> Verdict:
        """May ``did`` run ``step`` (or its compensation) now? Never raises for a no."""
        ...


@runtime_checkable
class SubstituteFinder(Protocol):
    async def candidates(self, capability: str) -> list[str]:
        """DIDs offering ``capability``, best first (e.g. ranked by trust)."""
        ...


@runtime_checkable
class InFlightAlarm(Protocol):
    def add_listener(self, callback: AlarmCallback) -> None: ...


@runtime_checkable
class BlockCheck(Protocol):
    """Revocation list, quarantine board or kill switch: ``is_blocked(did)``."""

    def is_blocked(self, did: str) -> bool: ...


@runtime_checkable
class RingSource(Protocol):
    """Same shape as ``agentmesh.policy.rings.RingSource``: lower is more privileged."""

    def ring(self, did: str) -> int: ...


@runtime_checkable
class TrustSource(Protocol):
    def score(self, did: str) -> float: ...


StepPolicy = Callable[[str, SagaStep], Verdict | Awaitable[Verdict]]
"""A policy decision for (agent DID, step): allow or deny with a code."""


class AllowAllGuard:
    """Lets everybody run everything (tests and the embedded quick start only)."""

    async def check(self, did: str, step: SagaStep, *, compensation: bool = False) -> Verdict:
        return ALLOW


class EligibilityGuard:
    """The standard guard: not blocked, ring low enough, trusted enough, policy allows.

    Compensations are only refused for a *blocked* agent: an agent demoted since
    the forward step still holds the effect and must be allowed to undo it.

    Args:
        blocked: one or more block checks (revocations, quarantine, kill switch).
        rings: the ring of each DID; the step's ``required_ring`` is the highest allowed.
        trust: trust scores; ``min_trust`` is the floor for running a step.
        policy: an extra per-step decision (e.g. over ``PolicyEngine``).
    """

    def __init__(
        self,
        *,
        blocked: Iterable[BlockCheck] = (),
        rings: RingSource | None = None,
        trust: TrustSource | None = None,
        min_trust: float = 0.0,
        policy: StepPolicy | None = None,
    ) -> None:
        self.blocked = list(blocked)
        self.rings = rings
        self.trust = trust
        self.min_trust = min_trust
        self.policy = policy

    async def check(self, did: str, step: SagaStep, *, compensation: bool = False) -> Verdict:
        for check in self.blocked:
            if check.is_blocked(did):
                return Verdict.deny("agent_blocked", "quarantined or revoked")
        if compensation:
            return ALLOW
        if self.rings is not None:
            ring = self.rings.ring(did)
            if ring > step.required_ring:
                return Verdict.deny(
                    "ring_too_low", f"agent is in ring {ring}, step needs {step.required_ring}"
                )
        if self.trust is not None and self.trust.score(did) < self.min_trust:
            return Verdict.deny("trust_too_low", f"trust below {self.min_trust}")
        if self.policy is not None:
            verdict = self.policy(did, step)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not verdict.allowed:
                return verdict
        return ALLOW


class StaticDirectory:
    """A fixed capability → DIDs map (tests, examples, or a pinned deployment)."""

    def __init__(self, capabilities: Mapping[str, Sequence[str]] | None = None) -> None:
        self._capabilities = {k: list(v) for k, v in (capabilities or {}).items()}

    def add(self, capability: str, did: str) -> None:
        self._capabilities.setdefault(capability, []).append(did)

    async def candidates(self, capability: str) -> list[str]:
        return list(self._capabilities.get(capability, []))


class StaticBlockList:
    """An in-process block list that also raises in-flight alarms."""

    def __init__(self) -> None:
        self._blocked: dict[str, str] = {}
        self._listeners: list[AlarmCallback] = []

    def is_blocked(self, did: str) -> bool:
        return did in self._blocked

    def add_listener(self, callback: AlarmCallback) -> None:
        self._listeners.append(callback)

    def block(self, did: str, reason: str = "quarantined") -> None:
        self._blocked[did] = reason
        for callback in list(self._listeners):
            callback(did, reason)


__all__ = [
    "AlarmCallback",
    "AllowAllGuard",
    "BlockCheck",
    "EligibilityGuard",
    "InFlightAlarm",
    "RingSource",
    "StaticBlockList",
    "StaticDirectory",
    "StepGuard",
    "StepPolicy",
    "SubstituteFinder",
    "TrustSource",
]
