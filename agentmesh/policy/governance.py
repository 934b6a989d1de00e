"""Build a node's whole governance stack from one policy document, and reload it live.

The document's ``rules`` feed the :class:`PolicyEngine`; its ``rings`` section
gives the ring capabilities and policy-assigned rings (caps on top of the trust
engine's ring); ``rate_limits`` and ``budgets`` build the limiter and ledger.
:meth:`Governance.reload` swaps all of them between two decisions: no message
is dropped, and a ring change in the new document applies from the next message.
Rate-limit buckets and budget spend carry over a reload for every entry that still
exists (same action patterns; for a budget also the same window), with the new
rates and limits applied to them: a reload never hands out fresh tokens or budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from agentmesh.audit import AuditSink
from agentmesh.policy.budgets import Budget, BudgetLedger
from agentmesh.policy.egress import EgressGuard
from agentmesh.policy.engine import CompiledPolicy, PolicyEngine
from agentmesh.policy.governor import BlockedCheck, Governor
from agentmesh.policy.ratelimit import RateLimit, RateLimiter
from agentmesh.policy.rings import SANDBOX_RING, RingEnforcer, RingSource
from iatp.clock import Clock, SystemClock


class PolicyRings:
    """The ``rings.agents`` section as a :class:`RingSource`; unlisted agents get ``default``."""

    def __init__(self) -> None:
        self._agents: Mapping[str, int] = {}
        self.default = SANDBOX_RING

    def update(self, policy: CompiledPolicy) -> None:
        section = policy.document.rings
        self._agents = dict(section.agents) if section is not None else {}
        self.default = section.default if section is not None else SANDBOX_RING

    def ring(self, did: str) -> int:
        return self._agents.get(did, self.default)


def _limiter(policy: CompiledPolicy) -> RateLimiter | None:
    limits = [
        RateLimit(tuple(m.actions), rate=m.rate, burst=m.burst) for m in policy.document.rate_limits
    ]
    return RateLimiter(limits) if limits else None


def _ledger(policy: CompiledPolicy, clock: Clock) -> BudgetLedger | None:
    budgets = [
        Budget(
            tuple(m.actions),
            window_ms=int(m.window_s * 1000),
            calls=m.calls,
            tokens=m.tokens,
            cost=m.cost,
        )
        for m in policy.document.budgets
    ]
    return BudgetLedger(budgets, clock=clock) if budgets else None


class Governance:
    """Engine, rings, limits and budgets built from one document, reloadable as one.

    Args:
        policy: the compiled document.
        ring_sources: extra ring sources (the trust engine); the policy's own
            ``rings.agents`` is always one of the sources when the section exists.
        blocked: quarantine check (the kill switch).
        egress: the egress guard for tool calls.
        audit, node, clock: passed to the governor and the ring enforcer.
    """

    def __init__(
        self,
        policy: CompiledPolicy,
        *,
        ring_sources: Sequence[RingSource] = (),
        authorities: Sequence[str] = (),
        blocked: BlockedCheck | None = None,
        egress: EgressGuard | None = None,
        audit: AuditSink | None = None,
        node: str = "",
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.policy_rings = PolicyRings()
        self.policy_rings.update(policy)
        sources: list[RingSource] = [self.policy_rings, *ring_sources]
        self.rings = RingEnforcer(
            sources, {}, authorities=authorities, clock=self.clock, audit=audit, node=node
        )
        self.engine = PolicyEngine(policy)
        self.governor = Governor(
            self.engine,
            rings=None,
            egress=egress,
            blocked=blocked,
            audit=audit,
            node=node,
            clock=self.clock,
        )
        self._apply(policy)

    @classmethod
    def from_file(cls, path: str | Path, **options: object) -> Governance:
        """Raises: PolicyLoadError."""
        return cls(CompiledPolicy.from_file(path), **options)  # type: ignore[arg-type]

    def _apply(self, policy: CompiledPolicy) -> None:
        section = policy.document.rings
        self.policy_rings.update(policy)
        if section is not None:
            self.rings.set_capabilities(section.capabilities)
        self.governor.rings = self.rings if section is not None else None
        limiter, ledger = _limiter(policy), _ledger(policy, self.clock)
        if limiter is not None and self.governor.limiter is not None:
            limiter.adopt(self.governor.limiter)
        if ledger is not None and self.governor.budgets is not None:
            ledger.adopt(self.governor.budgets)
        self.governor.limiter = limiter
        self.governor.budgets = ledger

    def reload(self, policy: CompiledPolicy) -> None:
        """Switch everything to ``policy`` (already compiled, so it cannot fail half-way)."""
        self.engine.reload(policy)
        self._apply(policy)

    def reload_file(self, path: str | Path) -> CompiledPolicy:
        """Raises: PolicyLoadError (nothing changes)."""
        policy = CompiledPolicy.from_file(path)
        self.reload(policy)
        return policy


__all__ = ["Governance", "PolicyRings"]
