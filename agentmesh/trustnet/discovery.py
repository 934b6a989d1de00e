"""Trust-ranked discovery: the join of the directory (registry) and the trust engine."""

from __future__ import annotations

from agentmesh.directory.directory import Directory
from registry import AgentCard
from trust.engine import TrustEngine
from trust.rings import RING_SANDBOX
from trust.selection import SelectionPolicy


def find_trusted(
    directory: Directory,
    engine: TrustEngine,
    capability: str,
    *,
    worst_ring: int = RING_SANDBOX,
    version: str | None = None,
    policy: SelectionPolicy | None = None,
) -> list[AgentCard]:
    """Live agents offering ``capability``, best global trust first.

    Agents the evidence shows to be bad are left out (the distrust filter of
    :class:`~trust.selection.SelectionPolicy`, rule 1), whatever their ring.

    Args:
        worst_ring: leave out agents whose ring is above this (3 keeps everyone,
            2 keeps only rings 1 and 2).
        version: only this capability version.
        policy: the selection policy whose filter applies (default: the engine's
            with ``SelectionConfig()``).

    Raises:
        ValueError: ``worst_ring`` is not 1, 2 or 3.
    """
    if worst_ring not in (1, 2, 3):
        raise ValueError("worst_ring must be 1, 2 or 3 (ring 0 is never an agent)")
    policy = policy or SelectionPolicy(engine)
    cards = directory.find(capability, version=version, rank=engine.score)
    return [
        card
        for card in cards
        if engine.ring(card.did) <= worst_ring
        and not (policy.config.distrust_filter and policy.distrusted(card.did))
    ]


class TrustedFinder:
    """A saga ``SubstituteFinder``: directory candidates in a selection policy's order.

    The coordinator tries candidates in the order returned, so substitute choice
    follows the policy's rules: the distrusted are never offered, newcomers are
    explored at the policy's configured rate (reported by ``policy.explored_share``),
    the rest are tried in proportion to their global trust.
    """

    def __init__(
        self,
        directory: Directory,
        engine: TrustEngine,
        *,
        policy: SelectionPolicy | None = None,
        worst_ring: int = RING_SANDBOX,
        version: str | None = None,
    ) -> None:
        self.directory = directory
        self.engine = engine
        self.policy = policy or SelectionPolicy(engine)
        self.worst_ring = worst_ring
        self.version = version

    async def candidates(self, capability: str) -> list[str]:
        cards = self.directory.find(capability, version=self.version)
        dids = [c.did for c in cards if self.engine.ring(c.did) <= self.worst_ring]
        return self.policy.order(dids)
