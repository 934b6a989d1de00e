"""The names an AgentChat team's runtimes must agree on: team id, manager, members, topics. Pure.

An AgentChat team (``RoundRobinGroupChat``, ``SelectorGroupChat``) talks over topics
named after its team id: ``group_topic_<id>``, ``output_topic_<id>``,
``<member>_<id>`` and ``<manager>_<id>``; each member's agent type is its own
topic's name. :class:`TeamLayout` computes them; :meth:`TeamLayout.of` reads
them from a constructed team (AgentChat keeps them private) and checks them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from autogen_agentchat.teams import BaseGroupChat

from agentmesh.integrations.autogen.errors import TeamLayoutError

_TEAM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class TeamLayout:
    """The names a team's runtimes must agree on."""

    team_id: str
    manager: str
    members: tuple[str, ...]

    def __post_init__(self) -> None:
        if not _TEAM_ID.match(self.team_id):
            raise TeamLayoutError("team id must be 1..64 letters, digits, '_' or '-'")
        if not self.members or len(set(self.members)) != len(self.members):
            raise TeamLayoutError("a team has one or more members with distinct names")

    @property
    def group_topic(self) -> str:
        return f"group_topic_{self.team_id}"

    @property
    def output_topic(self) -> str:
        return f"output_topic_{self.team_id}"

    @property
    def manager_type(self) -> str:
        return f"{self.manager}_{self.team_id}"

    def member_type(self, name: str) -> str:
        """The agent type (and own topic) of member ``name``.

        Raises:
            TeamLayoutError: ``name`` is not a member.
        """
        if name not in self.members:
            raise TeamLayoutError(f"{name!r} is not a member of team {self.team_id}")
        return f"{name}_{self.team_id}"

    @property
    def member_types(self) -> dict[str, str]:
        return {name: self.member_type(name) for name in self.members}

    @property
    def topics(self) -> frozenset[str]:
        """Every topic type of the team: group, output, manager and member topics."""
        return frozenset(
            (self.group_topic, self.output_topic, self.manager_type, *self.member_types.values())
        )

    @classmethod
    def of(cls, team: BaseGroupChat) -> TeamLayout:
        """The layout of a constructed team.

        Raises:
            TeamLayoutError: the team's topic names are not the ones this layout
                computes (an AgentChat version with another naming scheme).
        """
        layout = cls(
            team_id=private_attribute(team, "_team_id"),
            manager=private_attribute(team, "_group_chat_manager_name"),
            members=tuple(private_attribute(team, "_participant_names")),
        )
        expected = (
            layout.group_topic,
            layout.output_topic,
            layout.manager_type,
            [layout.member_type(name) for name in layout.members],
        )
        actual = (
            private_attribute(team, "_group_topic_type"),
            private_attribute(team, "_output_topic_type"),
            private_attribute(team, "_group_chat_manager_topic_type"),
            list(private_attribute(team, "_participant_topic_types")),
        )
        if expected != actual:
            raise TeamLayoutError(f"unexpected team topic names {actual!r}: AgentChat changed?")
        return layout

    def encode(self) -> str:
        return json.dumps(
            {"team_id": self.team_id, "manager": self.manager, "members": list(self.members)}
        )

    @classmethod
    def decode(cls, text: str) -> TeamLayout:
        """Raises: TeamLayoutError: not a layout."""
        try:
            data = json.loads(text)
            return cls(str(data["team_id"]), str(data["manager"]), tuple(data["members"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise TeamLayoutError(f"malformed team layout: {type(exc).__name__}") from None


def private_attribute(team: BaseGroupChat, name: str) -> Any:
    """Read an attribute AgentChat keeps private (its naming is checked by :meth:`TeamLayout.of`).

    Raises:
        TeamLayoutError: the team has no such attribute (another AgentChat version).
    """
    try:
        return getattr(team, name)
    except AttributeError:
        raise TeamLayoutError(f"the team has no {name}: AgentChat changed?") from None


__all__ = ["TeamLayout", "private_attribute"]
