"""AutoGen (autogen-core / autogen-agentchat 0.7) on the mesh: identity, trust and policy per agent.

``MeshAgentRuntime`` implements AutoGen's ``AgentRuntime`` protocol over signed
IATP envelopes: each hosted agent type is a mesh agent with its own DID and
directory card; ``send_message`` is a signed request/reply to the recipient's
host, ``publish_message`` a signed broadcast; every delivery passes the receiving
node's revocation, policy/ring and trust interceptors, and a refusal surfaces as
AutoGen's ``UndeliverableException`` with the refusal code. ``governed_tool``
puts tool calls under the same governor. See ``docs/integrations-autogen.md``.

Install with ``pip install agentmesh[autogen]``.
"""

from __future__ import annotations

try:
    import autogen_agentchat  # noqa: F401
    import autogen_core  # noqa: F401
except ImportError as missing:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "agentmesh.integrations.autogen needs AutoGen 0.7: pip install 'agentmesh[autogen]'"
    ) from missing

from agentmesh.integrations.autogen.codec import MessageCodec
from agentmesh.integrations.autogen.config import MeshRuntimeConfig
from agentmesh.integrations.autogen.delivery import Judgement
from agentmesh.integrations.autogen.errors import (
    REFUSAL_MARKER,
    AgentUnreachable,
    AutogenIntegrationError,
    DeliveryRefused,
    OutboundRefused,
    RemoteCantHandle,
    RemoteHandlerError,
    ResultRejected,
    RuntimeNotRunning,
    SenderNotHosted,
    TeamLayoutError,
    ToolCallRefused,
    WireError,
)
from agentmesh.integrations.autogen.guards import TEAM_EVIDENCE, Guards, open_guards
from agentmesh.integrations.autogen.handoff import Handoff
from agentmesh.integrations.autogen.judge import Judge, all_of, refused_tool_calls, text_check
from agentmesh.integrations.autogen.runtime import MeshAgentRuntime, RuntimeState
from agentmesh.integrations.autogen.selection import MeshSelection, Skip
from agentmesh.integrations.autogen.team import (
    RemoteMember,
    TeamLayout,
    coordinate,
    host_member,
    pin_team_id,
)
from agentmesh.integrations.autogen.tools import governed_tool

__all__ = [
    "REFUSAL_MARKER",
    "TEAM_EVIDENCE",
    "AgentUnreachable",
    "AutogenIntegrationError",
    "DeliveryRefused",
    "Guards",
    "Handoff",
    "Judge",
    "Judgement",
    "MeshAgentRuntime",
    "MeshRuntimeConfig",
    "MeshSelection",
    "MessageCodec",
    "OutboundRefused",
    "RemoteCantHandle",
    "RemoteHandlerError",
    "RemoteMember",
    "ResultRejected",
    "RuntimeNotRunning",
    "RuntimeState",
    "SenderNotHosted",
    "Skip",
    "TeamLayout",
    "TeamLayoutError",
    "ToolCallRefused",
    "WireError",
    "all_of",
    "coordinate",
    "governed_tool",
    "host_member",
    "open_guards",
    "pin_team_id",
    "refused_tool_calls",
    "text_check",
]
