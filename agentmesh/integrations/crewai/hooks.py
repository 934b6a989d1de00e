"""The crew's tool boundary: CrewAI ``PRE_TOOL_CALL`` / ``POST_TOOL_CALL`` hooks on the governor.

:class:`ToolGovernor` registers one hook pair with CrewAI's interception API
(``crewai.hooks.register_hook``). The pair acts only on tool calls made by this
crew's members (agents are matched by object identity); calls by agents of other
crews in the same process pass untouched, and a call made inside this crew by an
agent that has no mesh identity is refused (``crewai_unknown_member``). So is a
call by a *copy* of a member (same CrewAI ``key`` and the same tool objects, what
``Agent.copy()`` makes), in a copy of the crew: ``Crew.kickoff_for_each``,
``train`` and ``test`` run copies, which would otherwise run every tool ungoverned.

``PRE_TOOL_CALL`` builds a :class:`~agentmesh.policy.DecisionRequest` for the
member (``kind="tool"``, the tool's action, its arguments, its ring and trust)
and asks :meth:`Governor.authorize <agentmesh.policy.Governor.authorize>`:
quarantine, ring capability, policy rule, egress guard, rate limit, budget, in
that order, each refusal audited by the governor. A refusal raises CrewAI's
``HookAborted`` whose reason is the refusal code: CrewAI does not run the tool.

``POST_TOOL_CALL`` then tells the model why (the blocked call's result becomes
``refused by the mesh: <code> (rule <rule>): <reason>``, so it can carry on with
something allowed) and turns the outcome into a trust receipt about the member:
a refusal is a policy violation (except a quarantine or a pending approval), a
failed tool a failure, anything else a success.

CrewAI runs a tool whose pre-call hook raised anything but ``HookAborted`` (it
swallows hook errors: fail-open). So the mesh's hook fails closed itself: an
unexpected error while deciding (an audit sink that cannot write, a broken ring
source, malformed arguments) blocks the call as ``crewai_hook_error``.

The hooks are synchronous and run in CrewAI's thread; the governor is pure and
the receipt is only queued (:class:`~.outcomes.OutcomeReporter`), so a governed
call costs microseconds (``benchmarks/bench_crewai.py``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn, Protocol

from crewai.hooks import (
    HookAborted,
    InterceptionPoint,
    ToolCallHookContext,
    register_hook,
    unregister_hook,
)
from crewai.tools.tool_failure import ToolFailure

from agentmesh.audit import AuditEvent
from agentmesh.integrations.crewai.member import CrewMember, Roster
from agentmesh.policy.decision import DecisionRequest
from agentmesh.policy.errors import PolicyDenied
from agentmesh.policy.governed import ToolSpec
from agentmesh.policy.governor import Governor, Usage
from trust.evidence import Outcome

logger = logging.getLogger(__name__)

UNKNOWN_MEMBER = "crewai_unknown_member"
MESH_CLOSED = "crewai_mesh_closed"
ARGS_CHANGED = "crewai_args_changed"
HOOK_ERROR = "crewai_hook_error"
HOOK_SOURCE = "agentmesh"
#: Refusals that say nothing bad about the agent: no policy-violation receipt.
NOT_MISCONDUCT = frozenset({"quarantined", "revoked", "approval_required", MESH_CLOSED, HOOK_ERROR})
_BLOCKED_PREFIX = "Tool execution blocked by hook"
_FAILURE_PREFIXES = ("Error executing tool", "I encountered an error")


class OutcomeSink(Protocol):
    """Where tool outcomes go (an :class:`~.outcomes.OutcomeReporter`); thread-safe."""

    def report(self, subject: str, outcome: Outcome, action: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ToolDecision:
    """One governed tool call, as the hook saw it (for reports; the audit log has it too)."""

    role: str
    did: str
    tool: str
    action: str
    allowed: bool
    code: str
    rule: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the hook blocked a call (a governor refusal, or the hook's own)."""

    code: str
    rule: str | None
    reason: str

    @classmethod
    def of(cls, denied: PolicyDenied) -> Refusal:
        return cls(denied.code, denied.rule, denied.reason)

    def text(self) -> str:
        """What the model reads instead of the tool's result."""
        rule = f" (rule {self.rule})" if self.rule else ""
        return f"refused by the mesh: {self.code}{rule}: {self.reason}"


@dataclass(slots=True)
class _Call:
    member: CrewMember | None
    action: str
    tool_input_id: int
    arguments: dict[str, Any]
    refusal: Refusal | None = None


def _number(arguments: Mapping[str, Any], name: str | None, action: str) -> float:
    if name is None:
        return 0.0
    value = arguments.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise PolicyDenied(
            f"{action}: argument {name!r} must be a non-negative number (it is budgeted)",
            rule="budget",
            action=action,
        )
    return float(value)


class ToolGovernor:
    """The crew's PRE/POST tool hooks (see the module docstring).

    Args:
        governor: the crew's governor.
        roster: the crew's members.
        crew: the CrewAI crew (calls inside it by unknown agents are refused).
        tools: tool name -> how the policy reads the call (action, resource, URLs,
            tokens, cost); an unlisted tool's action is its (sanitized) name.
        outcomes: receipts go here (``None``: no receipts).
        report_successes: also issue success receipts (the baseline drift needs).
        history: decisions kept in :attr:`decisions`.
    """

    def __init__(
        self,
        governor: Governor,
        roster: Roster,
        *,
        crew: object | None = None,
        tools: Mapping[str, ToolSpec] | None = None,
        outcomes: OutcomeSink | None = None,
        report_successes: bool = True,
        history: int = 1000,
    ) -> None:
        self.governor = governor
        self.roster = roster
        self.crew = crew
        self.tools = dict(tools or {})
        self.outcomes = outcomes
        self.report_successes = report_successes
        self.closed = False
        self.decisions: deque[ToolDecision] = deque(maxlen=history)
        self.refused: Counter[str] = Counter()
        self.results: Counter[str] = Counter()
        self.allowed = 0
        self._local = threading.local()
        self._installed = False
        # Bound once: unregistering needs the very objects that were registered.
        self._before = self.before
        self._after = self.after

    # -- registration ------------------------------------------------------------------------

    def install(self) -> None:
        """Register the hook pair with CrewAI (idempotent)."""
        if not self._installed:
            register_hook(InterceptionPoint.PRE_TOOL_CALL, self._before)
            register_hook(InterceptionPoint.POST_TOOL_CALL, self._after)
            self._installed = True

    def uninstall(self) -> None:
        """Remove the hook pair (idempotent). Call it only once no member can still run."""
        if self._installed:
            unregister_hook(InterceptionPoint.PRE_TOOL_CALL, self._before)
            unregister_hook(InterceptionPoint.POST_TOOL_CALL, self._after)
            self._installed = False

    @property
    def installed(self) -> bool:
        return self._installed

    def current_member(self) -> CrewMember | None:
        """The member whose allowed tool call is running on this thread (for mesh tools)."""
        call: _Call | None = getattr(self._local, "call", None)
        return call.member if call is not None and call.refusal is None else None

    # -- hooks -------------------------------------------------------------------------------

    def before(self, context: ToolCallHookContext) -> None:
        """``PRE_TOOL_CALL``: authorize, or raise ``HookAborted(<refusal code>)``.

        Never raises anything else for a governed call: CrewAI would run the tool.
        """
        try:
            self._decide(context)
        except HookAborted:
            raise
        except Exception as exc:  # fail closed (see the module docstring)
            self._fail_closed(context, exc)

    def _fail_closed(self, context: ToolCallHookContext, exc: Exception) -> NoReturn:
        # The exception's text may quote the arguments: log its type only.
        logger.error(
            "tool call %r refused: the mesh's hook failed (%s)",
            context.tool_name,
            type(exc).__name__,
        )
        call: _Call | None = getattr(self._local, "call", None)
        if call is None or call.tool_input_id != id(context.tool_input):
            agent = context.agent
            member = self.roster.for_agent(agent) if agent is not None else None
            call = _Call(member, context.tool_name, id(context.tool_input), {})
            self._local.call = call
        # Only what cannot fail: whatever failed may be the audit sink or the receipts.
        call.refusal = Refusal(
            HOOK_ERROR, None, f"the mesh could not decide ({type(exc).__name__})"
        )
        self.refused[HOOK_ERROR] += 1
        raise HookAborted(HOOK_ERROR, source=HOOK_SOURCE)

    def _decide(self, context: ToolCallHookContext) -> None:
        agent = context.agent
        member = self.roster.for_agent(agent) if agent is not None else None
        if member is None:
            if self.crew is not None and context.crew is self.crew:
                self._refuse_unknown(context, "of this crew has no mesh identity")
            original = self.roster.copied_from(agent) if agent is not None else None
            if original is None:
                return None  # another crew's agent: not governed here
            self._refuse_unknown(
                context,
                f"is a copy of member {original.role!r} (Crew.copy, kickoff_for_each): "
                "copies are not on the mesh, run the crew with MeshCrew.kickoff",
            )
        assert member is not None
        spec = self.tools.get(context.tool_name)
        action = spec.action if spec is not None else context.tool_name
        call = _Call(member, action, id(context.tool_input), {})
        self._local.call = call  # first: a failure below is refused as this call
        arguments = call.arguments = dict(context.tool_input)
        if self.closed:
            self._refuse(
                call, context.tool_name, Refusal(MESH_CLOSED, None, "the crew left the mesh")
            )
        request = DecisionRequest(
            action,
            kind="tool",
            direction="outbound",
            peer=member.did,
            args=MappingProxyType(arguments),
            context=MappingProxyType({"role": member.role}),
        )
        try:
            request, usage = self._read(request, spec, arguments)
            decision = self.governor.authorize(request, usage)
        except PolicyDenied as denied:
            self._refuse(call, context.tool_name, Refusal.of(denied))
        self.allowed += 1
        self.decisions.append(
            ToolDecision(
                member.role,
                member.did,
                context.tool_name,
                action,
                True,
                "allowed",
                decision.rule,
                decision.reason,
            )
        )
        return None

    def _refuse(self, call: _Call, tool: str, refusal: Refusal) -> NoReturn:
        call.refusal = refusal
        self.refused[refusal.code] += 1
        member = call.member
        if member is not None:
            self.decisions.append(
                ToolDecision(
                    member.role,
                    member.did,
                    tool,
                    call.action,
                    False,
                    refusal.code,
                    refusal.rule,
                    refusal.reason,
                )
            )
            if self.outcomes is not None and refusal.code not in NOT_MISCONDUCT:
                self.outcomes.report(member.did, Outcome.POLICY_VIOLATION, call.action)
        raise HookAborted(refusal.code, source=HOOK_SOURCE)

    def _refuse_unknown(self, context: ToolCallHookContext, why: str) -> NoReturn:
        """A call by an agent with no mesh identity (in this crew, or a copy): refused, audited."""
        role = str(getattr(context.agent, "role", None) or "<no agent>")
        call = _Call(None, context.tool_name, id(context.tool_input), {})
        self._local.call = call
        reason = f"agent {role!r} {why}"
        self._audit(UNKNOWN_MEMBER, None, context.tool_name, reason)
        self._refuse(call, context.tool_name, Refusal(UNKNOWN_MEMBER, "identity", reason))

    def _read(
        self, request: DecisionRequest, spec: ToolSpec | None, arguments: dict[str, Any]
    ) -> tuple[DecisionRequest, Usage]:
        if spec is None:
            return request, Usage()
        try:
            tokens = _number(arguments, spec.tokens_arg, spec.action)
            cost = _number(arguments, spec.cost_arg, spec.action)
        except PolicyDenied as denied:
            denied.did = request.peer
            self.governor.record_refusal(request, denied)
            raise
        urls = tuple(str(arguments[name]) for name in spec.url_args if arguments.get(name))
        resource = arguments.get(spec.resource_arg) if spec.resource_arg else None
        if resource is not None:
            request = DecisionRequest(
                request.action,
                kind="tool",
                direction="outbound",
                peer=request.peer,
                resource=str(resource),
                args=request.args,
                context=request.context,
            )
        return request, Usage(tokens=int(tokens), cost=cost, urls=urls)

    def after(self, context: ToolCallHookContext) -> str | None:
        """``POST_TOOL_CALL``: explain a refusal to the model; report the outcome."""
        call: _Call | None = getattr(self._local, "call", None)
        if call is None or call.tool_input_id != id(context.tool_input):
            return None  # not a call this governor decided
        self._local.call = None
        if call.refusal is not None:
            return call.refusal.text()
        result = context.tool_result or ""
        if result.startswith(_BLOCKED_PREFIX):
            return None  # another hook blocked it after we allowed it
        member = call.member
        assert member is not None
        if context.tool_input != call.arguments:
            self.refused[ARGS_CHANGED] += 1
            self._audit(
                ARGS_CHANGED,
                member.did,
                call.action,
                "a hook registered after the mesh's changed the arguments it allowed",
            )
        failed = isinstance(context.raw_tool_result, ToolFailure) or result.startswith(
            _FAILURE_PREFIXES
        )
        self.results["failure" if failed else "success"] += 1
        if self.outcomes is not None and (failed or self.report_successes):
            outcome = Outcome.FAILURE if failed else Outcome.SUCCESS
            self.outcomes.report(member.did, outcome, call.action)
        return None

    def _audit(self, code: str, did: str | None, action: str, detail: str) -> None:
        audit = self.governor.audit
        if audit is not None:
            audit.append(
                AuditEvent(
                    at_ms=self.governor.clock.now_ms(),
                    node=self.governor.node,
                    kind="policy_denied" if code == UNKNOWN_MEMBER else "policy_warning",
                    code=code,
                    peer=did,
                    subject=action,
                    detail=detail[:300],
                )
            )


__all__ = [
    "ARGS_CHANGED",
    "HOOK_ERROR",
    "MESH_CLOSED",
    "NOT_MISCONDUCT",
    "UNKNOWN_MEMBER",
    "OutcomeSink",
    "Refusal",
    "ToolDecision",
    "ToolGovernor",
]
