"""Trust -> ring: demotion is immediate, promotion is earned one ring at a time.

Ring 0 is the node's own kernel and is never assigned to an agent. An agent's
*target* ring after a recompute is 1 when its score >= ``ring1_score`` and its
credible evidence >= ``ring1_evidence``, 2 for the ring-2 pair of thresholds,
else 3; a drifting agent's target is 3. A target below the current ring is
applied at once; a target above it must hold for ``promotion_rounds``
recomputes in a row before the agent climbs one ring.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.special import betainc

from trust.config import TrustConfig

RING_KERNEL = 0
RING_PRIVILEGED = 1
RING_STANDARD = 2
RING_SANDBOX = 3
_INITIAL_CAPACITY = 1024
FloatArray = npt.NDArray[np.float64]


def quality_confidence(
    positive: FloatArray, negative: FloatArray, level: float, asked: npt.NDArray[np.bool_]
) -> FloatArray:
    """P(quality >= level) under the Beta(positive + 1, negative + 1) posterior.

    Computed only where ``asked`` (the incomplete beta function is the costly part
    of a recompute at 100k agents); 0 elsewhere.
    """
    confidence = np.zeros(len(positive))
    where = np.flatnonzero(asked)
    if len(where):
        confidence[where] = 1.0 - betainc(positive[where] + 1.0, negative[where] + 1.0, level)
    return confidence


class RingLadder:
    """Current ring, target ring and promotion streak of every agent (by index)."""

    def __init__(self, config: TrustConfig) -> None:
        self._config = config
        self._count = 0
        self._ring = np.full(_INITIAL_CAPACITY, RING_SANDBOX, dtype=np.int8)
        self._target = np.full(_INITIAL_CAPACITY, RING_SANDBOX, dtype=np.int8)
        self._streak = np.zeros(_INITIAL_CAPACITY, dtype=np.int32)

    def add(self) -> None:
        if self._count == len(self._ring):
            size = 2 * len(self._ring)
            self._ring = np.concatenate((self._ring, np.full(size // 2, RING_SANDBOX, np.int8)))
            self._target = np.concatenate((self._target, np.full(size // 2, RING_SANDBOX, np.int8)))
            self._streak = np.concatenate((self._streak, np.zeros(size // 2, np.int32)))
        self._count += 1

    def ring(self, idx: int) -> int:
        return int(self._ring[idx])

    def target(self, idx: int) -> int:
        return int(self._target[idx])

    def demote_now(self, idx: int) -> int:
        """Move to ring 3 at once (drift); returns the previous ring."""
        old = int(self._ring[idx])
        self._ring[idx] = RING_SANDBOX
        self._target[idx] = RING_SANDBOX
        self._streak[idx] = 0
        return old

    def targets(self, scores: FloatArray, evidence: FloatArray) -> npt.NDArray[np.int8]:
        """Target ring of every agent from its score and credible evidence."""
        cfg = self._config
        target = np.full(len(scores), RING_SANDBOX, dtype=np.int8)
        target[(scores >= cfg.ring2_score) & (evidence >= cfg.ring2_evidence)] = RING_STANDARD
        target[(scores >= cfg.ring1_score) & (evidence >= cfg.ring1_evidence)] = RING_PRIVILEGED
        return target

    def step_with_floor(
        self, target: npt.NDArray[np.int8], floor: npt.NDArray[np.int8]
    ) -> list[tuple[int, int, int]]:
        """Hysteresis: demote at once to ``floor`` (the best ring the evidence still
        allows), climb one ring towards ``target`` after ``promotion_rounds`` in a row
        (``ring1_promotion_rounds`` from ring 2 to ring 1).
        """
        return self._advance(target, floor, self._config.ring1_promotion_rounds)

    def step(
        self, scores: FloatArray, evidence: FloatArray, flagged: Sequence[int]
    ) -> list[tuple[int, int, int]]:
        """Apply one recompute of the score policy (the floor is the target itself);
        returns ``(idx, old, new)`` for every ring change."""
        n = self._count
        target = self.targets(scores[:n], evidence[:n])
        if len(flagged):
            target[np.asarray(flagged, dtype=np.int64)] = RING_SANDBOX
        return self._advance(target, target, self._config.promotion_rounds)

    def _advance(
        self, target: npt.NDArray[np.int8], floor: npt.NDArray[np.int8], ring1_rounds: int
    ) -> list[tuple[int, int, int]]:
        n = self._count
        target, floor = target[:n], floor[:n]
        current = self._ring[:n]
        self._target[:n] = np.maximum(target, np.minimum(floor, current))
        demote = current < floor
        climb = (target < current) & ~demote
        streak = self._streak[:n]
        streak[~climb] = 0
        streak[climb] += 1
        needed = np.where(current <= RING_STANDARD, ring1_rounds, self._config.promotion_rounds)
        promote = climb & (streak >= needed)
        new = current.copy()
        new[demote] = floor[demote]
        new[promote] = current[promote] - 1
        streak[promote] = 0
        changed = np.flatnonzero(new != current)
        events = [(int(i), int(current[i]), int(new[i])) for i in changed]
        self._ring[:n] = new
        return events
