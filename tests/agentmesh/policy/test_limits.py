"""Rate limits (token buckets) and budgets per agent and action."""

from __future__ import annotations

import pytest

from agentmesh.policy import (
    Budget,
    BudgetExceeded,
    BudgetLedger,
    RateLimit,
    RateLimited,
    RateLimiter,
)
from iatp.clock import ManualClock


class Ticker:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_then_rate_per_agent_and_action() -> None:
    tick = Ticker()
    limiter = RateLimiter([RateLimit(("search.*",), rate=2.0, burst=3)], clock=tick)
    for _ in range(3):
        limiter.acquire("a", "search.web")
    with pytest.raises(RateLimited) as caught:
        limiter.acquire("a", "search.web")
    assert caught.value.retry_after_s == pytest.approx(0.5)
    assert caught.value.did == "a"
    assert caught.value.action == "search.web"
    limiter.acquire("b", "search.web")  # another agent has its own bucket
    limiter.acquire("a", "search.news")  # another action too
    limiter.acquire("a", "unlimited.action")
    tick.now += 0.5
    limiter.acquire("a", "search.web")
    with pytest.raises(RateLimited):
        limiter.acquire("a", "search.web")


def test_idle_buckets_are_forgotten_when_full() -> None:
    tick = Ticker()
    limiter = RateLimiter([RateLimit(("*",), rate=1.0, burst=1)], clock=tick, max_buckets=2)
    limiter.acquire("a", "x")
    limiter.acquire("b", "x")
    tick.now += 10
    limiter.acquire("c", "x")
    assert len(limiter._buckets) == 1


def test_rate_limit_validation() -> None:
    with pytest.raises(ValueError):
        RateLimit(("x",), rate=0, burst=1)
    with pytest.raises(ValueError):
        RateLimit((), rate=1, burst=1)


def test_budget_calls_tokens_cost_all_or_nothing_and_window() -> None:
    clock = ManualClock(start_ms=0)
    ledger = BudgetLedger(
        [
            Budget(("llm.*",), window_ms=60_000, calls=3, tokens=1000),
            Budget(("llm.*", "pay"), window_ms=60_000, cost=10.0),
        ],
        clock=clock,
    )
    ledger.charge("a", "llm.chat", tokens=600, cost=4.0)
    with pytest.raises(BudgetExceeded, match="1000 tokens"):
        ledger.charge("a", "llm.chat", tokens=500)
    spent = ledger.spent("a", "llm.chat")
    assert spent is not None
    assert (spent.calls, spent.tokens) == (1, 600)
    with pytest.raises(BudgetExceeded, match="cost 10"):
        ledger.charge("a", "llm.chat", tokens=1, cost=7.0)
    assert ledger.spent("a", "llm.chat").calls == 1  # type: ignore[union-attr]
    ledger.charge("a", "llm.chat")
    ledger.charge("a", "llm.chat")
    with pytest.raises(BudgetExceeded, match="3 calls") as caught:
        ledger.charge("a", "llm.chat")
    assert caught.value.did == "a"
    assert caught.value.code == "budget_exceeded"
    ledger.charge("b", "llm.chat")  # per agent
    clock.advance(60_000)
    ledger.charge("a", "llm.chat", tokens=900)  # a new window
    assert ledger.spent("a", "other") is None


def test_budget_validation() -> None:
    with pytest.raises(ValueError):
        Budget(("x",), window_ms=1000)
    with pytest.raises(ValueError):
        Budget(("x",), window_ms=0, calls=1)
    with pytest.raises(ValueError):
        BudgetLedger([Budget(("x",), window_ms=1, calls=1)]).charge("a", "x", tokens=-1)
