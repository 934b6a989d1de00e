"""Who may say what on a team's topics: the manager directs, each member speaks for itself.

AgentChat's group chat manager believes what a message says: a turn
(``GroupChatAgentResponse``) counts for the member *named in its body*, and a
"your turn" (``GroupChatRequestPublish``) makes a member speak. On one process
that is fine; on a mesh, any identity that may publish on the channel could
otherwise speak for a member or direct the team. So every runtime that knows a
team (:func:`~.team.coordinate`, :func:`~.team.host_member`) refuses a publish to
one of the team's topics (:attr:`~.layout.TeamLayout.topics`), with the code
``autogen_team_forged``, when

* it names no sender agent (and no node of this runtime signed it),
* its sender is not the team's manager or one of its members,
* it is a manager's message (start, "your turn", termination) from anyone else, or
* it is a member's turn that names another member than its sender.

That the signer hosts the sender agent at all is checked before
(:class:`~.routing.SenderBinding`, ``autogen_sender_unbound``). Pure: no I/O.
"""

from __future__ import annotations

import json

from agentmesh.integrations.autogen.errors import TeamLayoutError
from agentmesh.integrations.autogen.layout import TeamLayout
from agentmesh.integrations.autogen.wire import Routing

TEAM_FORGED = "autogen_team_forged"
MANAGER_MESSAGES = frozenset({"GroupChatStart", "GroupChatRequestPublish", "GroupChatTermination"})
"""What only a team's manager publishes."""
MEMBER_TURNS = frozenset({"GroupChatAgentResponse", "GroupChatTeamResponse"})
"""A member's turn: its body names the member (``name``), which must be its sender."""


def claimed_member(payload: bytes) -> str | None:
    """The member a turn's payload names (the JSON the chat-event serializers write)."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


class TeamBinding:
    """The teams a runtime knows, by topic, and the rules of their topics."""

    def __init__(self) -> None:
        self._by_topic: dict[str, TeamLayout] = {}

    def add(self, layout: TeamLayout) -> None:
        """Enforce the rules on ``layout``'s topics (again for the same layout: no change).

        Raises:
            TeamLayoutError: another layout already uses one of these topics.
        """
        for topic in layout.topics:
            known = self._by_topic.get(topic)
            if known is not None and known != layout:
                raise TeamLayoutError(f"topic {topic!r} belongs to another team layout")
        for topic in layout.topics:
            self._by_topic[topic] = layout

    def team_of(self, topic_type: str) -> TeamLayout | None:
        return self._by_topic.get(topic_type)

    def __len__(self) -> int:
        return len({layout.team_id for layout in self._by_topic.values()})

    def check(
        self, routing: Routing, type_name: str, payload: bytes, *, signed_here: bool
    ) -> str | None:
        """Why this message breaks its team's rules (``None``: it does not, or no team's topic).

        Args:
            routing: the message's signed routing headers.
            type_name: the AutoGen type name of its body.
            payload: the serialized message.
            signed_here: a node of this runtime signed it.
        """
        if routing.kind != "publish" or routing.topic is None:
            return None
        layout = self._by_topic.get(routing.topic.type)
        if layout is None:
            return None
        sender = routing.sender
        if sender is None:
            if signed_here:
                return None
            return f"team {layout.team_id} takes messages from its own agents only: no sender"
        members = {agent_type: name for name, agent_type in layout.member_types.items()}
        if sender.type != layout.manager_type and sender.type not in members:
            return f"{sender.type!r} is not an agent of team {layout.team_id}"
        if type_name in MANAGER_MESSAGES and sender.type != layout.manager_type:
            return f"only the manager of team {layout.team_id} sends {type_name}"
        if type_name in MEMBER_TURNS:
            named = claimed_member(payload)
            if named is None or members.get(sender.type) != named:
                return f"{sender.type!r} answers in the name of {str(named)[:64]!r}"
        return None


__all__ = ["MANAGER_MESSAGES", "MEMBER_TURNS", "TEAM_FORGED", "TeamBinding", "claimed_member"]
