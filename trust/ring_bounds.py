"""The evidence ring policy: where each agent's ring may go after a recompute.

A recompute hands the decayed edge evidence and every agent's standing to
:func:`ring_bounds`, which returns the *target* ring (what the evidence earns)
and the *floor* (the best ring the evidence still allows: a ring above it is
demoted at once); :meth:`trust.rings.RingLadder.step_with_floor` applies them
with hysteresis. See ``docs/trust.md`` §5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trust.config import TrustConfig
from trust.drift import DriftMonitor
from trust.rings import RING_PRIVILEGED, RING_SANDBOX, RING_STANDARD, quality_confidence

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
RingArray = npt.NDArray[np.int8]


@dataclass(frozen=True)
class EdgeEvidence:
    """Per edge: who observed whom, the decayed evidence, the observer's credibility."""

    observers: IntArray
    subjects: IntArray
    alpha: FloatArray
    beta: FloatArray
    credible: FloatArray


@dataclass(frozen=True)
class AgentStanding:
    """Per agent, at this recompute (all of length n); ``positive`` and ``negative``
    are the credible evidence (``evidence`` is their sum)."""

    current: RingArray
    scores: FloatArray
    evidence: FloatArray
    positive: FloatArray
    negative: FloatArray
    trust: FloatArray
    retain: FloatArray
    anchors: npt.NDArray[np.bool_]
    sandboxed: Sequence[int]  # held in ring 3 by a drift flag (not those on probation)
    drift: Mapping[int, DriftMonitor]


def ring_bounds(
    cfg: TrustConfig, edges: EdgeEvidence, agents: AgentStanding
) -> tuple[RingArray, RingArray]:
    """(target, floor) rings of every agent for the evidence ring policy.

    See ``docs/trust.md`` §5 and :meth:`trust.rings.RingLadder.step_with_floor`.
    """
    observers, subjects, alpha, beta, credible = (
        edges.observers,
        edges.subjects,
        edges.alpha,
        edges.beta,
        edges.credible,
    )
    n = len(agents.current)
    positive, negative = agents.positive, agents.negative
    scores, evidence, trust = agents.scores, agents.evidence, agents.trust
    # P(quality >= level) is asked only where it can decide a ring: of the ring
    # candidates and of the agents already above ring 3 (their floor). Everyone
    # else stays in ring 3 whatever it is (0 there: the floor is ring 3).
    current = agents.current
    candidate = (trust > 0) & (evidence >= cfg.ring2_evidence)
    good2 = quality_confidence(
        positive, negative, cfg.ring2_quality, candidate | (current <= RING_STANDARD)
    )
    good1 = quality_confidence(
        positive,
        negative,
        cfg.ring1_quality,
        (candidate & (evidence >= cfg.ring1_evidence)) | (current <= RING_PRIVILEGED),
    )
    volume = alpha + beta
    # A first-hand opinion alpha / volume >= ring1_quality on at least one unit.
    vouches = (alpha >= cfg.ring1_quality * volume) & (volume >= 1.0)
    independent = np.bincount(
        subjects, weights=(vouches & (credible >= 0.5)).astype(np.float64), minlength=n
    )
    anchored = np.bincount(
        subjects, weights=(vouches & agents.anchors[observers]).astype(np.float64), minlength=n
    )
    retain = agents.retain
    sure = 1.0 - cfg.ring_confidence
    target = np.full(n, RING_SANDBOX, dtype=np.int8)
    # A trust path from the pre-trusted agents (popularity is not asked).
    ring2 = candidate & (good2 >= sure)
    target[ring2] = RING_STANDARD
    ring1 = (
        ring2
        & (scores >= cfg.ring1_score)
        & (evidence >= cfg.ring1_evidence)
        & (good1 >= sure)
        & ((independent >= cfg.ring1_observers) | (anchored > 0))
        & (retain >= 0.99)
    )
    target[ring1] = RING_PRIVILEGED
    # Ring 1 also asks the recent reports: old evidence can hide a soft drift
    # (asked of the ring-1 candidates only: the window is summed on each call).
    drift = agents.drift
    worse = [
        i
        for i in np.flatnonzero(ring1).tolist()
        if (m := drift.get(i)) is not None and m.recently_worse(cfg)
    ]
    if worse:
        recent = np.asarray(worse, dtype=np.int64)
        target[recent] = np.maximum(target[recent], RING_STANDARD)
    # Promotion is earned: no climb while a drift test is half-way to its alarm.
    suspect = [i for i, m in drift.items() if i < n and m.elevated(cfg)]
    if suspect:
        held = np.asarray(suspect, dtype=np.int64)
        target[held] = np.maximum(target[held], current[held])
    floor = np.full(n, RING_PRIVILEGED, dtype=np.int8)
    floor[(good1 < cfg.ring_confidence) | (retain < 0.5)] = RING_STANDARD
    floor[(good2 < cfg.ring_confidence) | (trust <= 0)] = RING_SANDBOX
    if len(agents.sandboxed):
        floor[np.asarray(agents.sandboxed, dtype=np.int64)] = RING_SANDBOX
    return target, floor


__all__ = ["AgentStanding", "EdgeEvidence", "ring_bounds"]
