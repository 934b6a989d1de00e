"""Delegated tasks on the wire, and the side of a crew that runs them.

A crew agent hands a task to an agent of another crew (or process) as a signed
``crewai.task`` request; the request's body is a small JSON document
(:class:`TaskRequest`), its ``capability`` header names what is asked for (so
the receiving node's policy can match ``args.capability``), and the signed reply
carries a :class:`TaskResult`. Both are checked strictly on decode: unknown
fields, wrong types and oversized texts are refused with
:class:`~agentmesh.integrations.crewai.errors.TaskRequestError`.

:class:`TaskService` is the receiving side, one per member: it decodes the
request, checks the member offers the capability, and runs a CrewAI task on the
member's agent in a worker thread (``Agent.execute_task``, the same call CrewAI's
own delegation tool makes), one task at a time; the agent's tool calls go
through the crew's hooks like any other.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import dataclass
from typing import Any

from crewai import Task

from agentmesh.integrations.crewai.errors import CapabilityNotOffered, TaskRequestError
from agentmesh.integrations.crewai.member import CrewMember
from agentmesh.node.interceptors import InboundMessage

TASK_MESSAGE = "crewai.task"
CAPABILITY_HEADER = "capability"
WIRE_VERSION = 1
MAX_DESCRIPTION = 16_000
MAX_EXPECTED_OUTPUT = 4_000
MAX_CONTEXT = 16_000
MAX_OUTPUT = 64_000
MAX_ROLE = 256
_CAPABILITY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
DEFAULT_EXPECTED_OUTPUT = "A complete answer to the task."


def _text(doc: dict[str, Any], name: str, limit: int, *, required: bool = False) -> str:
    value = doc.get(name, "")
    if not isinstance(value, str):
        raise TaskRequestError(f"{name!r} must be a string", field=name)
    if required and not value.strip():
        raise TaskRequestError(f"{name!r} must not be empty", field=name)
    if len(value) > limit:
        raise TaskRequestError(f"{name!r} is longer than {limit} characters", field=name)
    return value


def _document(data: bytes, fields: frozenset[str]) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise TaskRequestError("not a JSON document") from None
    if not isinstance(doc, dict):
        raise TaskRequestError("not a JSON object")
    unknown = set(doc) - fields
    if unknown:
        raise TaskRequestError(f"unknown field(s) {sorted(unknown)}", field=sorted(unknown)[0])
    if doc.get("v") != WIRE_VERSION:
        raise TaskRequestError(f"unsupported version {doc.get('v')!r}", field="v")
    return doc


def check_capability(name: object) -> str:
    """Raises: TaskRequestError: not a capability name (``[a-z0-9][a-z0-9_.-]{0,63}``)."""
    if not isinstance(name, str) or not _CAPABILITY.match(name):
        raise TaskRequestError(f"bad capability name {name!r:.80}", field="capability")
    return name


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """A task for an agent of another crew.

    Raises (on construction):
        TaskRequestError: a bad capability name, an empty description, a text too long.
    """

    capability: str
    description: str
    expected_output: str = DEFAULT_EXPECTED_OUTPUT
    context: str = ""

    def __post_init__(self) -> None:
        doc = {
            "description": self.description,
            "expected_output": self.expected_output,
            "context": self.context,
        }
        check_capability(self.capability)
        _text(doc, "description", MAX_DESCRIPTION, required=True)
        _text(doc, "expected_output", MAX_EXPECTED_OUTPUT, required=True)
        _text(doc, "context", MAX_CONTEXT)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": WIRE_VERSION,
                "capability": self.capability,
                "description": self.description,
                "expected_output": self.expected_output,
                "context": self.context,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> TaskRequest:
        """Raises: TaskRequestError."""
        doc = _document(
            data, frozenset({"v", "capability", "description", "expected_output", "context"})
        )
        return cls(
            check_capability(doc.get("capability")),
            _text(doc, "description", MAX_DESCRIPTION, required=True),
            _text(doc, "expected_output", MAX_EXPECTED_OUTPUT, required=True),
            _text(doc, "context", MAX_CONTEXT),
        )


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What the agent that did the task answered."""

    output: str
    role: str

    def encode(self) -> bytes:
        output = self.output[:MAX_OUTPUT]
        return json.dumps(
            {"v": WIRE_VERSION, "output": output, "role": self.role[:MAX_ROLE]},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> TaskResult:
        """Raises: TaskRequestError."""
        doc = _document(data, frozenset({"v", "output", "role"}))
        return cls(_text(doc, "output", MAX_OUTPUT), _text(doc, "role", MAX_ROLE))


def run_agent_task(member: CrewMember, request: TaskRequest) -> str:
    """Run ``request`` on the member's CrewAI agent (blocking; call it in a worker thread)."""
    task = Task(
        description=request.description,
        expected_output=request.expected_output,
        agent=member.agent,
    )
    return str(member.agent.execute_task(task, context=request.context or None))


class TaskService:
    """Serves delegated tasks for one member (its node's ``crewai.task`` handler).

    Attributes:
        served: tasks that ran to an answer.
        refused: requests refused before running, by error code.
        active: tasks running now (in worker threads).
    """

    def __init__(self, member: CrewMember) -> None:
        self.member = member
        self.served = 0
        self.failed = 0
        self.refused: dict[str, int] = {}
        self._active = 0
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        return self._active

    def install(self) -> None:
        """Handle ``crewai.task`` on the member's node.

        Raises:
            ValueError: the member has no node yet.
        """
        if self.member.node is None:
            raise ValueError(f"member {self.member.role!r} has no node")
        self.member.node.handle(TASK_MESSAGE, self.handle)

    async def handle(self, message: InboundMessage) -> bytes:
        """Decode, check and run one task; the reply is a :class:`TaskResult`.

        Raises (answered to the requester as ``handler_error``):
            TaskRequestError: the request is malformed.
            CapabilityNotOffered: the member does not offer the capability.
        """
        try:
            request = TaskRequest.decode(message.body)
            if not self.member.offers(request.capability):
                raise CapabilityNotOffered(
                    f"{self.member.role} does not offer {request.capability!r}",
                    capability=request.capability,
                )
        except (TaskRequestError, CapabilityNotOffered) as exc:
            self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
            raise
        async with self.member.busy:
            try:
                output = await asyncio.to_thread(self._run, request)
            except Exception:
                self.failed += 1
                raise
        self.served += 1
        return TaskResult(output, self.member.role).encode()

    def _run(self, request: TaskRequest) -> str:
        # Counted in the thread itself: cancelling the awaiting task does not stop it,
        # and the crew must not drop its hooks while an agent may still call a tool.
        with self._lock:
            self._active += 1
        try:
            return run_agent_task(self.member, request)
        finally:
            with self._lock:
                self._active -= 1


__all__ = [
    "CAPABILITY_HEADER",
    "DEFAULT_EXPECTED_OUTPUT",
    "TASK_MESSAGE",
    "TaskRequest",
    "TaskResult",
    "TaskService",
    "check_capability",
    "run_agent_task",
]
