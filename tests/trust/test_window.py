"""Receipt-id replay protection in bounded memory (``TrustConfig.receipt_horizon_ms``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iatp.clock import ManualClock
from tests.trust.conftest import EngineFactory, dids, receipt
from trust import InvalidTrustConfig, StaleReceipt, TrustConfig
from trust.window import ReceiptWindow

A, B, C = dids(3)
T0 = 1_700_000_000_000
HOUR = 3_600_000


@pytest.fixture(autouse=True)
def _late_clock(clock: ManualClock) -> None:
    clock.set(T0 + 1_000 * HOUR)  # every receipt of these tests is in the past


def test_a_replay_of_a_forgotten_receipt_is_refused_as_stale(make_engine: EngineFactory) -> None:
    engine = make_engine([A], receipt_horizon_ms=HOUR)
    old = receipt(A, B, at_ms=T0)
    assert engine.record(old)
    assert not engine.record(old)  # inside the horizon: a plain duplicate
    assert engine.record(receipt(A, C, at_ms=T0 + 2 * HOUR))  # moves the watermark on
    assert not engine.has_seen(old.receipt_id)  # the id is forgotten...
    before = engine.local(A, B, at_ms=T0 + 2 * HOUR)
    with pytest.raises(StaleReceipt) as refused:  # ...and the replay still never counts
        engine.record(old)
    assert refused.value.code == "stale_receipt"
    assert refused.value.receipt_id == old.receipt_id
    assert refused.value.horizon_floor_ms == T0 + HOUR
    assert engine.rejections["stale_receipt"] == 1
    assert engine.local(A, B, at_ms=T0 + 2 * HOUR) == before  # nothing applied


def test_a_fresh_receipt_older_than_the_horizon_is_refused(make_engine: EngineFactory) -> None:
    engine = make_engine([A], receipt_horizon_ms=HOUR)
    engine.record(receipt(A, B, at_ms=T0 + 5 * HOUR))
    assert engine.record(receipt(A, C, at_ms=T0 + 4 * HOUR))  # exactly on the floor: counts
    with pytest.raises(StaleReceipt):
        engine.record(receipt(A, C, at_ms=T0 + 4 * HOUR - 1))
    assert engine.replay_floor_ms == T0 + 4 * HOUR


def test_memory_for_ids_is_bounded_by_the_horizon(make_engine: EngineFactory) -> None:
    engine = make_engine([A], receipt_horizon_ms=HOUR)
    unbounded = make_engine([A])
    step = 60_000  # one receipt a minute for 50 hours
    for k in range(3_000):
        r = receipt(A, B if k % 2 else C, at_ms=T0 + k * step)
        engine.record(r)
        unbounded.record(r)
    assert engine.remembered_receipts == HOUR // step + 1  # the last hour, floor included
    assert unbounded.remembered_receipts == 3_000
    assert unbounded.replay_floor_ms is None
    # Forgetting ids changes no evidence: both engines hold the same local trust.
    at = T0 + 3_000 * step
    assert engine.local(A, B, at_ms=at) == unbounded.local(A, B, at_ms=at)


def test_horizon_must_exceed_the_future_skew() -> None:
    with pytest.raises(InvalidTrustConfig, match="receipt_horizon_ms"):
        TrustConfig(receipt_horizon_ms=1_000, max_future_skew_ms=1_000)
    with pytest.raises(ValueError, match="horizon_ms"):
        ReceiptWindow(0)


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(st.integers(0, 10_000), min_size=1, max_size=200),
    horizon=st.integers(1, 3_000),
)
def test_window_forgets_only_what_it_refuses(times: list[int], horizon: int) -> None:
    """Model check: an id is forgotten only once its time is below the floor for good."""
    window = ReceiptWindow(horizon)
    accepted: dict[str, int] = {}
    for k, at in enumerate(times):
        rid = f"r{k}"
        if window.is_stale(at):
            continue
        window.add(rid, at)
        accepted[rid] = at
        floor = max(accepted.values()) - horizon
        assert window.watermark_ms == max(accepted.values())
        for seen, seen_at in accepted.items():
            # remembered exactly when not stale: a forgotten id can never be accepted again
            assert (seen in window) == (seen_at >= floor)
        assert len(window) == sum(1 for t in accepted.values() if t >= floor)
    restored = ReceiptWindow(horizon)
    restored.restore(window.watermark_ms, window.entries())
    assert restored.entries() == window.entries()
    assert restored.floor_ms == window.floor_ms
