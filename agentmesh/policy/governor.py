"""The governor: every check one node applies to a governed action, in one order.

::

    quarantine -> ring capability -> policy decision -> egress (URLs) -> rate limit -> budget

Each refusal raises a typed :class:`PolicyDenied` subclass carrying the DID, the
ring and the rule (or check) that decided, and is audited; nothing is charged to
a rate limit or a budget unless every earlier check allowed. Pure and
synchronous, so message interceptors and tool wrappers share it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from agentmesh import telemetry
from agentmesh.audit import AuditEvent, AuditSink
from agentmesh.policy.budgets import BudgetLedger
from agentmesh.policy.decision import Decision, DecisionRequest
from agentmesh.policy.document import Effect
from agentmesh.policy.egress import EgressGuard
from agentmesh.policy.engine import PolicyEngine
from agentmesh.policy.errors import (
    AgentQuarantined,
    ApprovalRequired,
    PolicyDenied,
    RingDenied,
)
from agentmesh.policy.ratelimit import RateLimiter
from agentmesh.policy.rings import SANDBOX_RING, RingEnforcer
from iatp.clock import Clock, SystemClock

BlockedCheck = Callable[[str], bool]
TrustLookup = Callable[[str], float]
OrgLookup = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class Usage:
    """What a governed call is about to spend (for budgets) and touch (for egress)."""

    tokens: int = 0
    cost: float = 0.0
    urls: Sequence[str] = ()


_NO_USAGE = Usage()
_KINDS = {"allowed": "policy_allowed", "denied": "policy_denied"}
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Governor:
    """Applies quarantine, rings, policy, egress, rate limits and budgets.

    Args:
        engine: the policy engine.
        rings: ring enforcer; when given, the request's ring comes from it and the
            action must be a capability of that ring.
        limiter: token buckets per agent and action.
        budgets: spend per agent and window.
        egress: checks every URL of a tool call.
        blocked: ``did -> bool``, true when the agent is quarantined or revoked.
        trust: ``did -> score`` to fill the request's ``trust``.
        orgs: ``did -> organization DID`` to fill the request's ``org`` when unset.
        audit: refusals (and, with ``audit_allows``, allowed tool calls) go here.
        node: DID recorded in audit events.
        clock: audit timestamps.
        audit_allows: also audit allowed tool calls.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        rings: RingEnforcer | None = None,
        limiter: RateLimiter | None = None,
        budgets: BudgetLedger | None = None,
        egress: EgressGuard | None = None,
        blocked: BlockedCheck | None = None,
        trust: TrustLookup | None = None,
        orgs: OrgLookup | None = None,
        audit: AuditSink | None = None,
        node: str = "",
        clock: Clock | None = None,
        audit_allows: bool = True,
    ) -> None:
        self.engine = engine
        self.rings = rings
        self.limiter = limiter
        self.budgets = budgets
        self.egress = egress
        self.blocked = blocked
        self.trust = trust
        self.orgs = orgs
        self.audit = audit
        self.node = node
        self.clock: Clock = clock or SystemClock()
        self.audit_allows = audit_allows
        # (rule, outcome) -> count; outcome is "allowed" or the refusal's code. Rules
        # are the policy's rule ids, the checks' names (quarantine, ring-N, ...) or
        # "default": bounded by the loaded documents. Read by the metrics endpoint.
        self.decisions: Counter[tuple[str, str]] = Counter()

    def enrich(self, request: DecisionRequest) -> DecisionRequest:
        """Fill the request's ring, trust and org from the enforcer and lookups."""
        did = request.peer
        if did is None:
            return request
        ring = self.rings.ring(did) if self.rings is not None else request.ring
        trust = self.trust(did) if self.trust is not None else request.trust
        org = request.org
        if org is None and self.orgs is not None:
            org = self.orgs(did)
        if ring == request.ring and trust == request.trust and org == request.org:
            return request
        # Positional construction: twice as fast as dataclasses.replace on the hot path.
        return DecisionRequest(
            request.action,
            request.kind,
            request.direction,
            did,
            org,
            ring,
            trust,
            request.resource,
            request.args,
            request.context,
        )

    def tool_request(
        self,
        action: str,
        did: str,
        *,
        org: str | None = None,
        resource: str | None = None,
        args: Mapping[str, Any] = _EMPTY,
        context: Mapping[str, Any] = _EMPTY,
    ) -> DecisionRequest:
        """The enriched request for agent ``did`` calling tool ``action``, built in one step.

        What :meth:`enrich` would make of it; ``@governed`` tools pass it to
        :meth:`authorize` with ``enriched=True``.
        """
        ring = self.rings.ring(did) if self.rings is not None else SANDBOX_RING
        trust = self.trust(did) if self.trust is not None else 0.0
        if org is None and self.orgs is not None:
            org = self.orgs(did)
        return DecisionRequest(
            action, "tool", "outbound", did, org, ring, trust, resource, args, context
        )

    def authorize(
        self,
        request: DecisionRequest,
        usage: Usage | None = None,
        *,
        check_ring: bool = True,
        meter: bool = True,
        record: bool = True,
        enriched: bool = False,
    ) -> Decision:
        """Run every check; return the policy's allow decision.

        ``check_ring=False`` skips the ring capability check and ``meter=False`` the rate
        limits and budgets (outbound messages: the peer is the recipient, not the actor).
        ``record=False`` leaves auditing to the caller (the node audits its own rejections).
        ``enriched=True``: the request comes from :meth:`tool_request` (or :meth:`enrich`).

        Raises:
            AgentQuarantined, RingDenied, PolicyDenied, ApprovalRequired,
            EgressDenied, RateLimited, BudgetExceeded.
        """
        try:
            if not enriched:
                request = self.enrich(request)
            decision = self._authorize(request, usage or _NO_USAGE, check_ring, meter)
        except PolicyDenied as denied:
            self.decisions[(denied.rule or "default", denied.code)] += 1
            if record:
                self._record("denied", denied.code, request, str(denied), denied.rule)
            if telemetry.tracer is not None:
                _annotate(telemetry.tracer, request, denied.code, denied.rule, str(denied))
            raise
        self.decisions[(decision.rule or "default", "allowed")] += 1
        if record and self.audit_allows and request.kind == "tool":
            self._record("allowed", "allowed", request, decision.reason, decision.rule)
        if telemetry.tracer is not None:
            _annotate(telemetry.tracer, request, "allowed", decision.rule, decision.reason)
        return decision

    def _authorize(
        self, request: DecisionRequest, usage: Usage, check_ring: bool, meter: bool
    ) -> Decision:
        did = request.peer
        if did is not None and self.blocked is not None and self.blocked(did):
            raise AgentQuarantined(
                f"{did} is quarantined", did=did, ring=request.ring, rule="quarantine"
            )
        if check_ring and self.rings is not None:
            if did is None:
                raise RingDenied("no agent identity: ring unknown", action=request.action)
            self.rings.require(did, request.ring, request.action)  # enrich() looked it up
        decision = self.engine.decide(request)
        if decision.effect is not Effect.ALLOW:
            error = ApprovalRequired if decision.effect is Effect.REQUIRE_APPROVAL else PolicyDenied
            raise error(
                f"{request.action}: {decision.reason}",
                did=did,
                rule=decision.rule,
                ring=request.ring,
                action=request.action,
            )
        agent = did or "<anonymous>"
        try:
            if self.egress is not None:
                for url in usage.urls:
                    self.egress.check_url(url)
            if meter and self.limiter is not None:
                self.limiter.acquire(agent, request.action)
            if meter and self.budgets is not None:
                self.budgets.charge(agent, request.action, tokens=usage.tokens, cost=usage.cost)
        except PolicyDenied as denied:
            denied.did, denied.ring, denied.action = did, request.ring, request.action
            raise
        return decision

    def record_refusal(self, request: DecisionRequest, denied: PolicyDenied) -> None:
        """Audit a refusal decided before :meth:`authorize` could run (no identity, bad args)."""
        self.decisions[(denied.rule or "default", denied.code)] += 1
        self._record("denied", denied.code, request, str(denied), denied.rule)

    def _record(
        self, kind: str, code: str, request: DecisionRequest, detail: str, rule: str | None
    ) -> None:
        audit = self.audit
        if audit is None:
            return
        audit.append(
            AuditEvent(
                self.clock.now_ms(),
                self.node,
                _KINDS[kind],
                code,
                request.peer,
                None,
                request.action,
                f"{request.kind} {request.direction} ring={request.ring} rule={rule}: {detail}"[
                    :300
                ],
            )
        )


def _annotate(
    tracer: telemetry.Tracer, request: DecisionRequest, code: str, rule: str | None, why: str
) -> None:
    """Put the decision on the current span (a message's receive span, a tool call's span)."""
    span = tracer.current()
    if span is None:
        return
    span.set_attribute("agentmesh.decision", "allow" if code == "allowed" else "deny")
    if rule is not None:
        span.set_attribute("agentmesh.rule", rule)
    span.set_attribute("agentmesh.ring", request.ring)
    span.set_attribute("agentmesh.trust", request.trust)
    if code != "allowed":
        span.refuse(code, why)


__all__ = ["BlockedCheck", "Governor", "OrgLookup", "TrustLookup", "Usage"]
