"""Speaker selection that only picks members the mesh still admits.

A member is admissible when at least one of its hosts is: not quarantined or
revoked, no drift alarm, ring at most the runtime's ``max_ring`` (the runtime's
:class:`~.routing.HostResolver` decides). Give a ``SelectorGroupChat`` either

* ``selector_func=selection.round_robin``: the next admissible member in team
  order, deterministic (no model call), or
* ``candidate_func=selection.candidates``: its model chooses among admissible members.

Before each choice the trust evidence of the last turn is settled (receipts
published and folded), so a member demoted by that very turn is not chosen.
Every skip is recorded in :attr:`MeshSelection.skipped` with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage

from agentmesh.integrations.autogen.runtime import MeshAgentRuntime
from agentmesh.integrations.autogen.team import TeamLayout

Thread = Sequence[BaseAgentEvent | BaseChatMessage]


@dataclass(frozen=True, slots=True)
class Skip:
    """``member`` was not selectable at turn ``turn`` because of ``reason``."""

    turn: int
    member: str
    reason: str


class MeshSelection:
    """Admissible members of a team, as seen by the coordinator's runtime.

    Args:
        runtime: the coordinator's runtime (its resolver and trust service).
        layout: the team's layout.
        settle_timeout: seconds to wait for the last turn's receipts to be folded.
    """

    def __init__(
        self, runtime: MeshAgentRuntime, layout: TeamLayout, *, settle_timeout: float = 5.0
    ) -> None:
        self.runtime = runtime
        self.layout = layout
        self.settle_timeout = settle_timeout
        self.skipped: list[Skip] = []
        self.turns = 0
        self._next = 0

    def why_not(self, member: str) -> str | None:
        """Why ``member`` is not admissible now (``None`` when it is)."""
        agent_type = self.layout.member_type(member)
        resolver = self.runtime.resolver
        hosts = resolver.hosts(agent_type)
        if not hosts:
            return "no live host (quarantined, revoked or gone)"
        if any(resolver.eligible(did) for did in hosts):
            return None
        trust = resolver.trust
        did = hosts[0]
        if trust is not None and trust.sandboxed(did):
            return f"drift alarm, ring {trust.ring(did)}"
        if trust is not None:
            return f"ring {trust.ring(did)} above {resolver.max_ring}"
        return "not eligible"

    async def settle(self) -> None:
        """Publish this runtime's queued receipts and fold the stream up to now."""
        trust = self.runtime.guards.trust
        if trust is not None:
            await trust.interceptor.flush(timeout=self.settle_timeout)
            await trust.ledger.catch_up(timeout=self.settle_timeout)

    async def admissible(self) -> list[str]:
        """The admissible members, in team order (records the others in :attr:`skipped`)."""
        await self.settle()
        self.turns += 1
        members = []
        for member in self.layout.members:
            reason = self.why_not(member)
            if reason is None:
                members.append(member)
            else:
                self.skipped.append(Skip(self.turns, member, reason))
        return members

    async def candidates(self, thread: Thread) -> list[str]:
        """``candidate_func`` for ``SelectorGroupChat`` (all members if none is admissible)."""
        return await self.admissible() or list(self.layout.members)

    async def round_robin(self, thread: Thread) -> str | None:
        """``selector_func``: the next admissible member after the previous pick.

        ``None`` (let the team's model decide) when no member is admissible.
        """
        admissible = set(await self.admissible())
        members = self.layout.members
        for step in range(len(members)):
            member = members[(self._next + step) % len(members)]
            if member in admissible:
                self._next = (members.index(member) + 1) % len(members)
                return member
        return None


__all__ = ["MeshSelection", "Skip"]
