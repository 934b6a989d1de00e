"""Errors of the CrewAI adapter.

Every class has a stable ``code`` (prefixed ``crewai_`` so it cannot clash with
the codes of the core or of another adapter) and carries the fields a caller
needs to act on it::

    AgentMeshError
    └── IntegrationError                 code "crewai_integration"
        ├── CrewConfigError              code "crewai_config"          (role)
        ├── MeshCrewStateError           code "crewai_state"
        ├── UnknownMember                code "crewai_unknown_member"  (role)
        ├── EventLoopBlocked             code "crewai_event_loop_blocked"
        ├── TaskRequestError             code "crewai_task_request"    (field)
        ├── CapabilityNotOffered         code "crewai_capability_not_offered" (capability)
        ├── DelegationFailed             code "crewai_delegation_failed" (capability, attempts)
        │   └── NoCandidate              code "crewai_no_candidate"
        └── ScriptError                  code "crewai_script"
            └── ScriptExhausted          code "crewai_script_exhausted" (calls)

A tool call the mesh refuses is not an exception of this family: the hook
raises CrewAI's own ``HookAborted`` with the governor's refusal code as the
reason (``policy_denied``, ``quarantined``, ...), so CrewAI blocks the call the
way it blocks any hooked call, and the refusal is audited by the governor.
"""

from __future__ import annotations

from collections.abc import Sequence

from iatp.errors import AgentMeshError


class IntegrationError(AgentMeshError):
    """Root of the CrewAI adapter's errors."""

    code = "crewai_integration"


class CrewConfigError(IntegrationError):
    """The mesh configuration does not fit the crew (unknown or duplicate role, ...)."""

    code = "crewai_config"

    def __init__(self, reason: str, *, role: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.role = role


class MeshCrewStateError(IntegrationError):
    """An operation that needs a running :class:`MeshCrew` (or a fresh one) was called."""

    code = "crewai_state"


class UnknownMember(IntegrationError):
    """A CrewAI agent of a governed crew has no mesh identity (fail closed)."""

    code = "crewai_unknown_member"

    def __init__(self, reason: str, *, role: str | None = None) -> None:
        super().__init__(reason)
        self.role = role


class EventLoopBlocked(IntegrationError):
    """A blocking mesh call was made on the mesh's own event loop (it would deadlock).

    Run crews with ``await mesh.kickoff()`` (a worker thread), not ``crew.kickoff()``
    inside a coroutine.
    """

    code = "crewai_event_loop_blocked"


class TaskRequestError(IntegrationError):
    """A delegated task is malformed: bad JSON, a missing or oversized field."""

    code = "crewai_task_request"

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason)
        self.field = field


class CapabilityNotOffered(IntegrationError):
    """A member was asked for a capability its card does not offer."""

    code = "crewai_capability_not_offered"

    def __init__(self, reason: str, *, capability: str) -> None:
        super().__init__(reason)
        self.capability = capability


class DelegationFailed(IntegrationError):
    """No agent of another crew completed the task.

    ``attempts`` lists ``(did, code)`` for every agent tried, in order (``code`` is
    the remote error code, ``request_timeout``, ``invalid_result``, ``withdrawn``, ...).
    """

    code = "crewai_delegation_failed"

    def __init__(
        self, reason: str, *, capability: str, attempts: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(reason)
        self.capability = capability
        self.attempts = tuple(attempts)


class NoCandidate(DelegationFailed):
    """Nobody eligible offers the capability (none live, all excluded, or all tried)."""

    code = "crewai_no_candidate"


class ScriptError(IntegrationError):
    """A scripted completion is malformed (unknown step kind, bad arguments)."""

    code = "crewai_script"


class ScriptExhausted(ScriptError):
    """The scripted LLM was called more times than it has steps (and does not repeat)."""

    code = "crewai_script_exhausted"

    def __init__(self, reason: str, *, calls: int) -> None:
        super().__init__(reason)
        self.calls = calls


__all__ = [
    "CapabilityNotOffered",
    "CrewConfigError",
    "DelegationFailed",
    "EventLoopBlocked",
    "IntegrationError",
    "MeshCrewStateError",
    "NoCandidate",
    "ScriptError",
    "ScriptExhausted",
    "TaskRequestError",
    "UnknownMember",
]
