"""Errors of the AutoGen adapter, translated at the boundary to AutoGen's own exceptions.

AutoGen code catches ``CantHandleException`` and ``UndeliverableException``
(``autogen_core.exceptions``); agentmesh code catches :class:`AgentMeshError`.
Every delivery failure here is both: the classes below inherit from the AutoGen
exception that fits, and carry the mesh's refusal code::

    AgentMeshError
    └── MeshError
        └── AutogenIntegrationError        "autogen_error"
            ├── DeliveryRefused            "autogen_refused" + UndeliverableException
            │     refusal_code: the receiving node's code (policy_denied, quarantined,
            │     autogen_sender_unbound, ...)
            ├── OutboundRefused            "autogen_outbound_refused" + UndeliverableException
            │     refusal_code: this node's interceptor code
            ├── AgentUnreachable           "autogen_unreachable" + UndeliverableException
            │     cause: no_host, no_responders, request_timeout
            ├── RemoteCantHandle           "autogen_cant_handle" + CantHandleException
            ├── RemoteHandlerError         "autogen_handler_error" (remote_type)
            ├── WireError                  "autogen_wire" + ValueError
            ├── SenderNotHosted            "autogen_sender_not_hosted"
            ├── RuntimeNotRunning          "autogen_runtime_state"
            ├── ResultRejected             "autogen_result_rejected" (raised by a judge)
            ├── TeamLayoutError            "autogen_team_layout" + ValueError
            └── ToolCallRefused            "autogen_tool_refused" + PolicyDenied
                  denial_code, rule, ring, action of the refusal

``REFUSAL_MARKER`` starts the text of every :class:`ToolCallRefused`, so an
agent's tool-result message says *that* the mesh refused a call and why (the
default judge counts those).
"""

from __future__ import annotations

from autogen_core.exceptions import CantHandleException, UndeliverableException

from agentmesh.errors import MeshError
from agentmesh.policy.errors import PolicyDenied

REFUSAL_MARKER = "[agentmesh:refused"


class AutogenIntegrationError(MeshError):
    """Root of the AutoGen adapter's errors."""

    code = "autogen_error"


class DeliveryRefused(AutogenIntegrationError, UndeliverableException):
    """The recipient's node refused the message and said why (``refusal_code``)."""

    code = "autogen_refused"

    def __init__(self, message: str, *, refusal_code: str, recipient: str, did: str) -> None:
        super().__init__(message)
        self.refusal_code = refusal_code
        self.recipient = recipient
        self.did = did


class OutboundRefused(AutogenIntegrationError, UndeliverableException):
    """A hook of the sending node (quarantine, policy) refused to send."""

    code = "autogen_outbound_refused"

    def __init__(self, message: str, *, refusal_code: str, recipient: str) -> None:
        super().__init__(message)
        self.refusal_code = refusal_code
        self.recipient = recipient


class AgentUnreachable(AutogenIntegrationError, UndeliverableException):
    """No live, admissible host of the agent type answered (``cause`` says how it failed)."""

    code = "autogen_unreachable"

    def __init__(self, message: str, *, cause: str, recipient: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.recipient = recipient


class RemoteCantHandle(AutogenIntegrationError, CantHandleException):
    """The remote agent has no handler for the message (AutoGen's ``CantHandleException``)."""

    code = "autogen_cant_handle"


class RemoteHandlerError(AutogenIntegrationError):
    """The remote agent's handler raised; only the exception's class name crosses the mesh."""

    code = "autogen_handler_error"

    def __init__(self, message: str, *, remote_type: str, recipient: str) -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.recipient = recipient


class WireError(AutogenIntegrationError, ValueError):
    """A message cannot be encoded (no serializer) or a body or header is malformed."""

    code = "autogen_wire"


class SenderNotHosted(AutogenIntegrationError):
    """A message names a sender this runtime does not host: it cannot sign for it."""

    code = "autogen_sender_not_hosted"

    def __init__(self, message: str, *, sender: str) -> None:
        super().__init__(message)
        self.sender = sender


class RuntimeNotRunning(AutogenIntegrationError):
    """The runtime is not started (``async with MeshAgentRuntime(...)``) or already closed."""

    code = "autogen_runtime_state"


class ResultRejected(AutogenIntegrationError):
    """A judge found a delivered message bad; the handled outcome becomes a failure receipt."""

    code = "autogen_result_rejected"

    def __init__(self, message: str, *, reason: str, sender: str | None) -> None:
        super().__init__(message)
        self.reason = reason
        self.sender = sender


class TeamLayoutError(AutogenIntegrationError, ValueError):
    """A team layout is malformed, or the team does not match the layout it was given."""

    code = "autogen_team_layout"


class ToolCallRefused(AutogenIntegrationError, PolicyDenied):
    """The governor refused a tool call; the tool did not run.

    Its text starts with :data:`REFUSAL_MARKER`, so the tool-result message an
    agent publishes shows the refusal; ``denial_code`` is the governor's code
    (``policy_denied``, ``ring_denied``, ``egress_denied``, ``budget_exceeded``, ...).
    """

    code = "autogen_tool_refused"

    def __init__(self, denied: PolicyDenied) -> None:
        text = (
            f"{REFUSAL_MARKER} code={denied.code} rule={denied.rule} ring={denied.ring}] "
            f"{denied.reason}"
        )
        PolicyDenied.__init__(
            self, text, did=denied.did, rule=denied.rule, ring=denied.ring, action=denied.action
        )
        self.denial_code = denied.code


__all__ = [
    "REFUSAL_MARKER",
    "AgentUnreachable",
    "AutogenIntegrationError",
    "DeliveryRefused",
    "OutboundRefused",
    "RemoteCantHandle",
    "RemoteHandlerError",
    "ResultRejected",
    "RuntimeNotRunning",
    "SenderNotHosted",
    "TeamLayoutError",
    "ToolCallRefused",
    "WireError",
]
