"""TrustEngine: evidence folding, unknown vs distrusted, propagation, rings, explain."""

from __future__ import annotations

import random

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iatp.clock import ManualClock
from tests.trust.conftest import EngineFactory, dids, receipt
from trust import (
    DriftDetected,
    EvidenceFromFuture,
    InvalidEvidence,
    InvalidTrustConfig,
    Outcome,
    RingChanged,
    SelfEvidence,
    TrustConfig,
    TrustEngine,
    TrustEvent,
)

T0 = 1_700_000_000_000
A, B, C, D, E = dids(5)


def test_unknown_is_not_distrusted(make_engine: EngineFactory) -> None:
    engine = make_engine([A])
    for _ in range(10):
        engine.record(receipt(A, B, Outcome.FAILURE))
    unknown, distrusted = engine.local(A, C), engine.local(A, B)
    assert (unknown.estimate, unknown.evidence, unknown.known) == (0.5, 0.0, False)
    assert distrusted.known
    assert distrusted.evidence == pytest.approx(10.0)
    assert distrusted.estimate < 0.1
    engine.recompute()
    assert engine.score(C) == 0.0
    assert engine.ring(C) == 3
    assert engine.explain(C).known is False
    assert engine.explain(B).known is True


def test_duplicates_count_once(make_engine: EngineFactory) -> None:
    engine = make_engine([A])
    r = receipt(A, B)
    assert engine.record(r) is True
    assert engine.record(r) is False
    assert engine.local(A, B).positive == pytest.approx(1.0)
    assert engine.has_seen(r.receipt_id)


def test_rejections_are_typed_and_leave_no_trace(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    engine = make_engine([A])
    with pytest.raises(SelfEvidence) as self_err:
        engine.record(receipt(B, B))
    assert self_err.value.code == "self_evidence"
    with pytest.raises(EvidenceFromFuture) as future_err:
        engine.record(receipt(A, B, at_ms=clock.now_ms() + 3_600_000))
    assert future_err.value.code == "evidence_from_future"
    with pytest.raises(InvalidEvidence):
        engine.record(receipt(A, "not-a-did"))
    with pytest.raises(InvalidEvidence):
        engine.record(receipt(E, "not-a-did"))  # E must not be added either
    with pytest.raises(InvalidEvidence):
        engine.record("receipt")  # type: ignore[arg-type]
    assert engine.agents == [A]
    assert engine.rejections == {
        "self_evidence": 1,
        "evidence_from_future": 1,
        "invalid_evidence": 3,
    }


def test_evidence_decays_with_the_half_life(make_engine: EngineFactory) -> None:
    engine = make_engine([A], half_life_ms=1000)
    engine.record(receipt(A, B, at_ms=T0))
    assert engine.local(A, B, at_ms=T0 + 1000).positive == pytest.approx(0.5)
    assert engine.local(A, B, at_ms=T0 + 3000).positive == pytest.approx(0.125)
    # A late receipt is decayed to the edge's time, as if it had arrived in order.
    engine.record(receipt(A, B, at_ms=T0 - 1000))
    assert engine.local(A, B, at_ms=T0).positive == pytest.approx(1.5)


def _honest_world(seed: int, count: int = 30) -> tuple[list[str], list[object]]:
    agents = dids(count, start=100)
    rng = random.Random(seed)
    receipts = []
    for k in range(600):
        o, s = rng.sample(range(count), 2)
        outcome = Outcome.SUCCESS if rng.random() < 0.9 else Outcome.FAILURE
        receipts.append(receipt(agents[o], agents[s], outcome, at_ms=T0 - 600_000 + k * 1000))
    return agents, receipts


def test_arrival_order_does_not_change_the_result() -> None:
    agents, receipts = _honest_world(7)
    results = []
    for seed in (1, 2, 3):
        shuffled = list(receipts)
        random.Random(seed).shuffle(shuffled)
        engine = TrustEngine(pre_trusted=agents[:3], clock=ManualClock(T0))
        engine.record_many(shuffled)  # type: ignore[arg-type]
        engine.recompute(at_ms=T0)
        results.append(
            (
                [engine.score(d) for d in agents],
                [engine.local(agents[0], d).positive for d in agents],
            )
        )
    for scores, local in results[1:]:
        assert scores == pytest.approx(results[0][0], abs=1e-9)
        assert local == pytest.approx(results[0][1], rel=1e-12)


def test_agents_nobody_trusts_cannot_lift_each_other(make_engine: EngineFactory) -> None:
    honest, ring = dids(5, start=10), dids(20, start=50)
    engine = make_engine(honest[:2])
    for i, o in enumerate(honest):
        engine.record(receipt(o, honest[(i + 1) % 5], weight=5.0))
    for o in ring:
        for s in ring:
            if o != s:
                engine.record(receipt(o, s, weight=10.0))
    for _ in range(3):
        engine.recompute()
    assert all(engine.score(s) == 0.0 for s in ring)
    assert all(engine.ring(s) == 3 for s in ring)
    assert all(engine.score(h) > 0.2 for h in honest)


def test_global_trust_weights_opinions_by_the_observers_trust(make_engine: EngineFactory) -> None:
    engine = make_engine([A])
    engine.record(receipt(A, B, weight=5.0))  # the anchor vouches for B
    engine.record(receipt(C, D, weight=5.0))  # C is nobody: its opinion of D is worth nothing
    engine.recompute()
    assert engine.score(B) > 0.3
    assert engine.score(D) == 0.0


def test_promotion_is_gradual_and_ring_zero_never_assigned(make_engine: EngineFactory) -> None:
    engine = make_engine([A], ring1_score=0.4, ring1_evidence=20.0, promotion_rounds=2)
    for _ in range(30):
        engine.record(receipt(A, B, weight=2.0))
        engine.record(receipt(B, A, weight=2.0))
    seen = []
    for _ in range(6):
        engine.recompute()
        seen.append(engine.ring(B))
    assert seen[0] == 3
    assert sorted(set(seen)) == [1, 2, 3]
    assert seen == sorted(seen, reverse=True)
    assert min(engine.ring(d) for d in engine.agents) >= 1


def test_recompute_demotes_at_once(make_engine: EngineFactory, clock: ManualClock) -> None:
    engine = make_engine([A], promotion_rounds=1)
    for _ in range(10):
        engine.record(receipt(A, B, at_ms=clock.now_ms()))
    engine.recompute()
    assert engine.ring(B) == 2
    for _ in range(30):
        engine.record(receipt(A, B, Outcome.FAILURE, at_ms=clock.now_ms()))
    engine.recompute()
    assert engine.ring(B) == 3


def test_drift_demotes_before_the_next_recompute(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    engine = make_engine([A], promotion_rounds=1)
    events: list[TrustEvent] = []
    engine.add_listener(events.append)
    for _ in range(100):
        clock.advance(1000)
        engine.record(receipt(A, B, at_ms=clock.now_ms()))
    engine.recompute()
    assert engine.ring(B) == 2
    before = engine.score(B)
    bad = 0
    while engine.ring(B) != 3:
        clock.advance(1000)
        engine.record(receipt(A, B, Outcome.FAILURE, at_ms=clock.now_ms()))
        bad += 1
        assert bad <= 10
    drift = [e for e in events if isinstance(e, DriftDetected)]
    change = [e for e in events if isinstance(e, RingChanged) and e.reason == "drift"]
    assert len(drift) == 1
    assert drift[0].did == B
    assert change[0].demotion
    assert change[0].receipt_id == drift[0].receipt_id
    assert engine.score(B) < before * 0.2
    assert engine.explain(B).drift == drift[0]
    assert engine.flagged(B)


def test_untrusted_observers_cannot_trigger_drift(make_engine: EngineFactory) -> None:
    sybils = dids(10, start=200)
    engine = make_engine([A])
    for _ in range(50):
        engine.record(receipt(A, B))
    engine.recompute()
    for s in sybils:
        for _ in range(20):
            engine.record(receipt(s, B, Outcome.POLICY_VIOLATION, weight=10.0))
    assert not engine.flagged(B)


def test_action_divergence_raises_drift(make_engine: EngineFactory, clock: ManualClock) -> None:
    engine = make_engine([A])
    kinds: list[str] = []
    engine.add_listener(lambda e: kinds.append(e.kind) if isinstance(e, DriftDetected) else None)
    for i in range(100):
        engine.record(receipt(A, B, action=("read", "search")[i % 2], at_ms=clock.now_ms()))
    assert kinds == []
    for _ in range(25):
        engine.record(receipt(A, B, action="delete_everything", at_ms=clock.now_ms()))
    assert kinds == ["action_divergence"]


def test_drift_flag_clears_after_clean_streak(make_engine: EngineFactory) -> None:
    engine = make_engine([A], recovery_successes=5)
    for _ in range(10):
        engine.record(receipt(A, B, Outcome.PROTOCOL_VIOLATION))
    assert engine.flagged(B)
    for _ in range(5):
        engine.record(receipt(A, B))
    assert not engine.flagged(B)
    assert engine.ring(B) == 3  # promotion is earned again through recomputes


def test_a_failing_listener_does_not_break_the_engine(make_engine: EngineFactory) -> None:
    engine = make_engine([A])

    def boom(event: TrustEvent) -> None:
        raise RuntimeError("listener bug")

    seen: list[TrustEvent] = []
    engine.add_listener(boom)
    remove = engine.add_listener(seen.append)
    for _ in range(10):
        engine.record(receipt(A, B, Outcome.POLICY_VIOLATION))
    assert seen
    remove()
    count = len(seen)
    for _ in range(10):
        engine.record(receipt(A, C, Outcome.POLICY_VIOLATION))
    assert len(seen) == count


def test_explain_names_components_and_receipts(make_engine: EngineFactory) -> None:
    engine = make_engine([A, C])
    big = receipt(A, B, weight=9.0)
    engine.record(big)
    engine.record(receipt(C, B, weight=1.0))
    engine.record(receipt(D, B, Outcome.FAILURE, weight=1.0))
    engine.recompute()
    ex = engine.explain(B)
    assert ex.score == engine.score(B)
    assert ex.ring == engine.ring(B)
    assert ex.receipts[0].receipt_id == big.receipt_id
    assert {e.observer for e in ex.endorsers[:2]} == {A, C}
    assert ex.endorsers[2].observer == D
    assert ex.endorsers[2].contribution == 0.0
    assert ex.positive == pytest.approx(10.0)
    assert ex.negative == pytest.approx(1.0)
    assert sum(e.contribution for e in ex.endorsers) <= ex.global_trust + 1e-9


def test_networkx_export(make_engine: EngineFactory) -> None:
    engine = make_engine([A])
    engine.record(receipt(A, B))
    engine.recompute()
    graph = engine.to_networkx()
    assert isinstance(graph, nx.DiGraph)
    assert graph.edges[A, B]["positive"] == pytest.approx(1.0)
    assert graph.nodes[A]["pre_trusted"] is True
    assert graph.nodes[B]["ring"] == engine.ring(B)


def test_top_orders_by_score(make_engine: EngineFactory) -> None:
    engine = make_engine([A])
    engine.record(receipt(A, B, weight=5.0))
    engine.record(receipt(A, C, weight=1.0))
    engine.recompute()
    ranked = [d for d, _, _ in engine.top(3)]
    assert ranked.index(B) < ranked.index(C)


@pytest.mark.parametrize(
    "bad",
    [
        {"half_life_ms": 0},
        {"damping": 1.0},
        {"ring2_score": 0.9, "ring1_score": 0.5},
        {"tolerance": float("nan")},
        {"drift_penalty": 1.0},
        {"action_window": 1},
        {"soft_drift_confirm": 0.0},
    ],
)
def test_bad_config_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidTrustConfig) as err:
        TrustConfig(**bad)  # type: ignore[arg-type]
    assert err.value.code == "invalid_trust_config"


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 7), st.integers(0, 7), st.sampled_from(Outcome), st.floats(0.1, 10)
        ),
        max_size=60,
    ),
    st.integers(0, 3),
)
def test_scores_are_bounded_and_trust_is_a_distribution(
    events: list[tuple[int, int, Outcome, float]], anchors: int
) -> None:
    agents = dids(8, start=300)
    engine = TrustEngine(pre_trusted=agents[:anchors], clock=ManualClock(T0))
    for o, s, outcome, weight in events:
        if o != s:
            engine.record(receipt(agents[o], agents[s], outcome, at_ms=T0, weight=weight))
    engine.recompute(cold=True)
    for did in engine.agents:
        assert 0.0 <= engine.score(did) <= 1.0
        assert engine.ring(did) in (1, 2, 3)
        assert 0.0 <= engine.local(agents[0], did).estimate <= 1.0
    if engine.agents:
        total = sum(engine.explain(d).global_trust for d in engine.agents)
        assert total == pytest.approx(1.0, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 50_000), st.floats(0.1, 10), st.booleans()),
        min_size=1,
        max_size=25,
    ),
    st.randoms(use_true_random=False),
)
def test_decayed_evidence_is_the_closed_form_in_any_order(
    events: list[tuple[int, float, bool]], rng: random.Random
) -> None:
    half_life = 10_000
    evaluate_at = T0 + 60_000
    expected_pos = sum(
        w * 2 ** (-(evaluate_at - (T0 + t)) / half_life) for t, w, ok in events if ok
    )
    expected_neg = sum(
        w * 2 ** (-(evaluate_at - (T0 + t)) / half_life) for t, w, ok in events if not ok
    )
    shuffled = list(events)
    rng.shuffle(shuffled)
    engine = TrustEngine(
        pre_trusted=[A], clock=ManualClock(T0 + 60_000), config=TrustConfig(half_life_ms=half_life)
    )
    for t, w, ok in shuffled:
        outcome = Outcome.SUCCESS if ok else Outcome.FAILURE
        engine.record(receipt(A, B, outcome, at_ms=T0 + t, weight=w))
    local = engine.local(A, B, at_ms=evaluate_at)
    assert local.positive == pytest.approx(expected_pos, rel=1e-9, abs=1e-12)
    assert local.negative == pytest.approx(expected_neg, rel=1e-9, abs=1e-12)
    assert local.estimate == pytest.approx((expected_pos + 1) / (expected_pos + expected_neg + 2))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 4), st.integers(0, 4), st.sampled_from(Outcome), st.integers(0, 10**9)
        ),
        max_size=30,
    ),
    st.integers(0, 10**10),
)
def test_local_estimate_is_local_without_the_record(
    events: list[tuple[int, int, Outcome, int]], later_ms: int
) -> None:
    agents = dids(5, start=500)
    clock = ManualClock(T0)
    engine = TrustEngine(clock=clock)
    for o, s, outcome, at in events:
        if o != s:
            engine.record(receipt(agents[o], agents[s], outcome, at_ms=T0 - at))
    clock.advance(later_ms)  # decay can take the evidence to nothing
    subjects = [*agents, "did:key:zUnknown"]
    for observer in subjects:
        batch = engine.local_estimates(observer, subjects)
        for subject, batched in zip(subjects, batch, strict=True):
            full = engine.local(observer, subject)
            fast = engine.local_estimate(observer, subject)
            assert fast == (full.estimate if full.known else None)
            assert batched == fast
