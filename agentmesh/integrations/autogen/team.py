"""AgentChat teams with members in other processes: layout, placeholders, hosting, selection.

An AgentChat team (``RoundRobinGroupChat``, ``SelectorGroupChat``) talks over topics
named after its team id: ``group_topic_<id>``, ``output_topic_<id>``,
``<member>_<id>`` and ``<manager>_<id>``, and registers every participant on the
runtime it runs on. To run members elsewhere:

* the coordinator builds the team with :class:`RemoteMember` placeholders for the
  members that run elsewhere, pins the team id, and calls :func:`coordinate`
  (the placeholders' types are marked remote and their hosts awaited);
* each worker calls :func:`host_member` with the same :class:`TeamLayout` and its
  real agent, on its own :class:`~.runtime.MeshAgentRuntime`.

Both make the runtime enforce who may say what on the team's topics
(:mod:`.team_binding`): only the manager directs, each member speaks for itself.

Two or more workers may host the same member: the first-ranked acts, the others
keep the conversation and take over its turn if the kill switch stops it.
:class:`MeshSelection` gives a ``SelectorGroupChat`` the members the mesh still
admits (not quarantined, no drift alarm): a demoted member is no longer selected.

AgentChat keeps the team id and the container class private; the two places that
touch them are :meth:`TeamLayout.of` / :func:`pin_team_id` (checked against the
topic names the team computed) and :func:`host_member`.
"""

from __future__ import annotations

from collections.abc import Sequence

from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.base import ChatAgent, Response, Team
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    MessageFactory,
    StructuredMessage,
    TextMessage,
)
from autogen_agentchat.teams import BaseGroupChat
from autogen_agentchat.teams._group_chat._chat_agent_container import ChatAgentContainer
from autogen_core import AgentType, CancellationToken, TypeSubscription

from agentmesh.integrations.autogen.errors import TeamLayoutError
from agentmesh.integrations.autogen.layout import TeamLayout, private_attribute
from agentmesh.integrations.autogen.runtime import MeshAgentRuntime


def pin_team_id(team: BaseGroupChat, team_id: str) -> TeamLayout:
    """Give a not yet started team the id every runtime of it agrees on.

    Raises:
        TeamLayoutError: the team already ran, or ``team_id`` is not a valid id.
    """
    if private_attribute(team, "_initialized"):
        raise TeamLayoutError("the team already ran: pin its id before the first run")
    manager = private_attribute(team, "_group_chat_manager_name")
    names = list(private_attribute(team, "_participant_names"))
    TeamLayout(team_id, manager, tuple(names))  # validates
    team._team_id = team_id
    team._group_topic_type = f"group_topic_{team_id}"
    team._output_topic_type = f"output_topic_{team_id}"
    team._group_chat_manager_topic_type = f"{manager}_{team_id}"
    team._participant_topic_types = [f"{name}_{team_id}" for name in names]
    return TeamLayout.of(team)


class RemoteMember(BaseChatAgent):
    """A team participant that runs in another process (a placeholder; never runs here)."""

    def __init__(
        self,
        name: str,
        description: str = "A team member on the mesh.",
        produced_message_types: Sequence[type[BaseChatMessage]] = (TextMessage,),
    ) -> None:
        super().__init__(name, description)
        self._produced = tuple(produced_message_types)

    @property
    def produced_message_types(self) -> Sequence[type[BaseChatMessage]]:
        return self._produced

    async def on_messages(
        self, messages: Sequence[BaseChatMessage], cancellation_token: CancellationToken
    ) -> Response:
        raise TeamLayoutError(f"{self.name} runs on another runtime: it is reached over the mesh")

    async def on_reset(self, cancellation_token: CancellationToken) -> None:
        return None


async def coordinate(
    runtime: MeshAgentRuntime, team: BaseGroupChat, *, timeout: float = 30.0
) -> TeamLayout:
    """Prepare ``runtime`` to run ``team`` whose :class:`RemoteMember` s run elsewhere.

    Enforces the team's topic rules here (:meth:`MeshAgentRuntime.add_team`), marks
    the placeholders' types remote and waits until each has an admissible host.
    Call it for a team without placeholders too: the rules still apply.

    Raises:
        TeamLayoutError: see :meth:`TeamLayout.of`.
        AgentUnreachable: a member has no host within ``timeout``.
    """
    layout = TeamLayout.of(team)
    participants: list[ChatAgent | Team] = list(private_attribute(team, "_participants"))
    remote = [layout.member_type(p.name) for p in participants if isinstance(p, RemoteMember)]
    runtime.add_team(layout)
    runtime.mark_remote(remote)
    await runtime.wait_for_hosts(remote, timeout=timeout)
    return layout


async def host_member(
    runtime: MeshAgentRuntime,
    layout: TeamLayout,
    agent: ChatAgent,
    *,
    message_types: Sequence[type[BaseAgentEvent | BaseChatMessage]] = (),
) -> AgentType:
    """Host team member ``agent`` (named as in ``layout``) on this runtime.

    Registers the member's container under its team agent type (its own DID and
    card), subscribed to its own topic and the group topic, as the team itself
    would have, and enforces the team's topic rules on this runtime.

    Raises:
        TeamLayoutError: ``agent.name`` is not a member of the layout.
    """
    agent_type = layout.member_type(agent.name)
    runtime.add_team(layout)
    factory = MessageFactory()
    for message_type in (*agent.produced_message_types, *message_types):
        if isinstance(message_type, type) and issubclass(message_type, StructuredMessage):
            runtime.codec.register_chat_type(message_type)
            if not factory.is_registered(message_type):
                factory.register(message_type)
    for message_type in message_types:
        runtime.codec.register_chat_type(message_type)
        if not factory.is_registered(message_type):
            factory.register(message_type)

    def make() -> ChatAgentContainer:
        return ChatAgentContainer(layout.group_topic, layout.output_topic, agent, factory)

    registered = await ChatAgentContainer.register(runtime, type=agent_type, factory=make)
    await runtime.add_subscription(TypeSubscription(topic_type=agent_type, agent_type=agent_type))
    await runtime.add_subscription(
        TypeSubscription(topic_type=layout.group_topic, agent_type=agent_type)
    )
    return registered


__all__ = ["RemoteMember", "TeamLayout", "coordinate", "host_member", "pin_team_id"]
