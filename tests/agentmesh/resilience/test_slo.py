"""SLO maths: burn rate, error budget, bucketed windows, snapshots; specs from YAML."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentmesh.node.interceptors import InboundMessage, Outcome
from agentmesh.policy.errors import PolicyLoadError
from agentmesh.resilience import (
    LatencyObjective,
    SloSnapshot,
    SloSpec,
    SloTracker,
    budget_remaining,
    burn_rate,
    load_resilience,
    parse_resilience,
)
from agentmesh.resilience.slo import SloWindow
from iatp.clock import ManualClock
from iatp.envelope import new_envelope

objectives = st.floats(0.5, 0.9999)


@given(total=st.integers(0, 10_000), data=st.data(), objective=objectives)
def test_burn_rate_is_the_bad_fraction_over_the_allowed_fraction(
    total: int, data: st.DataObject, objective: float
) -> None:
    bad = data.draw(st.integers(0, total))
    rate = burn_rate(bad, total, objective)
    if total == 0:
        assert rate == 0.0
    else:
        assert math.isclose(rate * (1 - objective) * total, bad, rel_tol=1e-9, abs_tol=1e-9)
    assert budget_remaining(bad, total, objective) == pytest.approx(1.0 - rate)
    # Exactly the allowed error rate burns at 1: the budget lasts exactly the window.
    assert rate >= 0.0
    if bad == 0:
        assert budget_remaining(bad, total, objective) == 1.0


@given(total=st.integers(1, 10_000), data=st.data(), objective=objectives)
def test_burn_rate_grows_with_bad_events(total: int, data: st.DataObject, objective: float) -> None:
    bad = data.draw(st.integers(0, total - 1))
    assert burn_rate(bad + 1, total, objective) > burn_rate(bad, total, objective)


def test_burn_rate_examples_and_errors() -> None:
    assert burn_rate(1, 100, 0.99) == pytest.approx(1.0)
    assert burn_rate(10, 100, 0.99) == pytest.approx(10.0)
    assert budget_remaining(2, 100, 0.99) == pytest.approx(-1.0)  # overspent
    with pytest.raises(ValueError, match="objective"):
        burn_rate(0, 1, 1.0)
    with pytest.raises(ValueError, match="bad <= total"):
        burn_rate(2, 1, 0.9)


events = st.lists(
    st.tuples(st.integers(0, 5_000), st.booleans(), st.booleans()), min_size=0, max_size=200
)


@settings(max_examples=200, deadline=None)
@given(
    gaps=events,
    bucket=st.sampled_from([1, 10, 100, 1000]),
    window=st.integers(1, 20_000),
    extra=st.integers(0, 30_000),
)
def test_window_counts_match_a_brute_force_count(
    gaps: list[tuple[int, bool, bool]], bucket: int, window: int, extra: int
) -> None:
    horizon = max(window, bucket)
    counter = SloWindow(horizon, bucket)
    now = 1_000_000
    seen: list[tuple[int, bool, bool]] = []
    for gap, good, fast in gaps:
        now += gap
        counter.add(now, good=good, fast=fast)
        seen.append((now, good, fast))
    now += extra
    buckets = -(-window // bucket)
    first = now // bucket - buckets + 1
    inside = [(g, f) for at, g, f in seen if first <= at // bucket <= now // bucket]
    counts = counter.counts(now, window)
    assert counts.total == len(inside)
    assert counts.good == sum(g for g, _ in inside)
    assert counts.fast == sum(f for _, f in inside)


def spec(**fields: object) -> SloSpec:
    base: dict[str, object] = {"capability": "summarize", "success_rate": 0.99, "window_s": 60}
    return SloSpec.model_validate({**base, **fields})


def test_snapshot_of_success_and_latency_objectives() -> None:
    clock = ManualClock(start_ms=0)
    tracker = SloTracker(
        [
            spec(
                latency=LatencyObjective(threshold_ms=200, objective=0.9),
                burn_windows_s=(10, 60),
                alert_burn_rate=5.0,
            )
        ],
        clock=clock,
    )
    assert tracker.snapshot()[0].success_rate == 1.0  # no events yet
    for i in range(100):  # 100 s ago .. : 1 failure, 5 slow answers, over 50 s
        clock.set(i * 500)
        assert tracker.record("summarize", ok=i != 0, latency_ms=300 if i < 5 else 50)
    assert not tracker.record("other", ok=True, latency_ms=1)
    snap = tracker.snapshot()[0]
    assert snap == SloSnapshot(
        capability="summarize",
        objective=0.99,
        latency_objective=0.9,
        latency_threshold_ms=200,
        window_s=60,
        total=100,
        rejected=0,
        success_rate=0.99,
        latency_ok_rate=0.95,
        # success: 1 bad of 100 at 0.99 -> burn 1.0, 0 left; latency: 5/100 at 0.9 -> 0.5 left
        error_budget_remaining=pytest.approx(0.0),  # type: ignore[arg-type]
        burn_rate=0.0,  # the last 10 s were clean
        burn_rate_long=pytest.approx(1.0),  # type: ignore[arg-type]
        burning=False,
    )
    clock.advance(1_000)
    for _ in range(20):
        tracker.record("summarize", ok=False, latency_ms=10)
    burning = tracker.snapshot()[0]
    assert burning.burn_rate == pytest.approx((20 / 38) / 0.01)  # last 10 s: 18 old, 20 new
    assert burning.burning
    assert burning.error_budget_remaining < 0
    clock.advance(120_000)  # everything ages out of the window
    assert tracker.snapshot()[0].total == 0


def test_latency_only_spec_and_pattern_matching() -> None:
    clock = ManualClock(start_ms=0)
    tracker = SloTracker(
        [SloSpec(capability="search.*", latency=LatencyObjective(threshold_ms=100, objective=0.5))],
        clock=clock,
    )
    tracker.record("search.web", ok=False, latency_ms=10)
    tracker.record("search.docs", ok=True, latency_ms=500)
    snap = tracker.snapshot()[0]
    assert snap.objective is None
    assert snap.success_rate == 0.5
    assert snap.latency_ok_rate == 0.5
    assert snap.error_budget_remaining == pytest.approx(0.0)  # only latency counts
    assert snap.burn_rate == pytest.approx(1.0)


async def test_interceptor_path_counts_rejections_apart() -> None:
    clock = ManualClock(start_ms=0)
    tracker = SloTracker([spec()], clock=clock)

    def message(kind: str) -> InboundMessage:
        envelope = new_envelope(
            sender="did:key:z6MkAaaa",
            type=kind,
            recipient="did:key:z6MkBbbb",
            body=b"",
            now_ms=clock.now_ms(),
        )
        return InboundMessage(envelope, "subject", is_request=True)

    ok, failed, refused = message("summarize"), message("summarize"), message("summarize")
    for m in (ok, failed):
        assert (await tracker.check_inbound(m)).allowed
    clock.advance(250)
    await tracker.record_outcome(ok, Outcome.SUCCESS)
    await tracker.record_outcome(failed, Outcome.FAILURE)
    await tracker.record_outcome(refused, Outcome.REJECTED)  # refused before the handler
    snap = tracker.snapshot()[0]
    assert (snap.total, snap.rejected, snap.success_rate) == (2, 1, 0.5)


def test_spec_validation() -> None:
    with pytest.raises(ValidationError, match="neither"):
        SloSpec(capability="x")
    with pytest.raises(ValidationError):
        spec(success_rate=1.0)
    with pytest.raises(ValidationError, match="burn windows"):
        spec(burn_windows_s=(120, 60))
    assert spec(window_s=3600).windows_s == (300, 3600)


def test_resilience_file_loads_and_rejects_typos(tmp_path: Path) -> None:
    good = tmp_path / "resilience.yaml"
    good.write_text(
        """
version: 1
breakers: {failure_threshold: 3, cool_down_ms: 2000, jitter: 0.1, half_open_probes: 2}
cascade: {window_ms: 10000, min_callers: 2, action: quarantine}
slos:
  - capability: summarize
    success_rate: 0.99
    latency: {threshold_ms: 200, objective: 0.95}
    window_s: 3600
    burn_windows_s: [300, 3600]
""",
        encoding="utf-8",
    )
    document = load_resilience(good)
    assert document.breakers is not None
    assert document.breakers.half_open_probes == 2
    assert document.cascade is not None
    assert document.cascade.action == "quarantine"
    assert document.slos[0].latency == LatencyObjective(threshold_ms=200, objective=0.95)
    assert parse_resilience(None).breakers is None
    with pytest.raises(PolicyLoadError, match="unknown field"):
        parse_resilience({"breakers": {"failure_treshold": 3}}, file="r.yaml")
    with pytest.raises(PolicyLoadError, match=r"cascade\.action"):
        parse_resilience({"cascade": {"action": "explode"}})
