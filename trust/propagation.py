"""Global trust: EigenTrust (Kamvar et al., 2003) as a personalized PageRank.

With ``C`` the row-normalised local trust (``c_ij = w_ij / sum_k w_ik``,
``w_ij = max(alpha_ij - kappa * beta_ij, 0)``), ``p`` the uniform distribution
over the pre-trusted agents and ``a`` the damping::

    t <- (1 - a) * (C^T t + (sum of t over observers with no opinion) * p) + a * p

Observers without any positive opinion (and drifting observers, whose opinions
are suspended) hand their weight back to ``p``, as in the paper. The matrix
``C^T`` is a scipy CSR built from the edge arrays; its sparsity structure is
cached and rebuilt only when edges are added. Each run starts from the previous
vector (warm start).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from trust.edges import EdgeStore

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class PropagationResult:
    trust: FloatArray
    iterations: int
    residual: float
    matrix: sp.csr_matrix
    order: npt.NDArray[np.int64]


class Propagator:
    """Runs the power iteration; keeps the CSR structure and the last vector."""

    def __init__(self) -> None:
        self._version = -1
        self._n = -1
        self._order: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._indptr: npt.NDArray[np.int64] = np.zeros(1, dtype=np.int64)
        self._indices: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.previous: FloatArray | None = None

    def _structure(self, edges: EdgeStore, n: int) -> None:
        if edges.version == self._version and n == self._n:
            return
        subject = edges.subject[: edges.count]
        self._order = np.argsort(subject, kind="stable")
        counts = np.bincount(subject, minlength=n)
        self._indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        self._indices = edges.observer[: edges.count][self._order]
        self._version, self._n = edges.version, n

    def run(
        self,
        edges: EdgeStore,
        n: int,
        weights: FloatArray,
        anchor: FloatArray,
        *,
        damping: float,
        tolerance: float,
        max_iterations: int,
        cold: bool = False,
    ) -> PropagationResult:
        """Global trust of ``n`` agents given per-edge weights ``w`` (>= 0, len = edges).

        ``anchor`` is the pre-trusted distribution ``p`` (sums to 1).
        """
        self._structure(edges, n)
        row_sum = np.bincount(edges.observer[: edges.count], weights=weights, minlength=n)
        scale = np.divide(1.0, row_sum, out=np.zeros(n), where=row_sum > 0)
        normalised = weights * scale[edges.observer[: edges.count]]
        matrix = sp.csr_matrix((normalised[self._order], self._indices, self._indptr), shape=(n, n))
        dangling = (row_sum <= 0).astype(np.float64)
        t = self._start(n, anchor, cold)
        keep = 1.0 - damping
        residual, iterations = float("inf"), 0
        while iterations < max_iterations:
            iterations += 1
            nxt = matrix @ t
            nxt *= keep
            nxt += (keep * float(dangling @ t) + damping) * anchor
            residual = float(np.abs(nxt - t).sum())
            t = nxt
            if residual < tolerance:
                break
        self.previous = t
        return PropagationResult(t, iterations, residual, matrix, self._order)

    def _start(self, n: int, anchor: FloatArray, cold: bool) -> FloatArray:
        previous = self.previous
        if cold or previous is None or previous.sum() <= 0:
            return anchor.copy()
        t = np.zeros(n)
        t[: min(n, len(previous))] = previous[:n]
        total = t.sum()
        return t / total if total > 0 else anchor.copy()
