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
started from the credibilities of the previous recompute, so the result depends
only on the evidence and the engine's history: every node computes the same.
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
    passes: int = 3,
) -> FloatArray:
    """The accuracy factor in [0, 1] of each of ``len(credibility)`` agents.

    Agents without an edge that has a consensus keep the factor 1 (unknown raters
    are not penalised: their opinions already weigh only through their own trust).
    """
    n = len(credibility)
    factor = np.ones(n)
    volume = alpha + beta
    known = volume > 1e-9
    if not np.any(known):
        return factor
    obs, sub = observer[known], subject[known]
    opinion = alpha[known] / volume[known]
    weight = np.minimum(volume[known], cap)
    vote_size = np.minimum(volume[known], 1.0)
    for _ in range(passes):
        votes = (credibility * factor)[obs] * vote_size
        total = np.bincount(sub, weights=votes, minlength=n)
        summed = np.bincount(sub, weights=votes * opinion, minlength=n)
        others = total[sub] - votes
        has = others > 0.5
        consensus = np.divide(
            summed[sub] - votes * opinion, others, out=np.zeros_like(opinion), where=has
        )
        edge_weight = weight * has
        disagreement = np.abs(opinion - consensus) * edge_weight
        mass = np.bincount(obs, weights=edge_weight, minlength=n)
        wrong = np.bincount(obs, weights=disagreement, minlength=n)
        accuracy = 1.0 - np.divide(wrong, mass, out=np.zeros(n), where=mass > 0)
        factor = np.clip((accuracy - floor) / (full - floor), 0.0, 1.0)
        factor[anchors] = 1.0
    return factor


__all__ = ["accuracy_factors"]
