"""Errors of the governance layer (policy, rings, rate limits, budgets, egress, kill switch).

Every class has a stable ``code``; denials carry the fields a caller needs to
understand why (``did``, ``rule``, ``ring``, ``action``)::

    AgentMeshError
    └── MeshError
        └── PolicyError                       code "policy_error"
            ├── PolicyLoadError               code "policy_load"       (file, line, rule, reason)
            ├── PolicyEvaluationError         code "policy_evaluation" (an evaluation bug; denies)
            ├── ElevationError                code "elevation_refused"  (not an authority, ...)
            ├── QuarantineOrderError          code "quarantine_order"   (bad or unsigned order)
            └── PolicyDenied                  code "policy_denied"      (did, rule, ring, action)
                ├── ApprovalRequired          code "approval_required"
                ├── RingDenied                code "ring_denied"
                ├── RateLimited               code "rate_limited"       (retry_after_s)
                ├── BudgetExceeded            code "budget_exceeded"
                ├── EgressDenied              code "egress_denied"      (host, address)
                └── AgentQuarantined          code "quarantined"
"""

from __future__ import annotations

from agentmesh.errors import MeshError


class PolicyError(MeshError):
    """Root of the governance family."""

    code = "policy_error"


class PolicyLoadError(PolicyError):
    """A policy document failed to load; names the file, the rule and the reason."""

    code = "policy_load"

    def __init__(
        self,
        reason: str,
        *,
        file: str = "<memory>",
        rule: str | None = None,
        line: int | None = None,
    ) -> None:
        where = file if line is None else f"{file}:{line}"
        if rule is not None:
            where += f": rule {rule!r}"
        super().__init__(f"{where}: {reason}")
        self.file = file
        self.rule = rule
        self.line = line
        self.reason = reason

    def at_line(self, line: int | None) -> PolicyLoadError:
        """The same error, located at ``line`` of the file (1-based)."""
        return PolicyLoadError(self.reason, file=self.file, rule=self.rule, line=line)


class PolicyEvaluationError(PolicyError):
    """Evaluation itself failed; the engine turns this into a deny (fail closed)."""

    code = "policy_evaluation"


class ElevationError(PolicyError):
    """A temporary ring elevation was refused (unknown authority, bad ring, bad expiry)."""

    code = "elevation_refused"


class QuarantineOrderError(PolicyError):
    """A quarantine or release order is malformed, unsigned or not from an authority."""

    code = "quarantine_order"


class PolicyDenied(PolicyError):
    """A governed action was refused. ``rule`` is the rule (or check) that decided."""

    code = "policy_denied"

    def __init__(
        self,
        reason: str,
        *,
        did: str | None = None,
        rule: str | None = None,
        ring: int | None = None,
        action: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.did = did
        self.rule = rule
        self.ring = ring
        self.action = action


class ApprovalRequired(PolicyDenied):
    """The matching rule's effect is ``require_approval``: a human or authority must approve."""

    code = "approval_required"


class RingDenied(PolicyDenied):
    """The agent's ring does not hold the capability the action needs."""

    code = "ring_denied"


class RateLimited(PolicyDenied):
    """The agent's token bucket for this action is empty; retry after ``retry_after_s``."""

    code = "rate_limited"

    def __init__(self, reason: str, *, retry_after_s: float = 0.0, **fields: object) -> None:
        super().__init__(reason, **fields)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s


class BudgetExceeded(PolicyDenied):
    """The agent spent its calls, tokens or cost for the current window."""

    code = "budget_exceeded"


class EgressDenied(PolicyDenied):
    """A URL or host resolves to a forbidden address (metadata, link-local, private)."""

    code = "egress_denied"

    def __init__(
        self, reason: str, *, host: str = "", address: str | None = None, **fields: object
    ) -> None:
        super().__init__(reason, **fields)  # type: ignore[arg-type]
        self.host = host
        self.address = address


class AgentQuarantined(PolicyDenied):
    """The agent is under a signed quarantine order: nothing is routed to or from it."""

    code = "quarantined"


__all__ = [
    "AgentQuarantined",
    "ApprovalRequired",
    "BudgetExceeded",
    "EgressDenied",
    "ElevationError",
    "PolicyDenied",
    "PolicyError",
    "PolicyEvaluationError",
    "PolicyLoadError",
    "QuarantineOrderError",
    "RateLimited",
    "RingDenied",
]
