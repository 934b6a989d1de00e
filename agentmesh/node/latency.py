"""A fixed-bucket latency histogram in plain Python (no metrics library in the core).

The node times signature verification only while a histogram is set on it
(``node.verify_latency``, by the metrics endpoint): without one the hot path
pays a ``None`` check.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import pairwise

# Seconds: an Ed25519 verification is ~50 µs; a queue under load adds milliseconds.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class LatencyHistogram:
    """Counts of observations per upper bound (``le``), their sum and their count.

    Args:
        buckets: increasing upper bounds in seconds; values above the last one
            are counted only in ``count`` (the ``+Inf`` bucket).
    """

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        bounds = tuple(buckets)
        if not bounds or any(a >= b for a, b in pairwise(bounds)):
            raise ValueError("buckets must be a non-empty increasing sequence")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` per bucket, ``inf`` last."""
        total = 0
        result = []
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            total += count
            result.append((bound, total))
        return result


__all__ = ["DEFAULT_BUCKETS", "LatencyHistogram"]
