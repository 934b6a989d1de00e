"""Tuning of the trust engine: one frozen, validated dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from trust.errors import InvalidTrustConfig

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TrustConfig:
    """Every knob of the model; the maths is in ``docs/trust.md``.

    Attributes:
        half_life_ms: evidence loses half its weight after this long.
        negative_weight: kappa; one unit of negative evidence cancels this much positive
            evidence in the propagation weight ``max(alpha - kappa*beta, 0)``.
        damping: a; share of the global vector re-anchored in the pre-trusted set per step.
        tolerance: L1 change that ends the power iteration.
        max_iterations: bound on the power iteration.
        ring1_score: global score needed for ring 1 (privileged).
        ring1_evidence: credible evidence needed for ring 1.
        ring2_score: global score needed for ring 2 (standard).
        ring2_evidence: credible evidence needed for ring 2.
        promotion_rounds: recomputes an agent must qualify in a row before each one-ring
            promotion (demotion is immediate).
        ring1_promotion_rounds: qualifying recomputes in a row before a climb from ring
            2 to ring 1 (evidence ring policy): long enough for a soft drift to show.
        credibility: how an observer's reports are weighted in the evidence volume,
            the rings, rater accuracy and drift detection: ``"flow"`` (rater
            credibility, ``trust/credibility.py``: a capacity-bounded vouch flow from
            the pre-trusted agents times the rater's accuracy) or ``"share"`` (the
            observer's service-trust share, ``min(1, n*t / credibility_share)``).
        rater_capacity: units of credibility each pre-trusted agent can hand out
            (``"flow"``); a Sybil region behind an attack edge at depth ``d`` gains
            at most ``rater_capacity / rater_capacity_decay**d - 1`` credibility.
        rater_capacity_decay: divisor of the capacity per vouch hop from the
            pre-trusted agents.
        credibility_share: (``"share"``) relative share ``n*t`` at which an observer's reports count
            fully in drift detection and in the evidence volume.
        credibility_exponent: gamma in ``credibility = min(1, n*t / share) ** gamma``;
            below 1 it lifts quiet honest observers (small but non-zero global trust)
            while agents without trust (Sybils, colluders) keep exactly 0.
        cusum_slack: k, tolerated excess badness per interaction above the baseline.
        cusum_threshold: h, the CUSUM alarm level.
        baseline_rate: starting badness baseline of an agent; learnt with ``baseline_gain``.
        baseline_gain: EWMA gain of the per-agent badness baseline.
        action_window: recent actions compared with the agent's history.
        action_min_history: actions needed in the history before the test runs.
        action_divergence: Jensen-Shannon divergence (bits) that raises a drift.
        drift_penalty: factor applied to the score of a drifting agent.
        recovery_successes: credible successes in a row that clear a drift flag.
        max_future_skew_ms: receipts further ahead of the clock are refused.
        explain_top: receipts kept per agent for :meth:`TrustEngine.explain`.
        validate_dids: check that every new agent name is a well-formed did:key.
        receipt_horizon_ms: replay-protection horizon: receipt ids are remembered only
            while their ``at_ms`` is within this of the newest receipt folded, and older
            receipts are refused (``stale_receipt``), so memory does not grow with
            history. ``None`` remembers every id forever (simulations, analysis); a mesh
            deployment sets it (``docs/trust.md`` section 10). Must exceed
            ``max_future_skew_ms``.
        drift_detection: run the drift tests (off only to measure plain EigenTrust).
        rater_accuracy: discount observers whose reports disagree with the credible
            consensus (``trust/accuracy.py``): spies and slanderers pass little trust.
        accuracy_floor: accuracy at or below which an observer passes no trust.
        accuracy_full: accuracy from which an observer passes all of its trust.
        soft_drift_shift: rise of the failure rate the Bernoulli CUSUM looks for.
        soft_drift_threshold: its alarm level h (0 turns the test off).
        soft_drift_prior: weight (interactions) of ``baseline_rate`` in the learnt p0.
        soft_drift_learning: credible interactions after which p0 stops learning.
        soft_drift_lag: p0 learns from a report only once this many newer credible
            reports arrived, so a drift is tested against the rate from before it.
        soft_drift_full_credibility: observer credibility from which a report counts
            fully in the soft drift test (below it, in proportion).
        soft_drift_clear: log-likelihood (nats) for the agent's own rate over the
            drifted one, summed since a failure-rate alarm, that clears its flag
            before confirmation (0: only a clean streak clears it).
        soft_drift_confirm: log-likelihood (nats) for the drifted rate over the
            agent's own, summed since a failure-rate alarm, that confirms it (sandbox).
        ring_policy: ``"evidence"`` (hysteresis on credible evidence, ``docs/trust.md``
            §5) or ``"score"`` (the score thresholds alone: EigenTrust's view).
        ring1_quality: service quality ring 1 needs (credible Beta posterior).
        ring2_quality: service quality ring 2 needs.
        promotion_hold: share of a drift test's alarm level from which the agent's
            ring does not climb and its learnt failure rate stops learning.
        ring1_observers: independent credible observers vouching first-hand for
            ring 1 (one pre-trusted observer's first-hand vouch is enough).
        ring_confidence: a quality is established when P(q >= level) >= 1 - this,
            and refuted (demotion) when P(q >= level) < this.
        observer_evidence_cap: interactions (decayed volume) one observer that is
            not pre-trusted counts for at most about one subject in the credible
            evidence (rings, distrust): endorsement volume cannot buy a ring (0: no cap).
    """

    half_life_ms: int = 7 * DAY_MS
    negative_weight: float = 2.0
    damping: float = 0.15
    tolerance: float = 1e-10
    max_iterations: int = 200
    ring1_score: float = 0.6
    ring1_evidence: float = 50.0
    ring2_score: float = 0.2
    ring2_evidence: float = 5.0
    promotion_rounds: int = 2
    ring1_promotion_rounds: int = 4
    credibility: str = "flow"
    rater_capacity: float = 128.0
    rater_capacity_decay: float = 4.0
    credibility_share: float = 0.5
    credibility_exponent: float = 1.0
    cusum_slack: float = 0.3
    cusum_threshold: float = 4.0
    baseline_rate: float = 0.05
    baseline_gain: float = 0.02
    action_window: int = 20
    action_min_history: int = 50
    action_divergence: float = 0.5
    drift_penalty: float = 0.1
    recovery_successes: int = 30
    max_future_skew_ms: int = 300_000
    explain_top: int = 8
    validate_dids: bool = True
    receipt_horizon_ms: int | None = None
    drift_detection: bool = True
    rater_accuracy: bool = True
    accuracy_floor: float = 0.6
    accuracy_full: float = 0.9
    ring_policy: str = "evidence"
    soft_drift_shift: float = 0.10
    soft_drift_threshold: float = 8.0
    soft_drift_prior: float = 20.0
    soft_drift_learning: float = 2000.0
    soft_drift_lag: int = 40
    soft_drift_full_credibility: float = 0.5
    soft_drift_clear: float = 4.0
    soft_drift_confirm: float = 12.0
    ring1_quality: float = 0.85
    ring2_quality: float = 0.65
    promotion_hold: float = 0.15
    ring1_observers: int = 3
    ring_confidence: float = 0.05
    observer_evidence_cap: float = 20.0

    @classmethod
    def eigentrust(cls) -> TrustConfig:
        """EigenTrust as published, for comparisons: no drift test, rings by score only."""
        return cls(
            drift_detection=False,
            rater_accuracy=False,
            ring_policy="score",
            soft_drift_threshold=0,
            observer_evidence_cap=0.0,
        )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidTrustConfig(f"{f.name} must be finite")
        _require(self.half_life_ms > 0, "half_life_ms must be > 0")
        _require(self.negative_weight >= 0, "negative_weight must be >= 0")
        _require(0.0 < self.damping < 1.0, "damping must be in (0, 1)")
        _require(0.0 < self.tolerance < 1.0, "tolerance must be in (0, 1)")
        _require(self.max_iterations >= 1, "max_iterations must be >= 1")
        _require(0.0 < self.ring2_score <= self.ring1_score < 1.0, "need 0 < ring2 <= ring1 < 1")
        _require(
            0.0 <= self.ring2_evidence <= self.ring1_evidence, "need 0 <= ring2 <= ring1 evidence"
        )
        _require(self.promotion_rounds >= 1, "promotion_rounds must be >= 1")
        _require(self.ring1_promotion_rounds >= 1, "ring1_promotion_rounds must be >= 1")
        _require(self.credibility in ("flow", "share"), "credibility: flow or share")
        _require(self.rater_capacity >= 1.0, "rater_capacity must be >= 1")
        _require(self.rater_capacity_decay >= 1.0, "rater_capacity_decay must be >= 1")
        _require(self.credibility_share > 0, "credibility_share must be > 0")
        _require(self.cusum_slack >= 0 and self.cusum_threshold > 0, "bad CUSUM parameters")
        _require(0.0 < self.baseline_rate < 1.0, "baseline_rate must be in (0, 1)")
        _require(0.0 < self.baseline_gain < 1.0, "baseline_gain must be in (0, 1)")
        _require(self.action_window >= 2, "action_window must be >= 2")
        _require(self.action_min_history >= 1, "action_min_history must be >= 1")
        _require(0.0 < self.action_divergence <= 1.0, "action_divergence must be in (0, 1]")
        _require(0.0 <= self.drift_penalty < 1.0, "drift_penalty must be in [0, 1)")
        _require(self.recovery_successes >= 1, "recovery_successes must be >= 1")
        _require(self.max_future_skew_ms >= 0, "max_future_skew_ms must be >= 0")
        _require(0.0 < self.credibility_exponent <= 1.0, "credibility_exponent in (0, 1]")
        _require(self.explain_top >= 1, "explain_top must be >= 1")
        _require(
            self.receipt_horizon_ms is None or self.receipt_horizon_ms > self.max_future_skew_ms,
            "receipt_horizon_ms must exceed max_future_skew_ms (or be None)",
        )
        _require(0.0 < self.soft_drift_shift < 0.5, "soft_drift_shift must be in (0, 0.5)")
        _require(self.soft_drift_threshold >= 0, "soft_drift_threshold must be >= 0")
        _require(self.soft_drift_prior > 0, "soft_drift_prior must be > 0")
        _require(self.soft_drift_learning >= 0, "soft_drift_learning must be >= 0")
        _require(self.soft_drift_lag >= 0, "soft_drift_lag must be >= 0")
        _require(self.soft_drift_clear >= 0, "soft_drift_clear must be >= 0")
        _require(self.soft_drift_confirm > 0, "soft_drift_confirm must be > 0")
        _require(
            0.0 < self.soft_drift_full_credibility <= 1.0,
            "soft_drift_full_credibility must be in (0, 1]",
        )
        _require(self.ring_policy in ("evidence", "score"), "ring_policy: evidence or score")
        _require(
            0.0 < self.ring2_quality <= self.ring1_quality < 1.0,
            "need 0 < ring2_quality <= ring1_quality < 1",
        )
        _require(0.0 < self.promotion_hold <= 1.0, "promotion_hold must be in (0, 1]")
        _require(self.ring1_observers >= 1, "ring1_observers must be >= 1")
        _require(0.0 < self.ring_confidence < 0.5, "ring_confidence must be in (0, 0.5)")
        _require(self.observer_evidence_cap >= 0.0, "observer_evidence_cap must be >= 0")
        _require(
            0.0 <= self.accuracy_floor < self.accuracy_full <= 1.0,
            "need 0 <= accuracy_floor < accuracy_full <= 1",
        )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidTrustConfig(message)
