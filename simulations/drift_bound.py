"""What the best soft-drift test could do on the evaluation's population.

``python -m simulations.drift_bound`` runs an *oracle* Bernoulli CUSUM: it knows
every agent's exact failure rate ``p0`` and the exact rate after the turn
(``p1``), so its log-likelihood ratio is the optimal statistic for that change
(Page; Lorden, Moustakides). Honest agents draw ``p0`` uniformly from the
evaluation's 1 - quality range (0.03-0.07); for each alarm level ``h`` it reports
the false alarms per 10^4 honest reports and the delay after a turn to ``p1``:
the median and 95th percentile over agents, and the distribution (10th / 50th /
90th percentile over trials) of the **worst of 18** drifting agents, which is
what the evaluation's worst-seed figure measures (6 drifting agents x 3 seeds).

The product's test (``trust/drift.py``) has to learn ``p0`` and does not know
``p1``, so it can only do worse. ``docs/trust.md`` section 11 uses this to show
that "drift to 15 % bad caught within 200 interactions at <= 1 false alarm per
10^4" is met by the oracle on about half of the evaluation's seed triples.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FAILURE_RANGE = (0.03, 0.07)


@dataclass(frozen=True)
class BoundRow:
    """The oracle test at one alarm level ``h``."""

    h: float
    false_alarms: float  # per 10^4 honest reports
    delay: tuple[float, float]  # median, 95th percentile over agents
    worst: tuple[float, float, float]  # worst of `group` agents: 10th / 50th / 90th pct


def _increments(p0: np.ndarray, p1: float) -> tuple[np.ndarray, np.ndarray]:
    return np.log(p1 / p0), np.log((1.0 - p1) / (1.0 - p0))


def false_alarms(h: float, p1: float, rng: np.random.Generator, agents: int, reports: int) -> float:
    """Alarms per 10^4 reports on honest agents (the statistic restarts after each)."""
    p0 = rng.uniform(*FAILURE_RANGE, agents)
    up, down = _increments(p0, p1)
    s = np.zeros(agents)
    alarms = 0
    for _ in range(reports):
        s = np.maximum(0.0, s + np.where(rng.random(agents) < p0, up, down))
        hit = s >= h
        alarms += int(hit.sum())
        s[hit] = 0.0
    return alarms * 1e4 / (agents * reports)


def delays(
    h: float, p1: float, rng: np.random.Generator, trials: int, group: int, horizon: int
) -> tuple[tuple[float, float], tuple[float, float, float]]:
    """Reports after a turn to ``p1`` until the alarm (``horizon`` if none)."""
    agents = trials * group
    p0 = rng.uniform(*FAILURE_RANGE, agents)
    up, down = _increments(p0, p1)
    s = np.zeros(agents)
    caught = np.full(agents, horizon)
    for t in range(horizon):
        s = np.maximum(0.0, s + np.where(rng.random(agents) < p1, up, down))
        new = (s >= h) & (caught == horizon)
        caught[new] = t + 1
    worst = caught.reshape(trials, group).max(axis=1)
    median, p95 = np.percentile(caught, [50, 95])
    low, mid, high = np.percentile(worst, [10, 50, 90])
    return (float(median), float(p95)), (float(low), float(mid), float(high))


def bound(
    levels: Sequence[float],
    *,
    p1: float = 0.15,
    seed: int = 1,
    agents: int = 4000,
    reports: int = 4000,
    trials: int = 400,
    group: int = 18,
    horizon: int = 3000,
) -> list[BoundRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for h in levels:
        fa = false_alarms(h, p1, rng, agents, reports)
        delay, worst = delays(h, p1, rng, trials, group, horizon)
        rows.append(BoundRow(h, fa, delay, worst))
    return rows


def render(rows: Sequence[BoundRow], group: int = 18) -> str:
    lines = [
        "| h | false alarms / 1e4 | delay median | delay p95 | "
        f"worst of {group}: p10 / p50 / p90 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.h:g} | {r.false_alarms:.2f} | {r.delay[0]:.0f} | {r.delay[1]:.0f} | "
            f"{r.worst[0]:.0f} / {r.worst[1]:.0f} / {r.worst[2]:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.drift_bound",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--levels", type=float, nargs="+", default=[4.0, 5.0, 5.5, 6.0, 7.0])
    parser.add_argument("--p1", type=float, default=0.15, help="failure rate after the turn")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(render(bound(args.levels, p1=args.p1, seed=args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
