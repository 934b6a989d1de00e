"""Injected clocks."""

from __future__ import annotations

import time

import pytest

from iatp.clock import Clock, ManualClock, SystemClock


def test_manual_clock_starts_where_told_and_advances() -> None:
    clock = ManualClock(start_ms=1_000)
    assert clock.now_ms() == 1_000
    clock.advance(250)
    assert clock.now_ms() == 1_250
    clock.advance(0)
    assert clock.now_ms() == 1_250


def test_manual_clock_cannot_advance_backwards() -> None:
    clock = ManualClock(start_ms=5_000)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    assert clock.now_ms() == 5_000


def test_manual_clock_set_moves_forward_but_never_backwards() -> None:
    clock = ManualClock(start_ms=5_000)
    clock.set(9_000)
    assert clock.now_ms() == 9_000
    clock.set(9_000)
    assert clock.now_ms() == 9_000
    with pytest.raises(ValueError, match="backwards"):
        clock.set(8_999)
    assert clock.now_ms() == 9_000


def test_system_clock_roughly_equals_time_time() -> None:
    clock = SystemClock()
    before = time.time() * 1000
    now = clock.now_ms()
    after = time.time() * 1000
    assert isinstance(now, int)
    assert before - 5 <= now <= after + 5


def test_system_clock_is_monotonic_enough_and_advances() -> None:
    clock = SystemClock()
    first = clock.now_ms()
    time.sleep(0.02)
    assert clock.now_ms() >= first + 15


def test_both_clocks_satisfy_the_clock_protocol() -> None:
    assert isinstance(ManualClock(), Clock)
    assert isinstance(SystemClock(), Clock)
    assert not isinstance(object(), Clock)
