"""Budgets: calls, tokens or cost per agent per fixed window.

A charge is checked against every limit before anything is recorded, so a
refused charge changes nothing. Windows are fixed and aligned on the injected
wall clock (``window_ms``), so every node computes the same window boundaries.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from agentmesh.policy.compiler import PatternSet
from agentmesh.policy.errors import BudgetExceeded
from iatp.clock import Clock, SystemClock


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits for ``actions`` (globs) per agent per window; ``None`` means unlimited."""

    actions: tuple[str, ...]
    window_ms: int
    calls: int | None = None
    tokens: int | None = None
    cost: float | None = None

    def __post_init__(self) -> None:
        if self.window_ms <= 0:
            raise ValueError("a budget window must be positive")
        if self.calls is None and self.tokens is None and self.cost is None:
            raise ValueError("a budget limits calls, tokens or cost")
        if any(v is not None and v < 0 for v in (self.calls, self.tokens, self.cost)):
            raise ValueError("budget limits cannot be negative")


@dataclass(slots=True)
class Spend:
    """What one agent spent in one window."""

    window: int
    calls: int = 0
    tokens: int = 0
    cost: float = 0.0


class BudgetLedger:
    """Tracks spend per (agent, budget) and refuses charges beyond the limits."""

    def __init__(self, budgets: Sequence[Budget], *, clock: Clock | None = None) -> None:
        self._budgets = [(PatternSet(budget.actions), budget) for budget in budgets]
        self._clock = clock or SystemClock()
        self._spend: dict[tuple[str, int], Spend] = {}
        self._lock = threading.Lock()

    def charge(self, agent: str, action: str, *, tokens: int = 0, cost: float = 0.0) -> None:
        """Record one call (plus ``tokens`` and ``cost``) for ``agent``; all or nothing.

        Raises:
            BudgetExceeded: naming the limit and the window's end.
        """
        if tokens < 0 or cost < 0:
            raise ValueError("tokens and cost cannot be negative")
        now = self._clock.now_ms()
        with self._lock:
            pending: list[tuple[Spend, Budget]] = []
            for index, (patterns, budget) in enumerate(self._budgets):
                if not patterns.matches(action):
                    continue
                window = now // budget.window_ms
                spend = self._spend.get((agent, index))
                if spend is None or spend.window != window:
                    spend = self._spend[(agent, index)] = Spend(window)
                over = _over(budget, spend, tokens, cost)
                if over:
                    ends = (window + 1) * budget.window_ms
                    raise BudgetExceeded(
                        f"budget for {action!r} exhausted: {over} (window ends at {ends} ms)",
                        did=agent,
                        action=action,
                        rule="budget",
                    )
                pending.append((spend, budget))
            for spend, _ in pending:
                spend.calls += 1
                spend.tokens += tokens
                spend.cost += cost

    def adopt(self, previous: BudgetLedger) -> int:
        """Take over ``previous``'s spend for budgets that still exist (a policy reload).

        A budget still exists when this ledger has one with the same action
        patterns and window (its limits may differ: they apply to what was
        already spent). Returns how many spend records were taken over.
        """
        index_of: dict[tuple[tuple[str, ...], int], int] = {}
        for index, (_, budget) in enumerate(self._budgets):
            index_of.setdefault((budget.actions, budget.window_ms), index)
        with previous._lock:
            spends = list(previous._spend.items())
        kept = 0
        with self._lock:
            for (agent, old_index), spend in spends:
                budget = previous._budgets[old_index][1]
                new_index = index_of.get((budget.actions, budget.window_ms))
                if new_index is None:
                    continue
                self._spend[(agent, new_index)] = Spend(
                    spend.window, spend.calls, spend.tokens, spend.cost
                )
                kept += 1
        return kept

    def spent(self, agent: str, action: str) -> Spend | None:
        """The first matching budget's spend for ``agent`` in the current window."""
        now = self._clock.now_ms()
        for index, (patterns, budget) in enumerate(self._budgets):
            if patterns.matches(action):
                spend = self._spend.get((agent, index))
                if spend is not None and spend.window == now // budget.window_ms:
                    return spend
                return Spend(now // budget.window_ms)
        return None


def _over(budget: Budget, spend: Spend, tokens: int, cost: float) -> str:
    if budget.calls is not None and spend.calls + 1 > budget.calls:
        return f"{budget.calls} calls"
    if budget.tokens is not None and spend.tokens + tokens > budget.tokens:
        return f"{budget.tokens} tokens"
    if budget.cost is not None and spend.cost + cost > budget.cost:
        return f"cost {budget.cost:g}"
    return ""


__all__ = ["Budget", "BudgetLedger", "Spend"]
