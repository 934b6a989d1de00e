"""Hand a task to an agent of another crew or process, found by capability, ranked by trust.

:class:`MeshDelegationTool` is a CrewAI tool (``delegate_to_mesh``) any member can
be given. Its call is governed like every other tool call; once allowed, the
:class:`Delegator` (on the mesh's event loop) looks the capability up in the
directory ranked by the crew's trust engine (``Directory.find(rank=engine.score)``),
skips this crew's own members, quarantined or revoked agents, agents whose
behaviour drifted and agents above ``worst_ring``, and sends the best one a signed
``crewai.task`` request from the calling member's own identity.

Every attempt ends in a signed trust receipt about the agent asked (the crew's
identity observes): a valid answer is a success, an answer the crew's validator
rejects (or an error reply) a failure, no answer a timeout. When an attempt fails
the task goes to the next candidate (``max_attempts`` in all). When the kill
switch quarantines the agent while it is working, its pending task is withdrawn
at once and handed off to the next candidate (audited as ``handoff``); an answer
that arrives from an agent quarantined meanwhile is dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crewai.tools import BaseTool
from pydantic import BaseModel, Field, PrivateAttr

from agentmesh.audit import AuditEvent, AuditSink
from agentmesh.directory.directory import Directory
from agentmesh.errors import (
    InterceptorDenied,
    NodeStateError,
    NoResponders,
    RemoteError,
    RequestTimeout,
)
from agentmesh.integrations.crewai.errors import (
    DelegationFailed,
    EventLoopBlocked,
    NoCandidate,
    TaskRequestError,
    UnknownMember,
)
from agentmesh.integrations.crewai.member import CrewMember, Roster
from agentmesh.integrations.crewai.outcomes import OutcomeReporter
from agentmesh.integrations.crewai.tasks import (
    CAPABILITY_HEADER,
    DEFAULT_EXPECTED_OUTPUT,
    TASK_MESSAGE,
    TaskRequest,
    TaskResult,
)
from iatp.clock import Clock, SystemClock
from registry.card import AgentCard
from trust.engine import TrustEngine
from trust.evidence import Outcome

if TYPE_CHECKING:
    from agentmesh.integrations.crewai.hooks import ToolGovernor
    from agentmesh.policy.killswitch import KillSwitch

OK = "ok"
WITHDRAWN = "withdrawn"
INVALID_RESULT = "invalid_result"
MALFORMED_RESULT = "malformed_result"
#: Attempt codes that are evidence against the agent asked (others are not its doing).
EVIDENCE = {
    OK: Outcome.SUCCESS,
    INVALID_RESULT: Outcome.FAILURE,
    MALFORMED_RESULT: Outcome.FAILURE,
    "handler_error": Outcome.FAILURE,
    "request_timeout": Outcome.TIMEOUT,
    "no_responders": Outcome.TIMEOUT,
}

Validator = Callable[[TaskRequest, str], bool]


@dataclass(frozen=True, slots=True)
class DelegationSettings:
    """How a crew delegates.

    Attributes:
        timeout: seconds one agent has to answer.
        max_attempts: agents tried per task (the best first, then handoffs).
        worst_ring: leave out agents whose ring (in this crew's trust engine) is above it.
        validate: ``(request, output) -> bool``; a rejected answer is a failure
            receipt and the task goes to the next candidate.
        wait: seconds the calling CrewAI thread waits for the whole delegation.
    """

    timeout: float = 30.0
    max_attempts: int = 3
    worst_ring: int = 3
    validate: Validator | None = None
    wait: float = 120.0

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.wait <= 0:
            raise ValueError("timeouts must be positive")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.worst_ring not in (1, 2, 3):
            raise ValueError("worst_ring must be 1, 2 or 3")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One agent asked: its DID, card name and how it ended (``ok`` or a code)."""

    did: str
    name: str
    code: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Delegation:
    """One delegated task: who asked, for what, whom it went to, in order."""

    requester: str
    capability: str
    attempts: tuple[Attempt, ...]
    output: str | None

    @property
    def done_by(self) -> Attempt | None:
        return next((a for a in self.attempts if a.code == OK), None)


class Delegator:
    """Finds, asks, judges and hands off (see the module docstring). Lives on the loop.

    Args:
        directory: the mesh directory (cards, quarantines).
        engine: this crew's trust engine (ranking, rings, drift flags).
        roster: this crew's members (never candidates: they are the crew's own).
        reporter: receipts about the agents asked.
        settings: see :class:`DelegationSettings`.
        kill_switch: pending work of an agent it quarantines is handed off.
        audit: handoffs and failed attempts are audited here.
        node: the DID recorded in audit events (the crew's).
    """

    def __init__(
        self,
        directory: Directory,
        engine: TrustEngine,
        roster: Roster,
        reporter: OutcomeReporter | None,
        settings: DelegationSettings,
        *,
        kill_switch: KillSwitch | None = None,
        audit: AuditSink | None = None,
        node: str = "",
        clock: Clock | None = None,
        history: int = 1000,
    ) -> None:
        self.directory = directory
        self.engine = engine
        self.roster = roster
        self.reporter = reporter
        self.settings = settings
        self.kill_switch = kill_switch
        self.audit = audit
        self.node = node
        self.clock: Clock = clock or SystemClock()
        self.history: deque[Delegation] = deque(maxlen=history)
        self._pending: dict[str, set[asyncio.Event]] = {}
        if kill_switch is not None:
            kill_switch.on_quarantine(self.withdraw)

    # -- candidates --------------------------------------------------------------------------

    def eligible(self, did: str) -> bool:
        """May a task go to ``did`` now? (not ours, not blocked, not sandboxed, ring ok)

        An agent on probation after a first failure-rate alarm stays eligible: its
        score is cut, so it ranks after every unflagged candidate and gets a task when
        they are gone or fail, and the reports on it can clear the flag.
        """
        if did in self.roster:
            return False
        if self.kill_switch is not None and self.kill_switch.is_blocked(did):
            return False
        if self.engine.sandboxed(did):
            return False
        return self.engine.ring(did) <= self.settings.worst_ring

    def candidates(
        self, capability: str, *, exclude: frozenset[str] = frozenset()
    ) -> list[AgentCard]:
        """Live agents offering ``capability`` that may get the task, best trust first."""
        cards = self.directory.find(capability, rank=self.engine.score)
        return [c for c in cards if c.did not in exclude and self.eligible(c.did)]

    # -- delegation --------------------------------------------------------------------------

    async def delegate(self, member: CrewMember, request: TaskRequest) -> TaskResult:
        """Have an agent of another crew do ``request`` for ``member``.

        Raises:
            NoCandidate: nobody eligible offers the capability (none tried).
            DelegationFailed: every agent tried failed (``attempts`` says how).
        """
        attempts: list[Attempt] = []
        tried: set[str] = set()
        while len(attempts) < self.settings.max_attempts:
            found = self.candidates(request.capability, exclude=frozenset(tried))
            if not found:
                break
            card = found[0]
            tried.add(card.did)
            if attempts:
                self._audit("handoff", card.did, f"{request.capability}: after {attempts[-1].code}")
            started = time.perf_counter()
            code, result = await self._attempt(member, card, request)
            attempts.append(
                Attempt(card.did, card.display_name, code, time.perf_counter() - started)
            )
            outcome = EVIDENCE.get(code)
            if outcome is not None and self.reporter is not None:
                self.reporter.report(card.did, outcome, f"task:{request.capability}")
            if result is not None:
                self.history.append(
                    Delegation(member.role, request.capability, tuple(attempts), result.output)
                )
                return result
            if code != WITHDRAWN:  # a withdrawal was audited when it happened
                self._audit(code, card.did, f"{request.capability}: attempt {len(attempts)} failed")
        self.history.append(Delegation(member.role, request.capability, tuple(attempts), None))
        summary = [(a.did, a.code) for a in attempts]
        if not attempts:
            raise NoCandidate(
                f"no eligible agent offers {request.capability!r}",
                capability=request.capability,
            )
        raise DelegationFailed(
            f"{request.capability!r}: {len(attempts)} agent(s) tried, none answered validly "
            f"({', '.join(a.code for a in attempts)})",
            capability=request.capability,
            attempts=summary,
        )

    async def _attempt(
        self, member: CrewMember, card: AgentCard, request: TaskRequest
    ) -> tuple[str, TaskResult | None]:
        node = member.node
        if node is None:
            raise NodeStateError(f"member {member.role!r} is not on the mesh")
        withdrawn = asyncio.Event()
        self._pending.setdefault(card.did, set()).add(withdrawn)
        asking = asyncio.ensure_future(
            node.request(
                card.did,
                TASK_MESSAGE,
                request.encode(),
                timeout=self.settings.timeout,
                headers={CAPABILITY_HEADER: request.capability},
            )
        )
        waiting = asyncio.ensure_future(withdrawn.wait())
        try:
            await asyncio.wait({asking, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            self._pending[card.did].discard(withdrawn)
            if not asking.done():
                asking.cancel()
        if withdrawn.is_set() and not (asking.done() and not asking.cancelled()):
            return WITHDRAWN, None
        try:
            reply = asking.result()
        except asyncio.CancelledError:
            return WITHDRAWN, None
        except RemoteError as exc:
            return exc.remote_code, None
        except (RequestTimeout, NoResponders) as exc:
            return exc.code, None
        except InterceptorDenied as exc:  # refused here: the recipient is blocked, say
            return exc.denial_code, None
        if self.kill_switch is not None and self.kill_switch.is_blocked(card.did):
            return WITHDRAWN, None  # quarantined while working: its answer is not used
        try:
            result = TaskResult.decode(reply.body)
        except TaskRequestError:
            return MALFORMED_RESULT, None
        validate = self.settings.validate
        if validate is not None and not validate(request, result.output):
            return INVALID_RESULT, None
        return OK, result

    def withdraw(self, did: str, order: object = None) -> None:
        """Kill-switch hook: abandon the pending tasks of ``did`` (they are handed off)."""
        pending = self._pending.get(did, set())
        for event in list(pending):
            event.set()
        if pending:
            self._audit(WITHDRAWN, did, f"{len(pending)} pending task(s): agent quarantined")

    def _audit(self, code: str, did: str, detail: str) -> None:
        if self.audit is not None:
            self.audit.append(
                AuditEvent(
                    at_ms=self.clock.now_ms(),
                    node=self.node,
                    kind="crewai_delegation",
                    code=code,
                    peer=did,
                    subject=TASK_MESSAGE,
                    detail=detail[:300],
                )
            )


class DelegateArgs(BaseModel):
    """The delegation tool's arguments (what the model fills in)."""

    capability: str = Field(description="The capability needed, e.g. 'analysis'.")
    task: str = Field(description="What the other agent should do, self-contained.")
    expected_output: str = Field(
        default=DEFAULT_EXPECTED_OUTPUT, description="What a good answer looks like."
    )
    context: str = Field(default="", description="Anything else the other agent needs.")


class MeshDelegationTool(BaseTool):
    """``delegate_to_mesh``: a CrewAI tool that hands a task to another crew's agent.

    The calling member is the one whose call the crew's hook just allowed (so the
    tool only runs governed); the request is signed with that member's identity.
    """

    name: str = "delegate_to_mesh"
    description: str = (
        "Hand a task to a trusted agent of another crew on the mesh that offers the "
        "given capability; returns that agent's answer."
    )
    args_schema: type[BaseModel] = DelegateArgs
    _delegator: Delegator | None = PrivateAttr(default=None)
    _hooks: ToolGovernor | None = PrivateAttr(default=None)
    _loop: asyncio.AbstractEventLoop | None = PrivateAttr(default=None)

    def bind(
        self, delegator: Delegator, hooks: ToolGovernor, loop: asyncio.AbstractEventLoop
    ) -> MeshDelegationTool:
        """Attach the tool to a running crew's delegator, hooks and loop."""
        self._delegator, self._hooks, self._loop = delegator, hooks, loop
        return self

    def _run(self, *args: Any, **kwargs: Any) -> str:
        """Blocking: run in CrewAI's thread, waits for the mesh's answer.

        Raises:
            UnknownMember: not called through the crew's hooks (ungoverned).
            EventLoopBlocked: called on the mesh's event loop.
            TaskRequestError: bad arguments.

        A delegation that fails (nobody eligible, every agent failed, no answer in
        time) is not the calling agent's fault: the tool answers ``delegation
        failed: <code>: <why>`` and the model carries on.
        """
        delegator, hooks, loop = self._delegator, self._hooks, self._loop
        if delegator is None or hooks is None or loop is None or loop.is_closed():
            raise UnknownMember("the delegation tool is not bound to a running crew")
        member = hooks.current_member()
        if member is None:
            raise UnknownMember("delegate_to_mesh runs only for a member, through the crew's hooks")
        if _on_loop_thread(loop):
            raise EventLoopBlocked("delegate_to_mesh was called on the mesh's event loop")
        args_doc = (
            DelegateArgs.model_validate(kwargs)
            if not args
            else DelegateArgs(capability=args[0], task=args[1])
        )
        request = TaskRequest(
            args_doc.capability.strip(),
            args_doc.task,
            args_doc.expected_output or DEFAULT_EXPECTED_OUTPUT,
            args_doc.context,
        )
        future = asyncio.run_coroutine_threadsafe(delegator.delegate(member, request), loop)
        try:
            result = future.result(timeout=delegator.settings.wait)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return f"delegation failed: no answer within {delegator.settings.wait:g} s"
        except DelegationFailed as failed:
            # Not the calling agent's fault: the model reads why and carries on.
            return f"delegation failed: {failed.code}: {failed}"
        return result.output


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop runs in this thread
        return False


__all__ = [
    "EVIDENCE",
    "INVALID_RESULT",
    "MALFORMED_RESULT",
    "OK",
    "WITHDRAWN",
    "Attempt",
    "DelegateArgs",
    "Delegation",
    "DelegationSettings",
    "Delegator",
    "MeshDelegationTool",
    "Validator",
]
