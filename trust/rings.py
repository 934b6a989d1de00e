"""Trust -> ring: demotion is immediate, promotion is earned one ring at a time.

Ring 0 is the node's own kernel and is never assigned to an agent. An agent's
*target* ring after a recompute is 1 when its score >= ``ring1_score`` and its
credible evidence >= ``ring1_evidence``, 2 for the ring-2 pair of thresholds,
else 3; a drifting agent's target is 3. A target below the current ring is
applied at once; a target above it must hold for ``promotion_rounds``
recomputes in a row before the agent climbs one ring.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from trust.config import TrustConfig

RING_KERNEL = 0
RING_PRIVILEGED = 1
RING_STANDARD = 2
RING_SANDBOX = 3


class RingLadder:
    """Current ring, target ring and promotion streak of every agent (by index)."""

    def __init__(self, config: TrustConfig) -> None:
        self._config = config
        self._ring: list[int] = []
        self._target: list[int] = []
        self._streak: list[int] = []

    def add(self) -> None:
        self._ring.append(RING_SANDBOX)
        self._target.append(RING_SANDBOX)
        self._streak.append(0)

    def ring(self, idx: int) -> int:
        return self._ring[idx]

    def target(self, idx: int) -> int:
        return self._target[idx]

    def demote_now(self, idx: int) -> int:
        """Move to ring 3 at once (drift); returns the previous ring."""
        old = self._ring[idx]
        self._ring[idx] = RING_SANDBOX
        self._target[idx] = RING_SANDBOX
        self._streak[idx] = 0
        return old

    def target_for(self, score: float, evidence: float) -> int:
        cfg = self._config
        if score >= cfg.ring1_score and evidence >= cfg.ring1_evidence:
            return RING_PRIVILEGED
        if score >= cfg.ring2_score and evidence >= cfg.ring2_evidence:
            return RING_STANDARD
        return RING_SANDBOX

    def step(
        self, scores: Sequence[float], evidence: npt.NDArray[np.float64], flagged: set[int]
    ) -> Iterator[tuple[int, int, int]]:
        """Apply one recompute; yields ``(idx, old, new)`` for every ring change."""
        volumes = evidence.tolist()
        rounds = self._config.promotion_rounds
        for idx, current in enumerate(self._ring):
            if idx in flagged:
                target = RING_SANDBOX
            else:
                target = self.target_for(scores[idx], volumes[idx] if idx < len(volumes) else 0.0)
            self._target[idx] = target
            if target > current:
                self._ring[idx], self._streak[idx] = target, 0
                yield idx, current, target
            elif target < current:
                self._streak[idx] += 1
                if self._streak[idx] >= rounds:
                    self._ring[idx], self._streak[idx] = current - 1, 0
                    yield idx, current, current - 1
            else:
                self._streak[idx] = 0
