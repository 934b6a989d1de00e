"""A crew agent on the mesh: its own identity, node and card, and the crew's roster of them.

Every CrewAI agent of a governed crew becomes a :class:`CrewMember`: a ``did:key``
identity of its own, a :class:`~agentmesh.node.node.MeshNode` (its inbox, so agents
of other crews and processes can send it signed tasks) and a signed card in the
mesh directory naming the capabilities it offers. The :class:`Roster` maps CrewAI's
agent objects to members; the tool hook and the delegation tool look agents up
there, by object identity, so an agent that is not on the roster is never taken
for one that is. It also tells a copy of a member (what ``Agent.copy()`` makes:
another object with the same CrewAI key, a hash of role, goal and backstory, and
the very same tool objects) from another crew's agent, so the hook can refuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentmesh.integrations.crewai.errors import CrewConfigError
from registry.card import Capability
from registry.errors import CardError

if TYPE_CHECKING:
    from crewai.agents.agent_builder.base_agent import BaseAgent

    from agentmesh.node.node import MeshNode
    from iatp.identity import AgentIdentity


@dataclass(frozen=True, slots=True, eq=False)
class CrewMember:
    """One CrewAI agent's presence on the mesh.

    Attributes:
        role: the agent's CrewAI role (unique in its crew).
        agent: the CrewAI agent.
        identity: its mesh identity (signs its messages and its card).
        capabilities: what it offers other crews (``Directory.find`` names).
        node: its node (inbox for delegated tasks); set once the crew joined.
        busy: held while the agent works (a CrewAI agent runs one task at a time).
    """

    role: str
    agent: BaseAgent
    identity: AgentIdentity
    capabilities: tuple[str, ...] = ()
    node: MeshNode | None = None
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def did(self) -> str:
        return self.identity.did

    def offers(self, capability: str) -> bool:
        return capability in self.capabilities


def capability_cards(role: str, names: Iterable[str]) -> tuple[Capability, ...]:
    """Card capabilities (version ``1``) for ``names``.

    Raises:
        CrewConfigError: a name is not a valid capability name (``[a-z0-9][a-z0-9_.-]*``).
    """
    try:
        return tuple(Capability(name=name, version="1") for name in names)
    except (ValueError, CardError) as exc:
        raise CrewConfigError(f"role {role!r}: bad capability name ({exc})", role=role) from None


class Roster:
    """The members of one crew, found by CrewAI agent object, DID or role."""

    def __init__(self, members: Iterable[CrewMember] = ()) -> None:
        self._by_agent: dict[int, CrewMember] = {}
        self._by_did: dict[str, CrewMember] = {}
        self._by_role: dict[str, CrewMember] = {}
        self._by_key: dict[str, CrewMember] = {}
        for member in members:
            self.add(member)

    def add(self, member: CrewMember) -> None:
        """Raises: CrewConfigError: the role, DID or agent is on the roster already."""
        if member.role in self._by_role:
            raise CrewConfigError(f"two agents share the role {member.role!r}", role=member.role)
        if member.did in self._by_did or id(member.agent) in self._by_agent:
            raise CrewConfigError(f"{member.role!r} is on the roster twice", role=member.role)
        self._by_agent[id(member.agent)] = member
        self._by_did[member.did] = member
        self._by_role[member.role] = member
        key = _agent_key(member.agent)
        if key is not None:
            self._by_key[key] = member

    def replace(self, member: CrewMember) -> None:
        """Swap in a new version of a member (same role, agent and DID: its node was set)."""
        old = self._by_role[member.role]
        if old.agent is not member.agent or old.did != member.did:
            raise CrewConfigError("replace keeps the agent and the DID", role=member.role)
        self._by_agent[id(member.agent)] = member
        self._by_did[member.did] = member
        self._by_role[member.role] = member
        key = _agent_key(member.agent)
        if key is not None:
            self._by_key[key] = member

    def for_agent(self, agent: object) -> CrewMember | None:
        """The member whose agent *is* ``agent`` (object identity), if any."""
        member = self._by_agent.get(id(agent))
        return member if member is not None and member.agent is agent else None

    def copied_from(self, agent: object) -> CrewMember | None:
        """The member ``agent`` is a copy of, if any: same CrewAI key, a tool object shared."""
        key = _agent_key(agent)
        member = self._by_key.get(key) if key is not None else None
        if member is None or member.agent is agent:
            return None
        theirs = {id(tool) for tool in _agent_tools(member.agent)}
        return member if any(id(tool) in theirs for tool in _agent_tools(agent)) else None

    def by_did(self, did: str) -> CrewMember | None:
        return self._by_did.get(did)

    def by_role(self, role: str) -> CrewMember | None:
        return self._by_role.get(role)

    def __contains__(self, did: object) -> bool:
        return did in self._by_did

    def __iter__(self) -> Iterator[CrewMember]:
        return iter(list(self._by_role.values()))

    def __len__(self) -> int:
        return len(self._by_role)

    @property
    def dids(self) -> frozenset[str]:
        return frozenset(self._by_did)


def _agent_key(agent: object) -> str | None:
    """CrewAI's ``BaseAgent.key`` (md5 of role, goal, backstory), if the object has one."""
    key: object = None
    with contextlib.suppress(Exception):  # any agent-like object: never fail the caller
        key = getattr(agent, "key", None)
    return key if isinstance(key, str) else None


def _agent_tools(agent: object) -> list[object]:
    tools: object = None
    with contextlib.suppress(Exception):
        tools = getattr(agent, "tools", None)
    return list(tools) if isinstance(tools, list) else []


__all__ = ["CrewMember", "Roster", "capability_cards"]
