"""Rater accuracy: how far an observer's reports agree with everyone else's.

EigenTrust trusts an agent's *reports* as much as its *service*, so an agent that
serves honestly (a spy) can spend the trust it earns on endorsing a bad ring or
Sybil identities, and an agent that slanders keeps its credibility (EigenTrust's
threat model D). Following the feedback-similarity idea of PeerTrust (Xiong and
Liu, 2004), every recompute measures each observer's agreement with the
credible consensus, leave-one-out:

* the observer's opinion of a subject is ``o = alpha / (alpha + beta)``;
* the consensus about the subject without that observer is the mean of the other
  observers' opinions, one vote each (volume cannot buy votes), weighted by their
  credibility times their own accuracy factor from the previous pass;
* an observer's accuracy is ``1 - mean |o - consensus|`` over its edges that have
  a consensus, each edge weighted by ``min(evidence, cap)``;
* its *accuracy factor* ``clip((accuracy - floor) / (full - floor), 0, 1)`` is the
  share of its trust its opinions pass on in the propagation; the rest returns to
  the pre-trusted agents, like the trust of an observer without opinions.

Pre-trusted observers keep the factor 1. The passes are a fixed point iteration
that each recompute moves on by two passes, started from the previous recompute's
factors and credibilities (three passes from 1 on an engine's first recompute
or a cold one), so the result depends only on the evidence and the engine's
history: every node computes the same (a snapshot carries the factors).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def accuracy_factors(
    observer: IntArray,
    subject: IntArray,
    alpha: FloatArray,
    beta: FloatArray,
    credibility: FloatArray,
    anchors: IntArray,
    *,
    floor: float = 0.6,
    full: float = 0.9,
    cap: float = 5.0,
    start: FloatArray | None = None,
    passes: int = 3,
) -> FloatArray:
    """The accuracy factor in [0, 1] of each of ``len(credibility)`` agents.

    ``start`` is the previous recompute's factors (agents beyond it start at 1):
    the fixed point then moves on by ``passes`` from there instead of from 1.
    Agents without an edge that has a consensus keep the factor 1 (unknown raters
    are not penalised: their opinions already weigh only through their own trust).
    """
    n = len(credibility)
    factor = np.ones(n)
    if start is not None:
        kept = min(n, len(start))
        factor[:kept] = start[:kept]
    factor[anchors] = 1.0
    volume = alpha + beta
    known = volume > 1e-9
    if not np.any(known):
        return np.ones(n)
    if bool(np.all(known)):
        obs, sub = observer, subject
    else:
        obs, sub, alpha, volume = observer[known], subject[known], alpha[known], volume[known]
    opinion = alpha / volume
    weight = np.minimum(volume, cap)
    vote_size = np.minimum(volume, 1.0)
    for _ in range(passes):
        votes = (credibility * factor)[obs]
        votes *= vote_size
        said = votes * opinion
        others = _sums(sub, votes, n)[sub]
        others -= votes
        has = others > 0.5
        # Where nobody else has a say the consensus is unused (its weight is 0).
        np.maximum(others, 0.5, out=others)
        consensus = _sums(sub, said, n)[sub]
        consensus -= said
        consensus /= others
        edge_weight = weight * has
        consensus -= opinion
        np.abs(consensus, out=consensus)
        consensus *= edge_weight
        mass = _sums(obs, edge_weight, n)
        wrong = _sums(obs, consensus, n)
        np.maximum(mass, 1e-300, out=mass)  # no edge: wrong is 0, accuracy 1
        accuracy = 1.0 - wrong / mass
        factor = np.clip((accuracy - floor) / (full - floor), 0.0, 1.0)
        factor[anchors] = 1.0
    return factor


def _sums(index: IntArray, weights: FloatArray, n: int) -> FloatArray:
    """``weights`` summed per index (``np.bincount``, typed as the floats it returns)."""
    return np.bincount(index, weights=weights, minlength=n).astype(np.float64, copy=False)


__all__ = ["accuracy_factors"]
