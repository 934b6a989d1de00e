"""Adapters from the real directory, revocation list, rings, trust and policy to the saga seams.

* :class:`DirectoryFinder` — ``agentmesh.directory.Directory.find`` as a
  :class:`SubstituteFinder` (live, non-revoked, non-quarantined cards; optional rank,
  e.g. ``TrustEngine.score``).
* :class:`RevocationAlarm` — a ``RevocationList``'s change listener as an
  :class:`InFlightAlarm`: a quarantine or revocation abandons in-flight steps.
  (``RevocationList`` itself is a :class:`BlockCheck` for :class:`EligibilityGuard`.)
* :class:`KillSwitchAlarm` — ``KillSwitch.on_quarantine`` as an :class:`InFlightAlarm`
  (the broadcast path: milliseconds); ``KillSwitch`` is a :class:`BlockCheck` too.
* :func:`policy_step_check` — ``PolicyEngine`` decisions as an
  :class:`EligibilityGuard` policy: the step's action, as an outbound message to the
  candidate agent, with the agent's ring and trust.

``RingEnforcer`` / ``StaticRings`` and ``TrustEngine`` already have the shapes of
:class:`RingSource` and :class:`TrustSource`.
"""

from __future__ import annotations

from collections.abc import Callable

from agentmesh.directory.directory import Directory
from agentmesh.directory.revocations import RevocationChange, RevocationList
from agentmesh.node.interceptors import ALLOW, Verdict
from agentmesh.policy.engine import PolicyEngine
from agentmesh.policy.killswitch import KillSwitch
from agentmesh.saga.definition import SagaStep
from agentmesh.saga.guard import AlarmCallback, RingSource, StepPolicy, TrustSource
from registry.revocation import BLOCKING_KINDS, RevocationEntry


class DirectoryFinder:
    """Candidates for a capability from the directory's local cache, best first."""

    def __init__(
        self,
        directory: Directory,
        *,
        rank: Callable[[str], float] | None = None,
        version: str | None = None,
    ) -> None:
        self.directory = directory
        self.rank = rank
        self.version = version

    async def candidates(self, capability: str) -> list[str]:
        cards = self.directory.find(capability, version=self.version, rank=self.rank)
        return [card.did for card in cards]


class RevocationAlarm:
    """Turns revocation-list changes into in-flight alarms (quarantined / revoked)."""

    def __init__(self, revocations: RevocationList) -> None:
        self.revocations = revocations

    def add_listener(self, callback: AlarmCallback) -> None:
        def on_change(change: RevocationChange) -> None:
            if change.status in BLOCKING_KINDS:
                callback(change.did, str(change.status))

        self.revocations.add_listener(on_change)


class KillSwitchAlarm:
    """Turns kill-switch quarantine orders into in-flight alarms."""

    def __init__(self, switch: KillSwitch) -> None:
        self.switch = switch

    def add_listener(self, callback: AlarmCallback) -> None:
        def on_quarantine(did: str, order: RevocationEntry) -> None:
            callback(did, "quarantined")

        self.switch.on_quarantine(on_quarantine)


def policy_step_check(
    engine: PolicyEngine,
    *,
    rings: RingSource | None = None,
    trust: TrustSource | None = None,
) -> StepPolicy:
    """A :class:`StepPolicy` asking ``engine`` whether the step's action may go to the agent."""

    def check(did: str, step: SagaStep) -> Verdict:
        decision = engine.check(
            step.request.action,
            kind="message",
            direction="outbound",
            peer=did,
            ring=rings.ring(did) if rings is not None else 3,
            trust=trust.score(did) if trust is not None else 0.0,
            context={"saga_step": step.name, "capability": step.capability or ""},
        )
        if decision.allowed:
            return ALLOW
        return Verdict.deny(decision.code, decision.reason)

    return check


__all__ = ["DirectoryFinder", "KillSwitchAlarm", "RevocationAlarm", "policy_step_check"]
