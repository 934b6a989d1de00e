"""Trust engine: global recompute vs a bare scipy CSR power iteration, and receipt folding.

From the trust issue: recompute for 1k, 10k and 100k agents (10 out-edges each) as
a ratio to a bare scipy CSR power iteration on the same graph in the same run
(goal <= 1.5x; absolute goal for 100k agents: <= 150 ms), and folding one
receipt into the engine (goal <= 20 us).
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from time import perf_counter

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from benchmarks.harness import Benchmark, Goal, Pair, RunConfig, at_most, within
from iatp.clock import ManualClock
from trust import Outcome, Receipt, TrustConfig, TrustEngine

BENCHMARK = Benchmark(
    name="trust",
    title="Trust engine: EigenTrust recompute vs bare scipy CSR, receipt folding",
    description=(
        "Random graphs with 10 out-edges per agent (90 % positive evidence), 10 "
        "pre-trusted agents, damping 0.15, L1 tolerance 1e-10, single thread. The floor "
        "is a bare loop `t = 0.85 * (M @ t) + 0.15 * p` with the L1 stopping test over "
        "the engine's own row-normalised CSR matrix, started from `p`. *Warm* recomputes "
        "follow 1,000 new receipts and start from the previous vector (the engine's "
        "normal mode); *cold* ones start from `p` like the floor and also pay for decay, "
        "weights, normalisation, evidence volumes and rings. Goals from the issue: ratio "
        "<= 1.5, 100k agents <= 150 ms, folding one receipt <= 20 us. Since issue 17 a "
        "recompute also measures rater accuracy (two passes over every edge, warm-started "
        "from the previous recompute), the credibility vouch flow (the edges out of each "
        "BFS frontier), the ring evidence (four sums over every edge) and P(quality >= "
        "level) of the ring candidates: work the bare power iteration does not do, about "
        "12 ms at 10k agents and 2-3 ms of fixed cost at 1k, so the ratio goal holds at "
        "100k agents only (where the warm start of the propagation pays for it)."
    ),
)

SIZES = {"1k": 1_000, "10k": 10_000, "100k": 100_000}
DEGREE = 10
NOW_MS = 1_700_000_000_000
BATCH = 1_000
_BATCH_SEEDS = itertools.count(1)


def _names(n: int) -> list[str]:
    return [f"agent-{i}" for i in range(n)]


@functools.cache
def _graph(n: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(n)
    observer = np.repeat(np.arange(n, dtype=np.int64), DEGREE)
    offset = rng.integers(1, n, size=n * DEGREE)  # never a self-loop
    subject = (observer + offset) % n
    keys = np.unique(observer * n + subject)
    return keys // n, keys % n


@functools.cache
def _shared_engine(n: int) -> TrustEngine:
    """One engine per size, shared by that size's cases (building 100k takes seconds)."""
    return _engine(n)


def _engine(n: int) -> TrustEngine:
    observer, subject = _graph(n)
    rng = np.random.default_rng(n + 1)
    good = rng.random(len(observer)) < 0.9
    amount = rng.integers(1, 20, size=len(observer)).astype(np.float64)
    names = _names(n)
    engine = TrustEngine(
        pre_trusted=names[:10],
        clock=ManualClock(NOW_MS),
        config=TrustConfig(validate_dids=False),
    )
    engine.load_local_trust(
        names,
        observer,
        subject,
        np.where(good, amount, 0.0),
        np.where(good, 0.0, amount),
        np.full(len(observer), NOW_MS),
    )
    engine.recompute(cold=True)
    return engine


def _receipts(n: int, count: int, seed: int) -> Iterator[Receipt]:
    observer, subject = _graph(n)
    names = _names(n)
    rng = random.Random(seed)
    for k in range(count):
        e = rng.randrange(len(observer))
        yield Receipt.create(
            observer=names[observer[e]],
            subject=names[subject[e]],
            interaction_id=f"bench-{seed}-{k}",
            outcome=Outcome.SUCCESS if rng.random() < 0.9 else Outcome.FAILURE,
            at_ms=NOW_MS,
        )


def _bare_power_iteration(matrix: sp.csr_matrix, anchor: npt.NDArray[np.float64]) -> int:
    t = anchor.copy()
    for iteration in range(1, 201):
        nxt = matrix @ t
        nxt *= 0.85
        nxt += 0.15 * anchor
        residual = float(np.abs(nxt - t).sum())
        t = nxt
        if residual < 1e-10:
            return iteration
    return 200


def _recompute_case(n: int, *, warm: bool) -> Callable[[RunConfig], Iterator[Pair]]:
    def factory(config: RunConfig) -> Iterator[Pair]:
        engine = _shared_engine(n)
        scratch = _engine(1_000) if warm else engine
        batches = _BATCH_SEEDS  # shared: a shared engine must never see a batch twice

        def subject(ops: int) -> Sequence[float]:
            times = []
            for _ in range(ops):
                if warm:
                    engine.record_many(_receipts(n, BATCH, next(batches)))
                start = perf_counter()
                engine.recompute(cold=not warm)
                times.append(perf_counter() - start)
            return times

        def floor(ops: int) -> Sequence[float]:
            last = engine._last  # the engine's own matrix of the latest recompute
            assert last is not None
            matrix = last.matrix.copy()
            matrix.data /= 0.85  # the engine stores (1 - a) * C^T; the floor wants C^T
            anchor = engine._anchor()
            times = []
            for _ in range(ops):
                if warm:
                    # The same untimed preparation as the subject (building and folding
                    # 1,000 receipts), so both sides start with equally cold caches.
                    scratch.record_many(_receipts(1_000, BATCH, next(batches)))
                start = perf_counter()
                _bare_power_iteration(matrix, anchor)
                times.append(perf_counter() - start)
            return times

        yield Pair(subject, floor)

    return factory


for _label, _n in SIZES.items():
    for _warm in (True, False):
        _mode = "warm" if _warm else "cold"
        BENCHMARK.latency(
            f"recompute {_label} agents ({_mode})",
            subject=f"`engine.recompute({'' if _warm else 'cold=True'})`, {_n:,} agents, "
            f"~{_n * DEGREE:,} edges"
            + (f", after {BATCH:,} new receipts (not timed)" if _warm else ""),
            floor="bare scipy CSR power iteration from `p` on the same matrix",
            goal=at_most(1.5, metric="p50"),
            ops=5 if _n == 100_000 else None,
            quick_ops=3 if _n == 100_000 else None,
        )(_recompute_case(_n, warm=_warm))

BENCHMARK.latency(
    "recompute 100k agents (warm, absolute)",
    subject="`engine.recompute()`, 100,000 agents, ~1,000,000 edges, after 1,000 new receipts",
    floor="bare scipy CSR power iteration from `p` on the same matrix",
    goal=within(0.150, metric="p50"),
    ops=5,
    quick_ops=3,
)(_recompute_case(100_000, warm=True))


def _fold_case(config: RunConfig) -> Pair:
    n = 10_000
    engine = _engine(n)
    batches = iter(range(10_000_000, 20_000_000))

    def subject(ops: int) -> float:
        receipts = list(_receipts(n, ops, next(batches)))
        start = perf_counter()
        for receipt in receipts:
            engine.record(receipt)
        return perf_counter() - start

    def floor(ops: int) -> float:
        # The least a fold can do: remember the id and add the weight to a per-edge sum.
        receipts = list(_receipts(n, ops, next(batches)))
        seen: set[str] = set()
        sums: dict[tuple[str, str], float] = {}
        start = perf_counter()
        for receipt in receipts:
            seen.add(receipt.receipt_id)
            key = (receipt.observer, receipt.subject)
            sums[key] = sums.get(key, 0.0) + receipt.weight
        return perf_counter() - start

    return Pair(subject, floor)


BENCHMARK.throughput(
    "fold one receipt",
    subject="`engine.record(receipt)` into a 10k-agent engine (decay, beta update, drift "
    "detectors, explain heap); receipts built beforehand",
    floor="`set.add(id)` + a dict sum per (observer, subject)",
    goal=Goal(">=", 50_000, "ops/s", absolute=True),
)(_fold_case)
