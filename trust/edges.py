"""Local trust per (observer, subject): decayed beta evidence kept in flat numpy arrays.

Each edge holds the positive evidence ``alpha`` and the negative evidence
``beta``, both decayed to the edge's ``last`` time with the configured half-life.
A receipt at time ``t`` is folded in as

* ``t >= last``: ``alpha <- alpha * 2^(-(t - last)/H) + w``, ``last <- t``;
* ``t < last`` (it arrived late): ``alpha <- alpha + w * 2^(-(last - t)/H)``;

so the state equals ``sum_k w_k 2^(-(last - t_k)/H)`` whatever the arrival order
(up to float rounding). The local estimate is the beta mean
``(alpha + 1) / (alpha + beta + 2)`` next to the evidence amount ``alpha + beta``:
an unknown pair is (0.5, 0), a distrusted one is (low, large).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trust.errors import InvalidEvidence

_INITIAL_CAPACITY = 1024
_KEY_SHIFT = 32


@dataclass(frozen=True, slots=True)
class LocalTrust:
    """What one observer's own evidence says about one subject, decayed to ``at_ms``."""

    observer: str
    subject: str
    estimate: float
    evidence: float
    positive: float
    negative: float
    at_ms: int

    @property
    def known(self) -> bool:
        """False when the observer has no (remaining) evidence about the subject."""
        return self.evidence > 1e-9


def check_snapshot(
    agents: int,
    observer: npt.ArrayLike,
    subject: npt.ArrayLike,
    positive: npt.ArrayLike,
    negative: npt.ArrayLike,
    at_ms: npt.ArrayLike,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
]:
    """Validated arrays of a local-trust snapshot over ``agents`` agents.

    Raises:
        InvalidEvidence: lengths differ, an index is out of range, an edge repeats or
            is a self-loop, or an amount is negative or not finite.
    """
    obs = np.asarray(observer, dtype=np.int64)
    sub = np.asarray(subject, dtype=np.int64)
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    last = np.asarray(at_ms, dtype=np.float64)
    if not len(obs) == len(sub) == len(pos) == len(neg) == len(last):
        raise InvalidEvidence("edge arrays differ in length")
    if len(obs) and (min(obs.min(), sub.min()) < 0 or max(obs.max(), sub.max()) >= agents):
        raise InvalidEvidence("edge index out of range")
    if np.any(obs == sub):
        raise InvalidEvidence("self-evidence in the snapshot")
    amounts_ok = np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))
    if not amounts_ok or np.any(pos < 0) or np.any(neg < 0) or not np.all(np.isfinite(last)):
        raise InvalidEvidence("evidence amounts and times must be finite, amounts >= 0")
    if len(np.unique(obs * agents + sub)) != len(obs):
        raise InvalidEvidence("an edge appears twice in the snapshot")
    return obs, sub, pos, neg, last


class EdgeStore:
    """Growable arrays of edges; ``version`` changes whenever an edge is added."""

    def __init__(self) -> None:
        self._index: dict[int, int] = {}
        self.count = 0
        self.version = 0
        self.observer = np.zeros(_INITIAL_CAPACITY, dtype=np.int64)
        self.subject = np.zeros(_INITIAL_CAPACITY, dtype=np.int64)
        self.alpha = np.zeros(_INITIAL_CAPACITY)
        self.beta = np.zeros(_INITIAL_CAPACITY)
        self.last = np.zeros(_INITIAL_CAPACITY)

    def edge(self, observer: int, subject: int) -> int | None:
        return self._index.get((observer << _KEY_SHIFT) | subject)

    def fold(
        self,
        observer: int,
        subject: int,
        positive: float,
        negative: float,
        at_ms: int,
        half_life_ms: float,
    ) -> None:
        """Add decayed evidence to the edge ``observer -> subject`` (created if new)."""
        key = (observer << _KEY_SHIFT) | subject
        e = self._index.get(key)
        if e is None:
            e = self._append(key, observer, subject, at_ms)
        last = float(self.last[e])
        if at_ms >= last:
            decay = 2.0 ** (-(at_ms - last) / half_life_ms)
            self.alpha[e] = float(self.alpha[e]) * decay + positive
            self.beta[e] = float(self.beta[e]) * decay + negative
            self.last[e] = at_ms
        else:
            decay = 2.0 ** (-(last - at_ms) / half_life_ms)
            self.alpha[e] = float(self.alpha[e]) + positive * decay
            self.beta[e] = float(self.beta[e]) + negative * decay

    def _append(self, key: int, observer: int, subject: int, at_ms: int) -> int:
        if self.count == len(self.alpha):
            self._grow()
        e = self.count
        self.count += 1
        self.version += 1
        self._index[key] = e
        self.observer[e] = observer
        self.subject[e] = subject
        self.last[e] = at_ms
        return e

    def _grow(self) -> None:
        size = 2 * len(self.alpha)
        for name in ("observer", "subject", "alpha", "beta", "last"):
            old = getattr(self, name)
            new = np.zeros(size, dtype=old.dtype)
            new[: self.count] = old[: self.count]
            setattr(self, name, new)

    def load(
        self,
        observer: npt.NDArray[np.int64],
        subject: npt.NDArray[np.int64],
        alpha: npt.NDArray[np.float64],
        beta: npt.NDArray[np.float64],
        last: npt.NDArray[np.float64],
    ) -> None:
        """Bulk-load unique edges into an empty store (checked by the caller)."""
        count = len(observer)
        capacity = max(_INITIAL_CAPACITY, 1 << max(count - 1, 1).bit_length())
        for name, values in (
            ("observer", observer),
            ("subject", subject),
            ("alpha", alpha),
            ("beta", beta),
            ("last", last),
        ):
            array = np.zeros(capacity, dtype=getattr(self, name).dtype)
            array[:count] = values
            setattr(self, name, array)
        keys = (observer.astype(np.int64) << _KEY_SHIFT) | subject.astype(np.int64)
        self._index = dict(zip(keys.tolist(), range(count), strict=True))
        self.count = count
        self.version += 1

    def decayed(
        self, now_ms: int, half_life_ms: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(alpha, beta) of every edge decayed to ``now_ms`` (never amplified)."""
        n = self.count
        age = np.maximum(now_ms - self.last[:n], 0.0)
        decay = np.exp2(-age / half_life_ms)
        return self.alpha[:n] * decay, self.beta[:n] * decay

    def decayed_into(
        self,
        now_ms: int,
        half_life_ms: float,
        alpha_out: npt.NDArray[np.float64],
        beta_out: npt.NDArray[np.float64],
    ) -> None:
        """Like :meth:`decayed`, written into caller-owned buffers of length ``count``.

        Reusing buffers across recomputes avoids allocating (and page-faulting) several
        arrays of the edge count on every run.
        """
        n = self.count
        decay = alpha_out
        np.subtract(self.last[:n], now_ms, out=decay)
        np.minimum(decay, 0.0, out=decay)
        decay *= 1.0 / half_life_ms
        np.exp2(decay, out=decay)
        np.multiply(self.beta[:n], decay, out=beta_out)
        np.multiply(self.alpha[:n], decay, out=alpha_out)

    def local(self, e: int, now_ms: int, half_life_ms: float) -> tuple[float, float]:
        """(alpha, beta) of one edge decayed to ``now_ms``."""
        decay = 2.0 ** (-max(now_ms - float(self.last[e]), 0.0) / half_life_ms)
        return float(self.alpha[e]) * decay, float(self.beta[e]) * decay
