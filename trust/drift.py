"""Per-agent drift detection: a CUSUM on outcomes and a divergence test on actions.

Both detectors see only *credible* reports (weighted by the observer's
credibility in [0, 1]), so agents nobody trusts cannot push an honest agent into
drift by flooding receipts about it.

* Outcomes: one-sided CUSUM (Page 1954) on the badness ``x`` of each interaction
  (0 for success, the outcome's severity otherwise) against the agent's own learnt
  baseline ``mu``: ``S <- max(0, S + c * (x - mu - k))``, alarm when ``S >= h``.
* Failure rate: a Bernoulli CUSUM (log-likelihood ratio) of ``p0 + shift`` against
  the agent's own learnt failure rate ``p0``, for soft drifts the first test is
  too coarse to see (a turn to 15 % or 50 % bad). A report counts fully from an
  observer of credibility ``soft_drift_full_credibility`` (0.5) up, in proportion
  below: most honest requesters sit between 0.2 and 0.9, and a test that weighed
  them by credibility alone took twice as many interactions to see a drift.
* Actions: Jensen-Shannon divergence (base 2, in [0, 1]) between the last
  ``action_window`` actions and the agent's earlier action history.

An alarm *flags* the agent (its score is cut, its own reports stop counting, it
is not promoted). The outcome and action tests also *sandbox* it at once (ring 3):
the selection policy no longer picks it. A failure-rate alarm puts it *on
probation* instead (the policy still picks it, at a reduced weight): from then on
the failure-rate test is Wald's sequential test on the reports since the alarm,
which confirms it (sandbox) once they favour the drifted rate by
``soft_drift_confirm`` and clears the flag once they favour the agent's own rate
by ``soft_drift_clear``; an alarm of the outcome or action test confirms it too.
At the threshold that sees a turn to 15 % bad within a few hundred interactions,
the test's false-alarm interval on the least reliable honest agents (7 % failures)
is a few 10^4 interactions, so demoting on its first alarm would demote honest
agents on a long run (``docs/trust.md`` section 4).
"""

from __future__ import annotations

import math
from collections import Counter, deque

from trust.config import TrustConfig

OUTCOME_DRIFT = "outcome_cusum"
SOFT_DRIFT = "failure_rate_cusum"
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
        "bad_seen",
        "baseline",
        "bernoulli",
        "cusum",
        "flagged",
        "fresh",
        "history",
        "last_divergence",
        "pending_bad",
        "pending_seen",
        "probation",
        "recent",
        "sandboxed",
        "seen",
        "streak",
        "window",
    )

    def __init__(self, config: TrustConfig) -> None:
        self.cusum = 0.0
        self.baseline = config.baseline_rate
        self.flagged = False
        # Flagged by a test that sandboxes (outcome, action) or a confirmed soft alarm.
        self.sandboxed = False
        self.streak = 0
        self.window: deque[str] = deque(maxlen=config.action_window)
        self.history: Counter[str] = Counter()
        self.last_divergence = 0.0
        self._checks = 0
        self.bernoulli = 0.0
        # Log-likelihood of p1 over p0 since a failure-rate alarm (unclamped): the flag
        # clears at -soft_drift_clear (Wald's sequential test back to p0).
        self.probation = 0.0
        self.seen = 0.0
        self.bad_seen = 0.0
        # The credible reports not yet learnt into p0 (weight, weighted badness): a
        # block learnt once it weighs as much as the history (see _observe_rate).
        self.pending_seen = 0.0
        self.pending_bad = 0.0
        # How many of the newest reports in ``recent`` are not in the pending block yet
        # (p0 learns only from reports at least soft_drift_lag old).
        self.fresh = 0
        # The last soft_drift_lag credible reports, always (ring 1 asks them).
        self.recent: deque[tuple[float, float]] = deque(maxlen=max(config.soft_drift_lag, 1))

    def observe(
        self, badness: float, credibility: float, action: str | None, config: TrustConfig
    ) -> str | None:
        """Fold one report in; returns the drift kind when this report raises an alarm
        (a first alarm, or the one that confirms a failure-rate alarm: see
        :attr:`sandboxed`)."""
        if credibility <= 0.0:
            return None
        alarm = self._observe_outcome(badness, credibility, config)
        if config.soft_drift_threshold > 0:
            weight = min(1.0, credibility / config.soft_drift_full_credibility)
            alarm = self._observe_rate(badness, weight, config) or alarm
        if action is not None and credibility >= _MIN_CREDIBILITY:
            alarm = self._observe_action(action, config) or alarm
        if self.flagged:
            # A flag clears after a clean streak of credible successes or, on probation,
            # once the reports since the alarm favour p0 (_cleared).
            self.streak = self.streak + 1 if badness == 0.0 and alarm is None else 0
            if alarm is not None:
                self.cusum = 0.0
                if not self.sandboxed:
                    self.sandboxed = True  # a second alarm confirms a soft one
                    return alarm
            elif self.streak >= config.recovery_successes or self._cleared(config):
                self.flagged = self.sandboxed = False
                self.streak = 0
                self.bernoulli = self.probation = 0.0
            return None
        if alarm is not None:
            self.flagged = True
            self.sandboxed = alarm != SOFT_DRIFT
            self.probation = 0.0
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

    def elevated(self, config: TrustConfig) -> bool:
        """The agent is flagged, or a drift test is ``promotion_hold`` of the way to its
        alarm or further. Rings do not climb then.
        """
        hold = config.promotion_hold
        soft = config.soft_drift_threshold
        return (
            self.flagged
            or self.cusum >= hold * config.cusum_threshold
            or (soft > 0 and self.bernoulli >= hold * soft)
        )

    def recently_worse(self, config: TrustConfig) -> bool:
        """The last ``soft_drift_lag`` credible reports fail more than ``p0`` plus half
        the soft shift (on at least 10 credible reports): no climb into ring 1 then,
        since the old evidence that the ring-1 test weighs can hide a soft drift.
        """
        weight = sum(c for c, _ in self.recent)
        if weight < 10.0:
            return False
        bad = sum(c * x for c, x in self.recent)
        return bad / weight > self.failure_rate(config) + 0.5 * config.soft_drift_shift

    def failure_rate(self, config: TrustConfig) -> float:
        """The agent's own failure rate p0: a shrunk mean of its credible history.

        Never below ``baseline_rate``: a short lucky streak of successes must not make
        the next few honest failures look like a drift (the soft test then looks for
        a rise of ``soft_drift_shift`` above the baseline; hard turns are the outcome
        CUSUM's).
        """
        prior = config.soft_drift_prior
        rate = (self.bad_seen + config.baseline_rate * prior) / (self.seen + prior)
        return min(max(rate, config.baseline_rate), 0.3)

    def _observe_rate(self, badness: float, credibility: float, config: TrustConfig) -> str | None:
        """A Bernoulli CUSUM (log-likelihood ratio of p1 against the agent's own p0).

        ``p1 = p0 + soft_drift_shift``: the smallest rise of the failure rate worth an
        alarm. Per report ``S <- max(0, S + c * llr(x))``, alarm at ``S >= h``; the
        expected false-alarm interval grows like ``exp(h)``.

        ``p0`` learns in blocks, only from reports at least ``soft_drift_lag`` old:
        those wait in ``pending`` until they weigh as much as everything learnt so far
        (at least ``soft_drift_lag``), then join it, so after a turn at history ``T``
        the test compares against the rate from before the turn for about
        ``max(T, lag)`` reports (a report-by-report lag let a slow drift teach the
        test its own new rate: a turn to 15 % bad lifted p0 from 0.06 to 0.08 before
        the alarm). Without the lag, a young agent's first block closed just after
        its turn to 50 % bad and lifted p0 from 0.05 to 0.08 (caught after 49
        interactions instead of 22). A block waits while the test is half-way to an
        alarm or while it does not fit ``p0`` (:meth:`_block_fits`), is dropped on
        an alarm, and learning stops after ``soft_drift_learning``.
        """
        p0 = self.failure_rate(config)
        p1 = min(p0 + config.soft_drift_shift, 0.95)
        x = min(badness, 1.0)
        matured = self._remember(credibility, x, config.soft_drift_lag)
        llr = x * math.log(p1 / p0) + (1.0 - x) * math.log((1.0 - p1) / (1.0 - p0))
        self.bernoulli = max(0.0, self.bernoulli + credibility * llr)
        on_probation = self.flagged and not self.sandboxed
        if on_probation:
            self.probation += credibility * llr
        if self.flagged or self.seen >= config.soft_drift_learning:
            self.pending_seen = self.pending_bad = 0.0
            self.fresh = 0
        elif matured is not None:
            self.pending_seen += matured[0]
            self.pending_bad += matured[0] * matured[1]
            block = max(self.seen, float(config.soft_drift_lag))
            calm = self.bernoulli < 0.5 * config.soft_drift_threshold
            if self.pending_seen >= block and calm and self._block_fits(p0, p1):
                self.seen += self.pending_seen
                self.bad_seen += self.pending_bad
                self.pending_seen = self.pending_bad = 0.0
        if on_probation:
            # Confirmation is the other half of the clearing test (_cleared): the
            # reports since the alarm favour p1 by soft_drift_confirm. A reflected
            # CUSUM to h here confirmed an honest agent whose p0 was learnt low on
            # about one excursion in ten; the sum since the alarm to 12 nats on about
            # one in a thousand (Wald), at ~170 reports for a turn to 15 % bad.
            self.bernoulli = min(self.bernoulli, config.soft_drift_threshold)
            return SOFT_DRIFT if self.probation >= config.soft_drift_confirm else None
        if self.bernoulli >= config.soft_drift_threshold:
            self.bernoulli = 0.0
            self.pending_seen = self.pending_bad = 0.0
            self.fresh = 0
            return SOFT_DRIFT
        return None

    def _remember(self, weight: float, x: float, lag: int) -> tuple[float, float] | None:
        """Keep the report in ``recent``; returns the report that leaves the ``lag``
        newest for the pending block (``None`` while they are filling)."""
        if lag <= 0:
            self.recent.append((weight, x))
            return weight, x
        matured = self.recent[0] if self.fresh >= lag else None
        self.recent.append((weight, x))
        self.fresh = min(self.fresh + 1, lag)
        return matured

    def _block_fits(self, p0: float, p1: float) -> bool:
        """The first block is the agent's own rate, whatever it is; a later one joins
        only if it favours ``p0`` over ``p1``, so a block that straddles a turn is not
        learnt (it waits, and grows, while it does not fit). A stricter fit (``p0``
        plus half the shift) held honest blocks that came out high by chance and
        biased ``p0`` low: more false alarms."""
        if self.seen <= 0.0:
            return True
        good = self.pending_seen - self.pending_bad
        llr = self.pending_bad * math.log(p1 / p0) + good * math.log((1 - p1) / (1 - p0))
        return llr <= 0.0

    def _cleared(self, config: TrustConfig) -> bool:
        """A failure-rate flag (not confirmed) clears once the reports since its alarm
        favour the agent's own rate ``p0`` over ``p1`` by ``soft_drift_clear``: an
        honest agent at 7 % failures gets there in ~90 credible reports, where a clean
        streak of ``recovery_successes`` would take ~110 and, once the selection policy
        has cut its traffic, could take the rest of its life."""
        clear = config.soft_drift_clear
        return not self.sandboxed and clear > 0 and self.probation <= -clear

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
