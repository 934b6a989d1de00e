"""Rater credibility: a capacity-bounded vouch flow, apart from service trust."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.trust.conftest import EngineFactory, dids, receipt
from trust import Outcome
from trust.credibility import rater_flow

CAPACITY, DECAY = 16.0, 2.0


def _depths(observer: list[int], subject: list[int], n: int, seeds: list[int]) -> list[int]:
    """BFS depth of every agent along the edges (-1: unreached)."""
    depth = [-1] * n
    for s in seeds:
        depth[s] = 0
    frontier = list(seeds)
    while frontier:
        nxt = []
        for o, s in zip(observer, subject, strict=True):
            if o in frontier and depth[s] < 0:
                depth[s] = depth[o] + 1
                nxt.append(s)
        frontier = sorted(set(nxt))
    return depth


@st.composite
def attacked_graphs(draw: st.DrawFn) -> tuple[list[int], list[int], int, int, list[int]]:
    """(observers, subjects, honest count, agent count, attack-edge tails)."""
    honest = draw(st.integers(3, 14))
    sybils = draw(st.integers(1, 60))
    n = honest + sybils
    pairs: set[tuple[int, int]] = set()
    for _ in range(draw(st.integers(0, 4 * honest))):
        o, s = draw(st.integers(0, honest - 1)), draw(st.integers(0, honest - 1))
        if o != s:
            pairs.add((o, s))
    for _ in range(draw(st.integers(0, 6 * sybils))):  # the Sybils vouch for each other freely
        o, s = draw(st.integers(honest, n - 1)), draw(st.integers(honest, n - 1))
        if o != s:
            pairs.add((o, s))
    for s in range(honest, n):  # and for honest agents (that earns them nothing)
        pairs.add((s, draw(st.integers(0, honest - 1))))
    tails = draw(st.lists(st.integers(0, honest - 1), min_size=1, max_size=3, unique=True))
    for u in tails:  # k attack edges: honest agents confused into vouching for a Sybil
        pairs.add((u, draw(st.integers(honest, n - 1))))
    ordered = sorted(pairs)
    return [o for o, _ in ordered], [s for _, s in ordered], honest, n, tails


@settings(max_examples=150, deadline=None)
@given(attacked_graphs(), st.integers(1, 3))
def test_a_sybil_region_behind_k_attack_edges_holds_o_k_credibility(
    graph: tuple[list[int], list[int], int, int, list[int]], seed_count: int
) -> None:
    observer, subject, honest, n, tails = graph
    seeds = list(range(min(seed_count, honest)))
    credibility = rater_flow(
        np.asarray(observer, dtype=np.int64),
        np.asarray(subject, dtype=np.int64),
        np.ones(len(observer), dtype=bool),
        n,
        np.asarray(seeds, dtype=np.int64),
        capacity=CAPACITY,
        decay=DECAY,
    )
    assert np.all((credibility >= 0) & (credibility <= 1))
    assert np.all(credibility[seeds] == 1.0)
    depth = _depths(observer, subject, n, seeds)
    # The bound of trust/credibility.py: sum over attack-edge tails of cap(depth) - 1,
    # whatever the number of Sybils and however they vouch for each other.
    bound = sum(max(1.0, CAPACITY / DECAY ** depth[u]) - 1.0 for u in tails if depth[u] >= 0)
    assert float(credibility[honest:].sum()) <= bound + 1e-9
    assert float(credibility[honest:].sum()) <= len(tails) * (CAPACITY - 1.0) + 1e-9


def test_more_sybils_do_not_buy_more_credibility() -> None:
    def sybil_mass(sybils: int) -> float:
        honest = 4
        n = honest + sybils
        edges = [(0, 1), (0, 2), (1, 3), (2, 3), (3, honest)]  # one attack edge, 3 -> first Sybil
        edges += [(a, b) for a in range(honest, n) for b in range(honest, n) if a != b]
        credibility = rater_flow(
            np.asarray([o for o, _ in edges], dtype=np.int64),
            np.asarray([s for _, s in edges], dtype=np.int64),
            np.ones(len(edges), dtype=bool),
            n,
            np.asarray([0], dtype=np.int64),
            capacity=CAPACITY,
            decay=DECAY,
        )
        return float(credibility[honest:].sum())

    masses = [sybil_mass(k) for k in (1, 10, 100)]
    assert masses[0] > 0
    assert max(masses) <= CAPACITY / DECAY**2 - 1.0 + 1e-9  # tail 3 is at depth 2


def test_no_seed_no_credibility() -> None:
    credibility = rater_flow(
        np.asarray([0, 1], dtype=np.int64),
        np.asarray([1, 0], dtype=np.int64),
        np.ones(2, dtype=bool),
        2,
        np.zeros(0, dtype=np.int64),
        capacity=CAPACITY,
        decay=DECAY,
    )
    assert not np.any(credibility)


def test_a_quiet_honest_requester_vouched_for_by_an_anchor_is_credible(
    make_engine: EngineFactory,
) -> None:
    anchor, provider, requester = dids(3, start=300)
    engine = make_engine([anchor])
    for _ in range(5):
        engine.record(receipt(anchor, provider))
        engine.record(receipt(requester, provider))
    engine.record(receipt(anchor, requester))  # it served once, well
    engine.recompute()
    # Its service trust is small, its reports count in full.
    share = engine.global_trust(requester) * len(engine.agents)
    assert share < 0.5
    assert engine.credibility_of(engine._ids[requester]) == 1.0


def test_share_policy_keeps_the_service_trust_credibility(make_engine: EngineFactory) -> None:
    anchor, provider, requester = dids(3, start=310)
    engine = make_engine([anchor], credibility="share")
    for _ in range(5):
        engine.record(receipt(anchor, provider))
        engine.record(receipt(requester, provider))
    engine.record(receipt(anchor, requester))
    engine.recompute()
    assert engine.credibility_of(engine._ids[requester]) < 1.0


def test_slanderers_reached_by_a_vouch_lose_credibility_by_accuracy(
    make_engine: EngineFactory,
) -> None:
    anchor, *honest = dids(6, start=320)
    slanderer = honest.pop()
    engine = make_engine([anchor])
    for h in honest:
        for _ in range(4):
            engine.record(receipt(anchor, h))
            for other in honest:
                if other != h:
                    engine.record(receipt(other, h))
            engine.record(receipt(slanderer, h, Outcome.FAILURE))
    engine.record(receipt(anchor, slanderer))  # it served the anchor well once
    for _ in range(3):
        engine.recompute()
    assert engine.credibility_of(engine._ids[honest[0]]) == 1.0
    assert engine.credibility_of(engine._ids[slanderer]) == 0.0
