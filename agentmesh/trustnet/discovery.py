"""Trust-ranked discovery: the join of the directory (registry) and the trust engine."""

from __future__ import annotations

from agentmesh.directory.directory import Directory
from registry import AgentCard
from trust.engine import TrustEngine
from trust.rings import RING_SANDBOX


def find_trusted(
    directory: Directory,
    engine: TrustEngine,
    capability: str,
    *,
    worst_ring: int = RING_SANDBOX,
    version: str | None = None,
) -> list[AgentCard]:
    """Live agents offering ``capability``, best global trust first.

    Args:
        worst_ring: leave out agents whose ring is above this (3 keeps everyone,
            2 keeps only rings 1 and 2).
        version: only this capability version.

    Raises:
        ValueError: ``worst_ring`` is not 1, 2 or 3.
    """
    if worst_ring not in (1, 2, 3):
        raise ValueError("worst_ring must be 1, 2 or 3 (ring 0 is never an agent)")
    cards = directory.find(capability, version=version, rank=engine.score)
    return [card for card in cards if engine.ring(card.did) <= worst_ring]
