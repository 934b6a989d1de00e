"""Rater credibility: whose reports count, and why Sybils cannot mint it.

An observer's *service* trust (its share of the global vector) says how well it
serves, not whether its reports are true: most honest requesters rarely serve,
so weighting reports by service trust throws their first-hand evidence away.
Rater credibility is computed apart from service trust, as a capacity-bounded
flow from the pre-trusted agents (Advogato's trust metric, Levien 2009, with
fractional flow), times the observer's rater accuracy (``trust/accuracy.py``):

* a *vouch* is an edge whose observer holds a favourable first-hand opinion of
  the subject (``alpha / (alpha + beta) >= level`` on at least one unit of
  evidence) and whose observer is itself accurate (factor >= 0.5) and not
  flagged;
* every pre-trusted agent holds ``capacity`` units; an agent reached at BFS depth
  ``d`` along vouches may hold at most ``cap(d) = max(1, capacity / decay**d)``;
* depth by depth, each agent keeps one unit for itself (its credibility is the
  part of that unit it received, at most 1) and splits the rest evenly over the
  vouched agents not reached yet; flow beyond ``cap(d)`` is dropped.

**The Sybil bound.** Credibility only enters a Sybil region through *attack
edges* (vouches by agents outside it), and the flow a vouching agent ``u`` can
pass is at most ``cap(depth(u)) - 1``. Inside the region flow is only split,
never created, so the total credibility of the region is at most
``sum over attack edges' tails u of (cap(depth(u)) - 1)``: ``O(k)`` for ``k``
attack edges, whatever the number of Sybil identities (tested with hypothesis).
It is a bound on *credibility*, which is what rings and drift detection count;
the service-trust mass of a Sybil region is bounded separately by the
personalised random walk (EigenTrust restarts at the pre-trusted agents only).

Honest requesters that a credible agent has served well and vouched for reach
credibility 1 whether or not they serve much themselves; an agent nobody
credible vouches for (a newcomer, a Sybil) has credibility 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def rater_flow(
    observer: IntArray,
    subject: IntArray,
    vouch: BoolArray,
    n: int,
    seeds: IntArray,
    *,
    capacity: float,
    decay: float,
) -> FloatArray:
    """The flow credibility in [0, 1] of each of ``n`` agents (seeds have 1).

    Args:
        observer: edge observers.
        subject: edge subjects (one edge per pair).
        vouch: per edge, True when the observer vouches for the subject.
        n: agent count.
        seeds: the pre-trusted agents.
        capacity: units each seed holds (it keeps one).
        decay: capacity divisor per BFS depth (>= 1).
    """
    credibility = np.zeros(n)
    if n == 0 or len(seeds) == 0:
        return credibility
    # The vouch edges grouped by observer (stable: the fold order within a group), so
    # each BFS step reads only the edges out of its frontier.
    tails = observer[vouch]
    fan = np.bincount(tails, minlength=n)
    first = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(fan, out=first[1:])
    heads = subject[vouch][np.argsort(tails, kind="stable")]
    budget = np.zeros(n)
    reached = np.zeros(n, dtype=bool)
    reached[seeds] = True
    credibility[seeds] = 1.0
    budget[seeds] = max(capacity - 1.0, 0.0)
    frontier = np.unique(seeds)
    depth = 0
    while len(frontier):
        depth += 1
        frontier = frontier[budget[frontier] > 0]
        lengths = fan[frontier]
        total = int(lengths.sum())
        if total == 0:
            break
        offsets = np.repeat(first[frontier] - (np.cumsum(lengths) - lengths), lengths)
        offsets += np.arange(total)
        out, into = np.repeat(frontier, lengths), heads[offsets]
        active = ~reached[into]
        if not np.any(active):
            break
        out, into = out[active], into[active]
        fan_out = np.bincount(out, minlength=n).astype(np.float64)
        received = np.bincount(into, weights=budget[out] / fan_out[out], minlength=n)
        children = np.flatnonzero(received > 0)
        kept = np.minimum(received[children], max(1.0, capacity / decay**depth))
        credibility[children] = np.minimum(kept, 1.0)
        budget[children] = kept - credibility[children]
        reached[children] = True
        frontier = children
    return credibility


def vouches(
    alpha: FloatArray, beta: FloatArray, observer: IntArray, trusted: BoolArray, level: float
) -> BoolArray:
    """Per edge: a favourable first-hand opinion (>= ``level`` on >= 1 unit) by a
    ``trusted`` observer (accurate and not flagged)."""
    volume = alpha + beta
    # opinion alpha / volume >= level, without the division (volume >= 1 > 0)
    result: BoolArray = (alpha >= level * volume) & (volume >= 1.0) & trusted[observer]
    return result


__all__ = ["rater_flow", "vouches"]
