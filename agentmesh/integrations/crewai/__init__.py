"""CrewAI on the mesh: identities, governed tool calls, trust-ranked delegation.

Add the mesh to an existing crew::

    from agentmesh.integrations.crewai import CrewMeshConfig, MeshCrew
    from agentmesh.policy import CompiledPolicy

    config = CrewMeshConfig(
        policy=CompiledPolicy.from_file("crew-policy.yaml"),
        capabilities={"Analyst": ("analysis",)},   # what members offer other crews
        delegates=("Lead",),                       # who gets the delegate_to_mesh tool
    )
    async with MeshCrew(crew, config, nats_url="nats://127.0.0.1:4222") as mesh:
        result = await mesh.kickoff(inputs={"topic": "..."})

Every agent gets a ``did:key`` identity, a node and a signed card; every tool
call of the crew goes through CrewAI's ``PRE_TOOL_CALL`` / ``POST_TOOL_CALL``
hooks to the node's governor (a refusal blocks the call with its code, audited);
``delegate_to_mesh`` hands a task to another crew's agent found by capability and
ranked by trust; tool and task outcomes become signed trust receipts. See
``docs/integrations-crewai.md``.

``ScriptedLLM`` replays scripted completions (tool calls included) so crews run
without a model provider or a key.
"""

from agentmesh.integrations.crewai.config import CrewMeshConfig
from agentmesh.integrations.crewai.delegation import (
    Attempt,
    Delegation,
    DelegationSettings,
    Delegator,
    MeshDelegationTool,
)
from agentmesh.integrations.crewai.errors import (
    CapabilityNotOffered,
    CrewConfigError,
    DelegationFailed,
    EventLoopBlocked,
    IntegrationError,
    MeshCrewStateError,
    NoCandidate,
    ScriptError,
    ScriptExhausted,
    TaskRequestError,
    UnknownMember,
)
from agentmesh.integrations.crewai.hooks import Refusal, ToolDecision, ToolGovernor
from agentmesh.integrations.crewai.member import CrewMember, Roster
from agentmesh.integrations.crewai.mesh_crew import MeshCrew, MeshCrewReport, MeshCrewState
from agentmesh.integrations.crewai.outcomes import OutcomeReporter
from agentmesh.integrations.crewai.scripted_llm import (
    Answer,
    ScriptedLLM,
    ToolCall,
    load_script,
    script_from_data,
)
from agentmesh.integrations.crewai.tasks import TASK_MESSAGE, TaskRequest, TaskResult, TaskService
from agentmesh.policy.governed import ToolSpec

__all__ = [
    "TASK_MESSAGE",
    "Answer",
    "Attempt",
    "CapabilityNotOffered",
    "CrewConfigError",
    "CrewMember",
    "CrewMeshConfig",
    "Delegation",
    "DelegationFailed",
    "DelegationSettings",
    "Delegator",
    "EventLoopBlocked",
    "IntegrationError",
    "MeshCrew",
    "MeshCrewReport",
    "MeshCrewState",
    "MeshCrewStateError",
    "MeshDelegationTool",
    "NoCandidate",
    "OutcomeReporter",
    "Refusal",
    "Roster",
    "ScriptError",
    "ScriptExhausted",
    "ScriptedLLM",
    "TaskRequest",
    "TaskRequestError",
    "TaskResult",
    "TaskService",
    "ToolCall",
    "ToolDecision",
    "ToolGovernor",
    "ToolSpec",
    "UnknownMember",
    "load_script",
    "script_from_data",
]
