"""What the governance act of ``agentmesh demo`` did (:mod:`agentmesh.demo.governance`).

Kept apart from the act so that tests and the CLI read outcomes, not narration.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Attempt:
    """One request or tool call the treasury decided."""

    agent: str
    action: str
    outcome: str  # "allowed" or the refusal code
    rule: str | None = None
    ring: int | None = None


@dataclass
class GovernanceReport:
    """What the governance act did, for tests and the CLI's exit code."""

    cards: int = 0
    receipts: int = 0
    ranking: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    rings_before: dict[str, int] = field(default_factory=dict)
    rings_after: dict[str, int] = field(default_factory=dict)
    engines_agree: bool = False
    drifted: str | None = None
    bad_deliveries: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    ranking_after: list[str] = field(default_factory=list)
    treasury_rejected: dict[str, int] = field(default_factory=dict)
    treasury_audited: dict[str, int] = field(default_factory=dict)

    def outcome(self, agent: str, action: str, index: int = -1) -> str | None:
        """The outcome of ``agent``'s ``index``-th ``action`` (the last by default)."""
        found = [a for a in self.attempts if a.agent == agent and a.action == action]
        return found[index].outcome if found else None

    def rule(self, agent: str, action: str) -> str | None:
        """The rule that decided ``agent``'s last ``action``."""
        found = [a for a in self.attempts if a.agent == agent and a.action == action]
        return found[-1].rule if found else None

    @property
    def ok(self) -> bool:
        return (
            self.drifted == "researcher"
            and self.rings_before.get("researcher") == 2
            and self.rings_after.get("researcher") == 3
            and self.outcome("researcher", "payments.refund", 0) == "allowed"
            and self.outcome("researcher", "payments.refund") == "policy_denied"
            and self.rule("researcher", "payments.refund") == "sandbox-no-payments"
            and self.outcome("analyst", "payments.refund") == "allowed"
            and self.outcome("analyst", "payments.transfer", 0) == "allowed"
            and self.outcome("analyst", "payments.transfer") == "policy_denied"
            and self.outcome("analyst", "web.fetch") == "egress_denied"
            and self.ranking[:1] == ["researcher"]
            and self.ranking_after == ["analyst"]
            and self.engines_agree
        )


__all__ = ["Attempt", "GovernanceReport"]
