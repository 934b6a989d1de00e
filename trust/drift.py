"""Per-agent drift detection: a CUSUM on outcomes and a divergence test on actions.

Both detectors see only *credible* reports (weighted by the observer's
credibility in [0, 1]), so agents nobody trusts cannot push an honest agent into
drift by flooding receipts about it.

* Outcomes: one-sided CUSUM (Page 1954) on the badness ``x`` of each interaction
  (0 for success, the outcome's severity otherwise) against the agent's own learnt
  baseline ``mu``: ``S <- max(0, S + c * (x - mu - k))``, alarm when ``S >= h``.
* Actions: Jensen-Shannon divergence (base 2, in [0, 1]) between the last
  ``action_window`` actions and the agent's earlier action history.
"""

from __future__ import annotations

import math
from collections import Counter, deque

from trust.config import TrustConfig

OUTCOME_DRIFT = "outcome_cusum"
ACTION_DRIFT = "action_divergence"
_MIN_CREDIBILITY = 0.5
_BASELINE_CAP = 0.3


def js_divergence(p: Counter[str], q: Counter[str]) -> float:
    """Jensen-Shannon divergence in bits between two count tables (0 when one is empty)."""
    total_p, total_q = sum(p.values()), sum(q.values())
    if total_p <= 0 or total_q <= 0:
        return 0.0
    divergence = 0.0
    for key in p.keys() | q.keys():
        a, b = p.get(key, 0) / total_p, q.get(key, 0) / total_q
        m = (a + b) / 2
        if a > 0:
            divergence += 0.5 * a * math.log2(a / m)
        if b > 0:
            divergence += 0.5 * b * math.log2(b / m)
    return min(max(divergence, 0.0), 1.0)


class DriftMonitor:
    """The drift state of one agent. Not thread-safe (the engine owns it)."""

    __slots__ = (
        "_checks",
        "baseline",
        "cusum",
        "flagged",
        "history",
        "last_divergence",
        "streak",
        "window",
    )

    def __init__(self, config: TrustConfig) -> None:
        self.cusum = 0.0
        self.baseline = config.baseline_rate
        self.flagged = False
        self.streak = 0
        self.window: deque[str] = deque(maxlen=config.action_window)
        self.history: Counter[str] = Counter()
        self.last_divergence = 0.0
        self._checks = 0

    def observe(
        self, badness: float, credibility: float, action: str | None, config: TrustConfig
    ) -> str | None:
        """Fold one report in; returns the drift kind when this report raises an alarm."""
        if credibility <= 0.0:
            return None
        alarm = self._observe_outcome(badness, credibility, config)
        if action is not None and credibility >= _MIN_CREDIBILITY:
            alarm = self._observe_action(action, config) or alarm
        if self.flagged:
            # A flag clears only after a clean streak of credible successes.
            self.streak = self.streak + 1 if badness == 0.0 and alarm is None else 0
            if alarm is not None:
                self.cusum = 0.0
            elif self.streak >= config.recovery_successes:
                self.flagged = False
                self.streak = 0
            return None
        if alarm is not None:
            self.flagged = True
            self.streak = 0
            self.cusum = 0.0
        return alarm

    def _observe_outcome(
        self, badness: float, credibility: float, config: TrustConfig
    ) -> str | None:
        self.cusum = max(
            0.0, self.cusum + credibility * (badness - self.baseline - config.cusum_slack)
        )
        if not self.flagged:
            # The baseline learns slowly and never from alarmed stretches.
            gain = config.baseline_gain * credibility
            self.baseline += gain * (min(badness, 1.0) - self.baseline)
            self.baseline = min(self.baseline, _BASELINE_CAP)
        return OUTCOME_DRIFT if self.cusum >= config.cusum_threshold else None

    def _observe_action(self, action: str, config: TrustConfig) -> str | None:
        if len(self.window) == self.window.maxlen:
            self.history[self.window[0]] += 1
        self.window.append(action)
        self._checks += 1
        enough = sum(self.history.values()) >= config.action_min_history
        if not enough or len(self.window) < config.action_window or self._checks % 5:
            return None
        self.last_divergence = js_divergence(Counter(self.window), self.history)
        if self.last_divergence >= config.action_divergence:
            self.window.clear()  # never alarm twice on the same window
            return ACTION_DRIFT
        return None
