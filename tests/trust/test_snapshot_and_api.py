"""Bulk loading of local trust, the networkx export and the public API of ``trust``."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import trust
import trust.errors
from iatp.errors import AgentMeshError
from tests.trust.conftest import EngineFactory, dids, receipt
from trust import InvalidEvidence, Outcome

A, B, C = dids(3, start=500)


def test_loaded_snapshot_equals_recorded_evidence(make_engine: EngineFactory) -> None:
    recorded = make_engine([A])
    for _ in range(3):
        recorded.record(receipt(A, B))
    recorded.record(receipt(B, C, Outcome.FAILURE))
    loaded = make_engine([A])
    edges = list(recorded.local_trust_edges(at_ms=1_700_000_000_000))
    index = {d: i for i, d in enumerate(recorded.agents)}
    loaded.load_local_trust(
        recorded.agents,
        [index[e.observer] for e in edges],
        [index[e.subject] for e in edges],
        [e.positive for e in edges],
        [e.negative for e in edges],
        [e.at_ms for e in edges],
    )
    recorded.recompute(cold=True)
    loaded.recompute(cold=True)
    assert [loaded.score(d) for d in (A, B, C)] == [recorded.score(d) for d in (A, B, C)]


@pytest.mark.parametrize(
    ("observer", "subject", "positive", "why"),
    [
        ([0, 1], [1], [1.0], "differ in length"),
        ([0], [5], [1.0], "out of range"),
        ([1], [1], [1.0], "self-evidence"),
        ([0], [1], [-1.0], "finite"),
        ([0], [1], [float("inf")], "finite"),
        ([0, 0], [1, 1], [1.0, 1.0], "twice"),
    ],
)
def test_bad_snapshots_are_refused_whole(
    make_engine: EngineFactory,
    observer: list[int],
    subject: list[int],
    positive: list[float],
    why: str,
) -> None:
    engine = make_engine([A])
    n = len(observer)
    with pytest.raises(InvalidEvidence, match=why):
        engine.load_local_trust(
            [A, B, C], observer, subject, positive, [0.0] * len(positive), [0] * n
        )
    assert engine.agents == [A]
    assert list(engine.local_trust_edges()) == []


def test_snapshot_needs_an_empty_engine(make_engine: EngineFactory) -> None:
    engine = make_engine([A])
    engine.record(receipt(A, B))
    with pytest.raises(InvalidEvidence, match="without evidence"):
        engine.load_local_trust([A, B], [0], [1], [1.0], [0.0], [0])
    with pytest.raises(InvalidEvidence, match="did:key"):
        make_engine([A]).load_local_trust([A, "x"], np.array([0]), [1], [1.0], [0.0], [0])


def test_all_is_sorted_and_importable() -> None:
    names = trust.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(trust, name) is not None


def test_error_codes_are_stable_and_unique() -> None:
    classes = [
        c
        for _, c in inspect.getmembers(trust.errors, inspect.isclass)
        if issubclass(c, AgentMeshError) and c.__module__ == "trust.errors"
    ]
    assert len(classes) >= 8
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    assert all(issubclass(c, trust.TrustError) for c in classes)
    for c in classes:
        assert c.__name__ in (trust.errors.__doc__ or "")
