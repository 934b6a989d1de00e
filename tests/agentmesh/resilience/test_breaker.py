"""The circuit breaker state machine, on an injected time: every transition, and properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentmesh.resilience import BreakerConfig, BreakerState, CallResult, CircuitBreaker
from agentmesh.resilience.breaker import Permit, Transition

FAILED, ANSWERED, IGNORED = CallResult.FAILED, CallResult.ANSWERED, CallResult.IGNORED


def breaker(**config: object) -> tuple[CircuitBreaker, list[Transition]]:
    seen: list[Transition] = []
    made = CircuitBreaker(
        BreakerConfig(**config),  # type: ignore[arg-type]
        rng=random.Random(7),
        on_transition=seen.append,
    )
    return made, seen


def state(b: CircuitBreaker) -> BreakerState:
    """The state as last moved (no time passes; a function, so mypy does not narrow it)."""
    return b.state


def fail(b: CircuitBreaker, now: int, times: int = 1) -> None:
    for _ in range(times):
        permit = b.admit(now)
        assert permit is not None
        b.settle(permit, FAILED, now, "request_timeout")


def test_closed_opens_after_threshold_consecutive_failures() -> None:
    b, seen = breaker(failure_threshold=3, cool_down_ms=1000, jitter=0.0)
    fail(b, 0, 2)
    assert state(b) is BreakerState.CLOSED
    assert b.consecutive_failures == 2
    fail(b, 10)
    assert state(b) is BreakerState.OPEN
    assert b.retry_at_ms == 1010
    assert [(t.before, t.after) for t in seen] == [(BreakerState.CLOSED, BreakerState.OPEN)]
    assert "3 consecutive failures (request_timeout)" in seen[0].reason
    assert b.opened == 1


def test_an_answer_resets_the_streak_and_ignored_results_change_nothing() -> None:
    b, _ = breaker(failure_threshold=3)
    fail(b, 0, 2)
    permit = b.admit(0)
    assert permit is not None
    b.settle(permit, IGNORED, 0)
    assert b.consecutive_failures == 2
    permit = b.admit(0)
    assert permit is not None
    b.settle(permit, ANSWERED, 0)
    assert b.consecutive_failures == 0
    fail(b, 0, 2)
    assert state(b) is BreakerState.CLOSED


def test_open_refuses_until_the_cool_down_then_half_open() -> None:
    b, seen = breaker(failure_threshold=1, cool_down_ms=1000, jitter=0.0)
    fail(b, 0)
    assert b.admit(999) is None
    assert b.rejected == 1
    assert b.state_at(999) is BreakerState.OPEN
    assert b.state_at(1000) is BreakerState.HALF_OPEN
    assert seen[-1].after is BreakerState.HALF_OPEN
    assert b.retry_at_ms is None


def test_half_open_lets_only_the_probes_through_and_closes_on_success() -> None:
    b, seen = breaker(failure_threshold=1, cool_down_ms=100, jitter=0.0, half_open_probes=2)
    fail(b, 0)
    first, second = b.admit(100), b.admit(100)
    assert first is not None
    assert first.probe
    assert second is not None
    assert second.probe
    assert b.admit(100) is None  # both probes are out
    b.settle(first, IGNORED, 101)  # a cancelled probe gives its slot back
    third = b.admit(101)
    assert third is not None
    b.settle(second, ANSWERED, 102)
    assert state(b) is BreakerState.CLOSED
    assert seen[-1].after is BreakerState.CLOSED
    b.settle(third, FAILED, 103)  # from the half-open generation: stale, ignored
    assert state(b) is BreakerState.CLOSED
    assert b.consecutive_failures == 0


def test_close_after_needs_that_many_probe_successes() -> None:
    b, _ = breaker(failure_threshold=1, cool_down_ms=10, jitter=0.0, close_after=2)
    fail(b, 0)
    probe = b.admit(10)
    assert probe is not None
    b.settle(probe, ANSWERED, 11)
    assert state(b) is BreakerState.HALF_OPEN
    probe = b.admit(11)
    assert probe is not None
    b.settle(probe, ANSWERED, 12)
    assert state(b) is BreakerState.CLOSED


def test_a_failed_probe_opens_again_with_a_new_cool_down() -> None:
    b, seen = breaker(failure_threshold=1, cool_down_ms=100, jitter=0.0)
    fail(b, 0)
    probe = b.admit(150)
    assert probe is not None
    b.settle(probe, FAILED, 160, "handler_error")
    assert state(b) is BreakerState.OPEN
    assert b.retry_at_ms == 260
    assert "probe failed (handler_error)" in seen[-1].reason
    assert b.opened == 2


def test_a_failure_admitted_before_the_breaker_opened_does_not_extend_it() -> None:
    b, _ = breaker(failure_threshold=2, cool_down_ms=100, jitter=0.0)
    slow = b.admit(0)
    assert slow is not None
    fail(b, 0, 2)
    b.settle(slow, FAILED, 50)
    assert b.retry_at_ms == 100
    assert b.state_at(100) is BreakerState.HALF_OPEN


def test_jitter_stretches_the_cool_down_within_bounds() -> None:
    config = BreakerConfig(failure_threshold=1, cool_down_ms=1000, jitter=0.5)
    retries = set()
    for seed in range(50):
        b = CircuitBreaker(config, rng=random.Random(seed))
        fail(b, 0)
        assert b.retry_at_ms is not None
        assert 1000 <= b.retry_at_ms < config.max_cool_down_ms
        retries.add(b.retry_at_ms)
    assert len(retries) > 10  # callers of one failed peer do not probe in step


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError):
        BreakerConfig(failure_threshold=0)
    with pytest.raises(ValidationError):
        BreakerConfig(jitter=1.5)
    with pytest.raises(ValidationError):
        BreakerConfig(surprise=1)  # type: ignore[call-arg]


# -- properties ------------------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), st.integers(0, 0)),
        st.tuples(st.just("settle"), st.integers(0, 50)),
        st.tuples(st.just("advance"), st.integers(0, 3000)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=operations,
    results=st.lists(st.sampled_from(list(CallResult)), min_size=1, max_size=50),
    probes=st.integers(1, 4),
    threshold=st.integers(1, 4),
    cool_down=st.integers(1, 2000),
    jitter=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_half_open_never_lets_more_than_the_probes_through(
    ops: list[tuple[str, int]],
    results: list[CallResult],
    probes: int,
    threshold: int,
    cool_down: int,
    jitter: float,
    seed: int,
) -> None:
    config = BreakerConfig(
        failure_threshold=threshold,
        cool_down_ms=cool_down,
        jitter=jitter,
        half_open_probes=probes,
    )
    b = CircuitBreaker(config, rng=random.Random(seed))
    now = 0
    outstanding: list[Permit] = []
    for step, (op, arg) in enumerate(ops):
        if op == "admit":
            permit = b.admit(now)
            if permit is not None:
                outstanding.append(permit)
        elif op == "settle" and outstanding:
            permit = outstanding.pop(arg % len(outstanding))
            b.settle(permit, results[step % len(results)], now)
        elif op == "advance":
            now += arg
        state = b.state_at(now)
        current_probes = [p for p in outstanding if p.probe and p.generation == b.generation]
        if state is BreakerState.HALF_OPEN:
            assert len(current_probes) == b.probes_in_flight <= probes
        else:
            assert current_probes == []
        if state is BreakerState.OPEN:
            assert b.retry_at_ms is not None
            assert now < b.retry_at_ms <= now + config.max_cool_down_ms


@settings(max_examples=300, deadline=None)
@given(
    threshold=st.integers(1, 5),
    cool_down=st.integers(1, 10_000),
    jitter=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    opened_at=st.integers(0, 10**9),
    late=st.integers(0, 10**6),
)
def test_never_open_past_cool_down_plus_jitter_without_a_request(
    threshold: int, cool_down: int, jitter: float, seed: int, opened_at: int, late: int
) -> None:
    config = BreakerConfig(failure_threshold=threshold, cool_down_ms=cool_down, jitter=jitter)
    b = CircuitBreaker(config, rng=random.Random(seed))
    fail(b, opened_at, threshold)
    assert state(b) is BreakerState.OPEN
    assert b.state_at(opened_at + cool_down - 1) is BreakerState.OPEN  # the cool-down holds
    # No request since: only time passes, and a look (a snapshot) sees half-open.
    assert b.state_at(opened_at + config.max_cool_down_ms + late) is BreakerState.HALF_OPEN
