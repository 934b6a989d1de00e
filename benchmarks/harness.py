"""The benchmark framework: cases, goals, interleaved rounds, statistics.

A *benchmark* is a module ``benchmarks/bench_<name>.py`` holding a module-level
``BENCHMARK = Benchmark(...)`` and one or more *cases* registered on it with
``@BENCHMARK.throughput(...)`` or ``@BENCHMARK.latency(...)``.

A case function receives a :class:`RunConfig` and returns (or, as a generator,
yields — code after the ``yield`` is teardown) a :class:`Pair` of two runners:
the *subject* and its *floor*. Each runner takes ``n`` (operations to do) and
times itself, so per-round preparation stays out of the measurement:

* throughput runner: ``run(n) -> float`` — elapsed seconds for ``n`` operations;
* latency runner: ``run(n) -> Sequence[float]`` — ``n`` per-operation seconds.

A floor runner may instead return :class:`Measured` (its value plus named
*parts*, e.g. a floor that is the slower of two ceilings): each part gets an
extra report row, the subject against that part, with no goal.

The harness warms both runners up, calibrates ``n`` so one side of a round
takes about ``RunConfig.round_seconds``, then runs rounds interleaved
(subject, floor, subject, floor, ...). Every round gives a *paired* ratio; the
reported ratio is the median of those, next to both sides' min/median/max.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import inspect
import math
import os
import pkgutil
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal

ThroughputRunner = Callable[[int], float]
LatencyRunner = Callable[[int], Sequence[float]]


class Kind(Enum):
    THROUGHPUT = "throughput"
    LATENCY = "latency"


@dataclass(frozen=True)
class Goal:
    """A target for one ratio; e.g. ``at_least(0.85)`` or ``at_most(1.5, metric="p99")``.

    For throughput cases ``metric`` is ``"ops/s"`` (ratio = subject ops/s ÷ floor
    ops/s, higher is better). For latency cases it is ``"p50"`` or ``"p99"``
    (ratio = subject latency ÷ floor latency, lower is better).
    """

    op: Literal[">=", "<="]
    threshold: float
    metric: str = "ops/s"
    absolute: bool = False  # on the subject's own median (ops/s or seconds), not the ratio

    def met(self, ratio: float) -> bool:
        return ratio >= self.threshold if self.op == ">=" else ratio <= self.threshold

    def __str__(self) -> str:
        if self.absolute:
            if self.metric == "ops/s":
                return f"ops/s {self.op} {self.threshold:g}"
            return f"{self.metric} {self.op} {self.threshold * 1e3:g} ms"
        what = "ratio" if self.metric == "ops/s" else f"{self.metric} ratio"
        return f"{what} {self.op} {self.threshold:g}"


def at_least(threshold: float, *, metric: str = "ops/s") -> Goal:
    return Goal(">=", threshold, metric)


def at_most(threshold: float, *, metric: str = "p50") -> Goal:
    return Goal("<=", threshold, metric)


def within(seconds: float, *, metric: str = "p50") -> Goal:
    """An absolute latency goal: the subject's median ``metric`` is at most ``seconds``."""
    return Goal("<=", seconds, metric, absolute=True)


@dataclass(frozen=True)
class Pair:
    """The two runners of a case: the thing measured and its floor."""

    subject: Callable[[int], Any]
    floor: Callable[[int], Any]


@dataclass(frozen=True)
class Measured:
    """A floor runner's result with named parts (same kind as ``value``).

    E.g. a throughput floor that is the slower of two ceilings returns
    ``Measured(max(ta, tb), {"(a) ...": ta, "(b) ...": tb})``.
    """

    value: Any
    parts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    quick: bool = False
    rounds: int = 9
    round_seconds: float = 0.25
    min_ops: int = 50
    max_ops: int = 1_000_000

    @classmethod
    def for_mode(cls, quick: bool) -> RunConfig:
        if quick:
            return cls(quick=True, rounds=3, round_seconds=0.03, min_ops=20)
        return cls()


CaseFactory = Callable[[RunConfig], Any]


@dataclass(frozen=True)
class Case:
    benchmark: str
    name: str
    kind: Kind
    subject: str
    floor: str
    goal: Goal | None
    factory: CaseFactory
    ops: int | None = None
    quick_ops: int | None = None

    def setup(self, config: RunConfig) -> contextlib.AbstractContextManager[Pair]:
        if inspect.isgeneratorfunction(self.factory):
            return contextlib.contextmanager(self.factory)(config)
        return contextlib.nullcontext(self.factory(config))


@dataclass
class Benchmark:
    """A named group of cases: one section of ``docs/benchmarks.md``."""

    name: str
    title: str
    description: str = ""
    cases: list[Case] = field(default_factory=list)

    def _register(
        self,
        kind: Kind,
        name: str,
        subject: str,
        floor: str,
        goal: Goal | None,
        ops: int | None,
        quick_ops: int | None,
    ) -> Callable[[CaseFactory], CaseFactory]:
        if any(c.name == name for c in self.cases):
            raise ValueError(f"case {name!r} registered twice in {self.name!r}")
        if goal is not None and kind is Kind.THROUGHPUT and goal.metric != "ops/s":
            raise ValueError("a throughput goal is on the ops/s ratio")
        if goal is not None and kind is Kind.LATENCY and goal.metric not in ("p50", "p99"):
            raise ValueError("a latency goal is on the p50 or p99 ratio")

        def decorator(factory: CaseFactory) -> CaseFactory:
            self.cases.append(
                Case(self.name, name, kind, subject, floor, goal, factory, ops, quick_ops)
            )
            return factory

        return decorator

    def throughput(
        self,
        name: str,
        *,
        subject: str,
        floor: str,
        goal: Goal | None = None,
        ops: int | None = None,
        quick_ops: int | None = None,
    ) -> Callable[[CaseFactory], CaseFactory]:
        """Register a case whose runners return elapsed seconds for ``n`` ops."""
        return self._register(Kind.THROUGHPUT, name, subject, floor, goal, ops, quick_ops)

    def latency(
        self,
        name: str,
        *,
        subject: str,
        floor: str,
        goal: Goal | None = None,
        ops: int | None = None,
        quick_ops: int | None = None,
    ) -> Callable[[CaseFactory], CaseFactory]:
        """Register a case whose runners return ``n`` per-operation latencies (s)."""
        return self._register(Kind.LATENCY, name, subject, floor, goal, ops, quick_ops)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Stats:
    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        return cls(min(values), statistics.median(values), max(values))


Unit = Literal["ops/s", "s"]


@dataclass(frozen=True)
class Row:
    """One line of the report: a metric for subject and floor, and their ratio."""

    case: str
    metric: str  # "ops/s", "p50", "p99", or "overhead/op" (no floor, no ratio)
    unit: Unit
    subject: Stats
    floor: Stats | None = None
    ratio: Stats | None = None
    ratio_note: str = ""
    goal: Goal | None = None

    @property
    def passed(self) -> bool | None:
        if self.goal is not None and self.goal.absolute:
            return self.goal.met(self.subject.median)
        if self.goal is None or self.ratio is None:
            return None
        return self.goal.met(self.ratio.median)


@dataclass
class CaseResult:
    case: Case
    ops_per_round: int
    rounds: int
    rows: list[Row]


@dataclass
class MachineInfo:
    date: str
    python: str
    platform: str
    cpus: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class BenchmarkResult:
    benchmark: Benchmark
    command: str
    config: RunConfig
    machine: MachineInfo
    cases: list[CaseResult]


# --------------------------------------------------------------------------- running


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted sequence."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _timed(runner: Callable[[int], Any], n: int) -> Any:
    gc.collect()
    result = runner(n)
    return result.value if isinstance(result, Measured) else result


def _timed_parts(runner: Callable[[int], Any], n: int) -> tuple[Any, dict[str, Any]]:
    gc.collect()
    result = runner(n)
    if isinstance(result, Measured):
        return result.value, result.parts
    return result, {}


def _calibrate(case: Case, pair: Pair, config: RunConfig) -> int:
    """Ops per round: fixed by the case, or sized to ``round_seconds`` per side."""
    fixed = case.quick_ops if config.quick and case.quick_ops else case.ops
    if fixed:
        _timed(pair.subject, min(fixed, config.min_ops))  # warm-up
        _timed(pair.floor, min(fixed, config.min_ops))
        return fixed
    n, elapsed = config.min_ops, 0.0
    _timed(pair.floor, n)  # warm-up
    while True:
        result = _timed(pair.subject, n)
        elapsed = result if case.kind is Kind.THROUGHPUT else math.fsum(result)
        if elapsed >= config.round_seconds / 4 or n >= config.max_ops:
            break
        n *= 4
    per_op = max(elapsed, 1e-9) / n
    return max(config.min_ops, min(config.max_ops, round(config.round_seconds / per_op)))


def _paired(a: Sequence[float], b: Sequence[float], f: Callable[[float, float], float]) -> Stats:
    return Stats.of([f(x, y) for x, y in zip(a, b, strict=True)])


def run_case(case: Case, config: RunConfig) -> CaseResult:
    with case.setup(config) as pair:
        n = _calibrate(case, pair, config)
        subject_rounds: list[Any] = []
        floor_rounds: list[Any] = []
        part_rounds: dict[str, list[Any]] = {}
        for _ in range(config.rounds):  # interleaved: A B A B ...
            subject_rounds.append(_timed(pair.subject, n))
            floor_value, parts = _timed_parts(pair.floor, n)
            floor_rounds.append(floor_value)
            for name, value in parts.items():
                part_rounds.setdefault(name, []).append(value)
    rows_of = _throughput_rows if case.kind is Kind.THROUGHPUT else _latency_rows
    rows = rows_of(case, n, subject_rounds, floor_rounds)
    for name, values in part_rounds.items():
        if len(values) == config.rounds:  # a part every round, or it is not comparable
            rows += _part_rows(rows_of(case, n, subject_rounds, values), name)
    return CaseResult(case, n, config.rounds, rows)


def _part_rows(rows: list[Row], name: str) -> list[Row]:
    """The subject against one part of the floor: info rows (no goal, no overhead row)."""
    return [
        replace(row, metric=f"{row.metric} vs {name}", goal=None)
        for row in rows
        if row.metric != "overhead/op"
    ]


def _throughput_rows(case: Case, n: int, subj: list[float], floor: list[float]) -> list[Row]:
    s_ops = [n / max(t, 1e-12) for t in subj]
    f_ops = [n / max(t, 1e-12) for t in floor]
    goal = case.goal
    return [
        Row(
            case.name,
            "ops/s",
            "ops/s",
            Stats.of(s_ops),
            Stats.of(f_ops),
            _paired(s_ops, f_ops, lambda s, f: s / f),
            "subject ops/s ÷ floor ops/s (higher is better)",
            goal,
        ),
        Row(
            case.name,
            "overhead/op",
            "s",
            _paired(subj, floor, lambda s, f: (s - f) / n),
            ratio_note="subject time/op - floor time/op (no goal)",
        ),
    ]


def _latency_rows(
    case: Case, n: int, subj: list[Sequence[float]], floor: list[Sequence[float]]
) -> list[Row]:
    rows: list[Row] = []
    s_sorted = [sorted(r) for r in subj]
    f_sorted = [sorted(r) for r in floor]
    for q, metric in ((50, "p50"), (99, "p99")):
        s_q = [percentile(r, q) for r in s_sorted]
        f_q = [percentile(r, q) for r in f_sorted]
        goal = case.goal if case.goal is not None and case.goal.metric == metric else None
        rows.append(
            Row(
                case.name,
                metric,
                "s",
                Stats.of(s_q),
                Stats.of(f_q),
                _paired(s_q, f_q, lambda s, f: s / f),
                f"subject {metric} ÷ floor {metric} (lower is better)",
                goal,
            )
        )
    s50 = [percentile(r, 50) for r in s_sorted]
    f50 = [percentile(r, 50) for r in f_sorted]
    rows.append(
        Row(
            case.name,
            "overhead/op",
            "s",
            _paired(s50, f50, lambda s, f: s - f),
            ratio_note="subject p50 - floor p50 (no goal)",
        )
    )
    return rows


# --------------------------------------------------------------------------- discovery


def discover() -> list[Benchmark]:
    """Every ``BENCHMARK`` defined by a ``benchmarks/bench_*.py`` module, by name."""
    import benchmarks

    found: list[Benchmark] = []
    for module in pkgutil.iter_modules(benchmarks.__path__):
        if module.name.startswith("bench_"):
            bench = importlib.import_module(f"benchmarks.{module.name}").BENCHMARK
            if not isinstance(bench, Benchmark):
                raise TypeError(f"benchmarks.{module.name}.BENCHMARK is not a Benchmark")
            found.append(bench)
    names = [b.name for b in found]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate benchmark names: {names}")
    return sorted(found, key=lambda b: b.name)


def machine_info() -> MachineInfo:
    return MachineInfo(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.release()} {platform.machine()}",
        cpus=os.cpu_count() or 0,
        load_before=os.getloadavg(),
    )


def run_benchmark(
    bench: Benchmark,
    config: RunConfig,
    command: str,
    on_case: Callable[[CaseResult], None] | None = None,
) -> BenchmarkResult:
    machine = machine_info()
    results: list[CaseResult] = []
    for case in bench.cases:
        results.append(run_case(case, config))
        if on_case is not None:
            on_case(results[-1])
    machine.load_after = os.getloadavg()
    return BenchmarkResult(bench, command, config, machine, results)


def event_loop(stack: contextlib.ExitStack) -> asyncio.AbstractEventLoop:
    """A new event loop, closed by ``stack``."""
    loop = asyncio.new_event_loop()
    stack.callback(loop.close)
    return loop


def async_stack(
    stack: contextlib.ExitStack, loop: asyncio.AbstractEventLoop
) -> contextlib.AsyncExitStack:
    """An async exit stack closed on ``loop`` (before the loop itself is closed)."""
    astack = contextlib.AsyncExitStack()
    stack.callback(lambda: loop.run_until_complete(astack.aclose()))
    return astack
