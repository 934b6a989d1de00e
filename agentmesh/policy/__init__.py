"""Governance: the policy engine, rings, rate limits, budgets, egress guard and tool wrapper.

The document model (:mod:`~agentmesh.policy.document`), the compiler and the
engine are pure (no asyncio, no I/O beyond reading a policy file). The node
plugs them in through :class:`~agentmesh.policy.interceptor.PolicyInterceptor`;
tools through :func:`~agentmesh.policy.governed.governed`. The policy language
is documented in ``docs/policy.md``.
"""

from agentmesh.policy.budgets import Budget, BudgetLedger
from agentmesh.policy.decision import Decision, DecisionRequest
from agentmesh.policy.document import Combining, Effect, PolicyDocument
from agentmesh.policy.egress import EgressGuard, EgressTarget
from agentmesh.policy.engine import CompiledPolicy, PolicyEngine
from agentmesh.policy.errors import (
    AgentQuarantined,
    ApprovalRequired,
    BudgetExceeded,
    EgressDenied,
    ElevationError,
    PolicyDenied,
    PolicyError,
    PolicyEvaluationError,
    PolicyLoadError,
    QuarantineOrderError,
    RateLimited,
    RingDenied,
)
from agentmesh.policy.governed import AgentContext, acting_as, govern, governed
from agentmesh.policy.governor import Governor, Usage
from agentmesh.policy.interceptor import PolicyInterceptor
from agentmesh.policy.ratelimit import RateLimit, RateLimiter
from agentmesh.policy.rings import (
    ElevationGrant,
    RingEnforcer,
    RingSource,
    StaticRings,
    sign_elevation,
)

__all__ = [
    "AgentContext",
    "AgentQuarantined",
    "ApprovalRequired",
    "Budget",
    "BudgetExceeded",
    "BudgetLedger",
    "Combining",
    "CompiledPolicy",
    "Decision",
    "DecisionRequest",
    "Effect",
    "EgressDenied",
    "EgressGuard",
    "EgressTarget",
    "ElevationError",
    "ElevationGrant",
    "Governor",
    "PolicyDenied",
    "PolicyDocument",
    "PolicyEngine",
    "PolicyError",
    "PolicyEvaluationError",
    "PolicyInterceptor",
    "PolicyLoadError",
    "QuarantineOrderError",
    "RateLimit",
    "RateLimited",
    "RateLimiter",
    "RingDenied",
    "RingEnforcer",
    "RingSource",
    "StaticRings",
    "Usage",
    "acting_as",
    "govern",
    "governed",
    "sign_elevation",
]
