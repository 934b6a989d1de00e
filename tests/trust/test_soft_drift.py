"""A failure-rate alarm contains at once and sandboxes only when confirmed."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from iatp.clock import ManualClock
from tests.trust.conftest import EngineFactory, dids, receipt
from trust import (
    MalformedSnapshot,
    Outcome,
    SelectionConfig,
    SelectionPolicy,
    TrustConfig,
    TrustEngine,
)
from trust.drift import SOFT_DRIFT, DriftMonitor
from trust.events import DriftDetected, RingChanged, TrustEvent
from trust.state import pack_state, unpack_state

A, B, C = dids(3, start=900)
# Only the failure-rate test can fire: the outcome CUSUM is out of reach.
SOFT_ONLY = {"cusum_threshold": 1e9, "promotion_rounds": 1, "ring1_promotion_rounds": 1}


def _established(
    make_engine: EngineFactory, clock: ManualClock
) -> tuple[TrustEngine, list[TrustEvent]]:
    """B and C with a long clean history; the events from then on."""
    engine = make_engine([A], ring1_score=0.4, **SOFT_ONLY)
    for _ in range(150):
        clock.advance(1000)
        engine.record(receipt(A, B, at_ms=clock.now_ms()))
        engine.record(receipt(A, C, at_ms=clock.now_ms()))
    for _ in range(3):
        engine.recompute()
    events: list[TrustEvent] = []
    engine.add_listener(events.append)
    return engine, events


def _fail_until(engine: TrustEngine, clock: ManualClock, events: list[TrustEvent], n: int) -> int:
    """Report B failing until ``n`` drift alarms were raised; returns the reports sent."""
    sent = 0
    while sum(isinstance(e, DriftDetected) for e in events) < n:
        clock.advance(1000)
        engine.record(receipt(A, B, Outcome.FAILURE, at_ms=clock.now_ms()))
        sent += 1
        assert sent <= 60, "no failure-rate alarm after 60 failures"
    return sent


def test_a_first_failure_rate_alarm_contains_without_demoting(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    engine, events = _established(make_engine, clock)
    ring = engine.ring(B)
    assert ring <= 2
    score = engine.score(B)
    _fail_until(engine, clock, events, 1)
    [alarm] = events
    assert isinstance(alarm, DriftDetected)
    assert alarm.kind == SOFT_DRIFT
    # contained: flagged, score cut, a trickle of work (probation)
    assert engine.flagged(B)
    assert not engine.sandboxed(B)
    assert engine.score(B) < 0.2 * score
    policy = SelectionPolicy(engine, SelectionConfig(explore=0.0), random.Random(1))
    picks = [policy.choose([B, C]).did for _ in range(1000)]
    assert 0 < picks.count(B) < 0.7 * picks.count(C)
    # not demoted, and not promoted while flagged
    engine.recompute()
    assert engine.ring(B) == ring
    assert not [e for e in events if isinstance(e, RingChanged)]


def test_a_second_alarm_before_recovery_confirms_and_sandboxes(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    engine, events = _established(make_engine, clock)
    _fail_until(engine, clock, events, 1)
    _fail_until(engine, clock, events, 2)
    first, second, change = events
    assert isinstance(first, DriftDetected)
    assert isinstance(second, DriftDetected)
    assert isinstance(change, RingChanged)
    assert change.reason == "drift"
    assert change.new_ring == 3
    assert change.receipt_id == second.receipt_id  # the confirming receipt is the evidence
    assert engine.sandboxed(B)
    assert engine.ring(B) == 3
    engine.recompute()
    assert engine.ring(B) == 3  # the floor holds it there
    # a third alarm is not raised while it is sandboxed
    for _ in range(30):
        engine.record(receipt(A, B, Outcome.FAILURE, at_ms=clock.now_ms()))
    assert len(events) == 3


def test_a_contained_agent_that_recovers_keeps_its_ring(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    engine, events = _established(make_engine, clock)
    ring = engine.ring(B)
    _fail_until(engine, clock, events, 1)
    for _ in range(TrustConfig().recovery_successes):
        clock.advance(1000)
        engine.record(receipt(A, B, at_ms=clock.now_ms()))
    assert not engine.flagged(B)
    assert not engine.sandboxed(B)
    engine.recompute()
    assert engine.ring(B) == ring
    assert len(events) == 1


def test_a_hard_alarm_sandboxes_at_once(make_engine: EngineFactory, clock: ManualClock) -> None:
    engine = make_engine([A], promotion_rounds=1, soft_drift_threshold=0)
    for _ in range(100):
        clock.advance(1000)
        engine.record(receipt(A, B, at_ms=clock.now_ms()))
    engine.recompute()
    assert engine.ring(B) == 2
    events: list[TrustEvent] = []
    engine.add_listener(events.append)
    for _ in range(10):
        engine.record(receipt(A, B, Outcome.FAILURE, at_ms=clock.now_ms()))
    assert [type(e) for e in events] == [DriftDetected, RingChanged]
    assert engine.sandboxed(B)
    assert engine.ring(B) == 3


def test_the_confirmation_state_survives_export_and_import(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    engine, events = _established(make_engine, clock)
    _fail_until(engine, clock, events, 1)
    restored = _copy(engine, make_engine)
    assert restored.flagged(B)
    assert not restored.sandboxed(B)
    confirmed: list[TrustEvent] = []
    restored.add_listener(confirmed.append)
    _fail_until(restored, clock, confirmed, 1)
    assert restored.sandboxed(B)
    assert restored.ring(B) == 3
    again = _copy(restored, make_engine)
    assert again.sandboxed(B)
    assert again.ring(B) == 3


def _copy(engine: TrustEngine, make_engine: EngineFactory) -> TrustEngine:
    copy = make_engine([A], ring1_score=0.4, **SOFT_ONLY)
    copy.load_state(unpack_state(pack_state(engine.export_state())))
    return copy


def test_the_least_reliable_honest_agents_are_never_sandboxed_on_a_long_run() -> None:
    # 7 % failures (honest quality 0.93, the worst the evaluation draws), 20
    # agents x 5,000 credible reports: a few contained at worst, none sandboxed.
    config = TrustConfig()
    rng = random.Random(3)
    alarms = sandboxed = 0
    for _ in range(20):
        monitor = DriftMonitor(config)
        for _ in range(5000):
            credibility = rng.uniform(0.2, 0.9)
            kind = monitor.observe(1.0 if rng.random() < 0.07 else 0.0, credibility, None, config)
            alarms += kind is not None
        sandboxed += monitor.sandboxed
    assert alarms <= 10  # <= 1 per 10^4 reports
    assert sandboxed == 0


def test_p0_is_the_rate_from_before_a_turn_for_about_as_long_as_the_history() -> None:
    config = TrustConfig()
    rng = random.Random(8)
    monitor = DriftMonitor(config)
    history = 0
    while monitor.seen < 600:  # blocks of 40, 40, 80, 160, 320: 640 reports at 5 %
        monitor.observe(1.0 if rng.random() < 0.05 else 0.0, 1.0, None, config)
        history += 1
    before = monitor.failure_rate(config)
    rates = []
    for _ in range(history // 2):  # a turn to 15 % bad that the test does not catch
        monitor.bernoulli = 0.0  # keep the test calm: only the learning is under test
        monitor.observe(1.0 if rng.random() < 0.15 else 0.0, 1.0, None, config)
        rates.append(monitor.failure_rate(config))
    assert set(rates) == {before}  # nothing of the turn learnt yet
    # a report-by-report lag of soft_drift_lag would have learnt most of them
    assert history // 2 > 4 * config.soft_drift_lag


def test_learning_stops_after_soft_drift_learning() -> None:
    config = TrustConfig(soft_drift_learning=100.0)
    monitor = DriftMonitor(config)
    for _ in range(1000):
        monitor.observe(0.0, 1.0, None, config)
    assert 100.0 <= monitor.seen < 400.0
    assert monitor.pending_seen == 0.0


@pytest.mark.parametrize("clear", [TrustConfig().soft_drift_clear, 0.0])
def test_probation_clears_an_honest_agent_that_never_runs_30_clean(
    make_engine: EngineFactory, clock: ManualClock, clear: float
) -> None:
    engine = make_engine([A], ring1_score=0.4, soft_drift_clear=clear, **SOFT_ONLY)
    for _ in range(150):
        clock.advance(1000)
        engine.record(receipt(A, B, at_ms=clock.now_ms()))
    for _ in range(3):
        engine.recompute()
    ring = engine.ring(B)
    events: list[TrustEvent] = []
    engine.add_listener(events.append)
    _fail_until(engine, clock, events, 1)
    for i in range(400):  # back to honest: one failure in 14 (7 %), never 30 clean
        clock.advance(1000)
        outcome = Outcome.FAILURE if i % 14 == 13 else Outcome.SUCCESS
        engine.record(receipt(A, B, outcome, at_ms=clock.now_ms()))
    assert len(events) == 1  # no confirmation
    assert engine.flagged(B) is (clear == 0.0)  # without probation it never clears
    engine.recompute()
    assert engine.ring(B) == ring


def test_a_young_agent_that_turns_before_its_first_block_is_tested_against_its_old_rate() -> None:
    # 35 reports at 1 failure in 20, then 50 % bad. Without the lag, the first block
    # (40 reports) closed 5 reports after the turn and learnt them: p0 0.05 -> 0.10.
    config = TrustConfig()
    monitor = DriftMonitor(config)
    for i in range(35):
        assert monitor.observe(1.0 if i % 20 == 19 else 0.0, 1.0, None, config) is None
    before = monitor.failure_rate(config)
    for sent in range(1, 41):
        rate = monitor.failure_rate(config)
        if monitor.observe(float(sent % 2), 1.0, None, config) == SOFT_DRIFT:
            break
    else:
        pytest.fail("a turn to 50 % bad raised no alarm in 40 reports")
    assert rate == before == config.baseline_rate
    assert sent <= 25


def test_p0_learns_only_from_reports_at_least_the_lag_old() -> None:
    config = TrustConfig()
    lag = config.soft_drift_lag
    monitor = DriftMonitor(config)
    for _ in range(2 * lag - 1):
        monitor.observe(0.0, 1.0, None, config)
    assert monitor.seen == 0.0  # lag reports matured, one short of the first block
    monitor.observe(0.0, 1.0, None, config)
    assert monitor.seen == lag
    assert monitor.fresh == lag


def test_a_block_from_after_a_turn_is_never_learnt() -> None:
    config = TrustConfig()
    rng = random.Random(5)
    monitor = DriftMonitor(config)
    while monitor.seen < 300:
        monitor.observe(1.0 if rng.random() < 0.05 else 0.0, 1.0, None, config)
    before = monitor.failure_rate(config)
    for _ in range(3000):  # 12 % bad, below p1: a slow turn the test takes long to see
        monitor.bernoulli = 0.0  # keep the test calm: only the learning is under test
        monitor.observe(1.0 if rng.random() < 0.12 else 0.0, 1.0, None, config)
    assert monitor.failure_rate(config) == before
    assert monitor.pending_seen > 2900  # held, not dropped: it joins once it fits
    for _ in range(6000):  # back to its old rate: the grown block now fits and joins
        monitor.bernoulli = 0.0
        monitor.observe(1.0 if rng.random() < 0.03 else 0.0, 1.0, None, config)
    assert monitor.seen > 2000
    assert before < monitor.failure_rate(config) < before + 0.05


def test_a_state_claiming_more_fresh_reports_than_it_holds_is_malformed(
    make_engine: EngineFactory, clock: ManualClock
) -> None:
    engine, _ = _established(make_engine, clock)
    state = engine.export_state()
    drift = [replace(d, fresh=len(d.recent) + 1) for d in state.drift]
    forged = replace(state, drift=tuple(drift))
    with pytest.raises(MalformedSnapshot, match="fresh"):
        unpack_state(pack_state(forged))


def test_holding_blocks_that_do_not_fit_leaves_an_honest_rate_unbiased() -> None:
    # Holding the blocks that come out high by chance biases p0 low unless the fit is
    # loose: 150 seeded honest agents at 7 % failures, p0 after 1,000 reports.
    config = TrustConfig()
    rng = random.Random(11)
    learnt = []
    for _ in range(150):
        monitor = DriftMonitor(config)
        for _ in range(1000):
            monitor.observe(
                1.0 if rng.random() < 0.07 else 0.0, rng.uniform(0.2, 0.9), None, config
            )
        learnt.append(monitor.failure_rate(config))
    assert sum(learnt) / len(learnt) >= 0.0675


def test_probation_confirms_on_the_sum_since_the_alarm_not_on_a_reflected_cusum() -> None:
    # After a first alarm the soft test is Wald's: clear at -soft_drift_clear, confirm
    # at +soft_drift_confirm, summed since the alarm. A reflected CUSUM restarted at
    # the alarm forgets the good reports in between and confirmed honest agents.
    config = TrustConfig(cusum_threshold=1e9)  # the failure-rate test only
    monitor = DriftMonitor(config)
    for i in range(400):
        monitor.observe(1.0 if i % 20 == 19 else 0.0, 1.0, None, config)
    while monitor.observe(1.0, 1.0, None, config) is None:
        pass
    assert monitor.flagged
    assert not monitor.sandboxed
    p0 = monitor.failure_rate(config)
    p1 = p0 + config.soft_drift_shift
    good, bad = math.log((1 - p1) / (1 - p0)), math.log(p1 / p0)
    reflected = 0.0
    for _ in range(config.recovery_successes - 1):  # good, short of a clean streak
        assert monitor.observe(0.0, 1.0, None, config) is None
        reflected = max(0.0, reflected + good)
    failures = 0
    crossed_h = None
    while monitor.observe(1.0, 1.0, None, config) is None:
        failures += 1
        reflected += bad
        if crossed_h is None and reflected >= config.soft_drift_threshold:
            crossed_h = failures
        assert failures < 30, "no confirmation"
    assert monitor.sandboxed
    assert crossed_h is not None
    assert crossed_h < failures  # a reflected CUSUM would have confirmed earlier
    assert monitor.probation >= config.soft_drift_confirm
