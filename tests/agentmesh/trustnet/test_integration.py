"""The agreed seams: the policy RingEnforcer reads rings from the engine; discovery ranks by it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agentmesh.policy.errors import RingDenied
from agentmesh.policy.rings import RingEnforcer
from agentmesh.trustnet import ReceiptLedger, find_trusted
from iatp.clock import ManualClock
from tests.agentmesh.trustnet.test_ledger import AGENTS, T0, signed
from tests.conftest import TransportFactory
from trust import Outcome, TrustEngine


async def test_a_drift_demotion_reaches_the_ring_enforcer_at_once(
    transport_factory: TransportFactory, uid: str
) -> None:
    anchor, agent = AGENTS[0], AGENTS[1]
    engine = TrustEngine(pre_trusted=[anchor.did], clock=ManualClock(T0 + 10_000))
    enforcer = RingEnforcer([engine], {1: ["*"], 2: ["tools.*"], 3: []})
    ledger = await ReceiptLedger.open(await transport_factory.new("n"), engine, mesh=uid)
    for k in range(40):
        await ledger.publish(signed(anchor, agent, k))
    await ledger.catch_up(timeout=10)
    for _ in range(3):
        engine.recompute()
    assert enforcer.check(agent.did, "tools.search") == 2
    for k in range(100, 110):
        await ledger.publish(signed(anchor, agent, k, Outcome.POLICY_VIOLATION))
    await ledger.catch_up(timeout=10)  # no recompute in between
    with pytest.raises(RingDenied):
        enforcer.check(agent.did, "tools.search")
    assert enforcer.ring(agent.did) == 3
    await ledger.aclose()


@dataclass
class Card:
    did: str


class StubDirectory:
    """Stands in for Directory.find: returns the cards ranked by ``rank``."""

    def __init__(self, dids: list[str]) -> None:
        self.cards = [Card(d) for d in dids]

    def find(
        self, capability: str, *, version: str | None = None, rank: object = None
    ) -> list[Card]:
        assert callable(rank)
        return sorted(self.cards, key=lambda c: (-rank(c.did), c.did))


def test_find_trusted_ranks_by_score_and_filters_by_ring() -> None:
    anchor, good, fair, stranger = (a.did for a in AGENTS[:4])
    engine = TrustEngine(pre_trusted=[anchor], clock=ManualClock(T0 + 10_000))
    for k in range(30):
        engine.record(signed(AGENTS[0], AGENTS[1], k).receipt)
    for k in range(30, 36):
        engine.record(signed(AGENTS[0], AGENTS[2], k).receipt)
    for _ in range(3):
        engine.recompute()
    directory = StubDirectory([stranger, fair, good])
    ranked = find_trusted(directory, engine, "search")  # type: ignore[arg-type]
    assert [c.did for c in ranked][:2] == [good, fair]
    sandboxed = {c.did for c in find_trusted(directory, engine, "search", worst_ring=2)}  # type: ignore[arg-type]
    assert stranger not in sandboxed
    with pytest.raises(ValueError, match="ring 0"):
        find_trusted(directory, engine, "search", worst_ring=0)  # type: ignore[arg-type]
