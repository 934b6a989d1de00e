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
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from trust.edges import EdgeStore

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class PropagationResult:
    """``matrix`` is ``(1 - a) * C^T`` in CSR; ``order`` maps its entries to edge ids."""

    trust: FloatArray
    iterations: int
    residual: float
    matrix: sp.csr_matrix
    order: npt.NDArray[np.int64]

    def incoming(self, subject: int) -> list[tuple[int, int, float]]:
        """``(edge, observer, contribution)`` into ``subject``; contribution = (1-a) c t."""
        if subject >= self.matrix.shape[0]:
            return []
        start, stop = int(self.matrix.indptr[subject]), int(self.matrix.indptr[subject + 1])
        return [
            (
                int(self.order[pos]),
                int(self.matrix.indices[pos]),
                float(self.matrix.data[pos]) * float(self.trust[int(self.matrix.indices[pos])]),
            )
            for pos in range(start, stop)
        ]


class Propagator:
    """Runs the power iteration; keeps the CSR structure and the last vector."""

    def __init__(self) -> None:
        self._version = -1
        self._n = -1
        self._order: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._indptr: npt.NDArray[np.integer[Any]] = np.zeros(1, dtype=np.int32)
        self._indices: npt.NDArray[np.integer[Any]] = np.zeros(0, dtype=np.int32)
        self.previous: FloatArray | None = None
        self._work: FloatArray = np.empty(0)
        self._matrix: sp.csr_matrix | None = None

    def _structure(self, edges: EdgeStore, n: int) -> None:
        if edges.version == self._version and n == self._n:
            return
        subject = edges.subject[: edges.count]
        # A stable sort of 16-bit keys is a radix sort: ~6x faster than on int64 keys.
        keys = subject.astype(np.uint16) if n <= 2**16 else subject
        self._order = np.argsort(keys, kind="stable")
        counts = np.bincount(subject, minlength=n)
        index_type = np.int32 if max(n, edges.count) < 2**31 - 1 else np.int64
        self._indptr = np.concatenate(([0], np.cumsum(counts))).astype(index_type)
        self._indices = edges.observer[: edges.count][self._order].astype(index_type)
        self._version, self._n = edges.version, n
        self._matrix = None

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
        retain: FloatArray | None = None,
    ) -> PropagationResult:
        """Global trust of ``n`` agents given per-edge weights ``w`` (>= 0, len = edges).

        ``anchor`` is the pre-trusted distribution ``p`` (sums to 1). ``retain`` (per
        observer, in [0, 1]) is the share of an observer's trust its opinions pass on;
        the rest returns to ``p`` like the trust of an observer without opinions.
        """
        self._structure(edges, n)
        row_sum = np.bincount(edges.observer[: edges.count], weights=weights, minlength=n)
        keep = 1.0 - damping
        # (1 - a) is folded into the matrix: one vector operation less per iteration.
        scale = np.divide(keep, row_sum, out=np.zeros(n), where=row_sum > 0)
        leak: FloatArray | None = None
        if retain is not None:
            scale *= retain[:n]
            leak = np.where(row_sum > 0, 1.0 - retain[:n], 0.0)
            if not np.any(leak > 0):
                leak = None
        normalised = np.take(scale, edges.observer[: edges.count], out=self._scratch(edges.count))
        normalised *= weights
        matrix = self._matrix_with(np.take(normalised, self._order), n)
        dangling = np.flatnonzero(row_sum <= 0)
        support = np.flatnonzero(anchor)  # the pre-trusted agents: few, so added sparsely
        anchor_support = anchor[support]
        t = self._start(n, anchor, cold)
        scratch = np.empty(n)
        residual, iterations = float("inf"), 0
        while iterations < max_iterations:
            iterations += 1
            nxt = matrix @ t
            lost = float(t[dangling].sum()) if len(dangling) else 0.0
            if leak is not None:
                lost += float(leak @ t)
            nxt[support] += (keep * lost + damping) * anchor_support
            np.subtract(nxt, t, out=scratch)
            np.abs(scratch, out=scratch)
            residual = float(scratch.sum())
            t = nxt
            if residual < tolerance:
                break
        self.previous = t
        return PropagationResult(t, iterations, residual, matrix, self._order)

    def _scratch(self, size: int) -> FloatArray:
        if len(self._work) < size:
            self._work = np.empty(max(size, 2 * len(self._work)))
        return self._work[:size]

    def _matrix_with(self, data: FloatArray, n: int) -> sp.csr_matrix:
        # The index arrays are ours and already canonical (built in _structure), so the
        # matrix is assembled without scipy's O(nnz) format check on every run.
        # One matrix object per structure: only its data changes between runs.
        matrix = self._matrix
        if matrix is None or matrix.shape != (n, n):
            matrix = self._matrix = sp.csr_matrix((n, n), dtype=np.float64)
            matrix.indptr, matrix.indices = self._indptr, self._indices
        matrix.data = data
        return matrix

    def _start(self, n: int, anchor: FloatArray, cold: bool) -> FloatArray:
        previous = self.previous
        if cold or previous is None or previous.sum() <= 0:
            return anchor.copy()
        t = np.zeros(n)
        t[: min(n, len(previous))] = previous[:n]
        total = t.sum()
        return t / total if total > 0 else anchor.copy()
