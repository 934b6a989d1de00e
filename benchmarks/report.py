"""Rendering: a rich table for the terminal, and the generated ``docs/benchmarks.md``.

Each benchmark owns one section of the markdown file, between
``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``. A run regenerates the
sections of the benchmarks it ran and keeps the others as they were.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.harness import Benchmark, BenchmarkResult, MachineInfo, Row, Stats, Unit

GENERATED_NOTICE = (
    "<!-- GENERATED FILE: written by `python -m benchmarks run`. Do not edit by hand. -->"
)
_SECTION = re.compile(r"<!-- bench:(?P<name>[\w.-]+) -->\n.*?<!-- /bench:(?P=name) -->", re.S)


# --------------------------------------------------------------------------- numbers


def fmt_value(value: float, unit: Unit) -> str:
    if unit == "ops/s":
        if value >= 1e6:
            return f"{value / 1e6:.2f}M"
        if value >= 1e4:
            return f"{value / 1e3:.1f}k"
        return f"{value:,.0f}"
    magnitude = abs(value)
    if magnitude < 1e-3:
        return f"{value * 1e6:.2f} µs"
    if magnitude < 1:
        return f"{value * 1e3:.3f} ms"
    return f"{value:.3f} s"


def fmt_stats(stats: Stats | None, unit: Unit) -> str:
    if stats is None:
        return "—"
    return " / ".join(fmt_value(v, unit) for v in (stats.min, stats.median, stats.max))


def fmt_ratio(stats: Stats | None) -> str:
    if stats is None:
        return "—"
    return f"**{stats.median:.3f}** ({stats.min:.3f}-{stats.max:.3f})"


def fmt_verdict(row: Row) -> str:
    passed = row.passed
    if passed is None:
        return "—"
    return "PASS" if passed else "MISS"


def fmt_load(load: Sequence[float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def machine_line(m: MachineInfo) -> str:
    return f"Python {m.python} on {m.platform}, {m.cpus} CPUs"


# --------------------------------------------------------------------------- terminal


def print_header(console: Console, machine: MachineInfo, command: str) -> None:
    console.print(f"[bold]{command}[/]")
    console.print(f"{machine.date} — {machine_line(machine)}")
    console.print(f"load average (1/5/15 min) before: {fmt_load(machine.load_before)}")


def print_result(console: Console, result: BenchmarkResult) -> None:
    table = Table(
        title=f"{result.benchmark.name} — {result.benchmark.title}",
        caption=(
            f"{result.config.rounds} interleaved rounds; min / median / max; "
            f"load {fmt_load(result.machine.load_before)} → {fmt_load(result.machine.load_after)}"
        ),
    )
    for column in ("case", "metric", "subject", "floor", "ratio (min-max)", "goal", "result"):
        left = column in ("case", "metric")
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    for case in result.cases:
        for row in case.rows:
            verdict = fmt_verdict(row)
            style = {"PASS": "green", "MISS": "bold red"}.get(verdict, "dim")
            table.add_row(
                row.case,
                row.metric,
                fmt_stats(row.subject, row.unit),
                fmt_stats(row.floor, row.unit),
                fmt_ratio(row.ratio).replace("**", ""),
                str(row.goal) if row.goal else "—",
                f"[{style}]{verdict}[/]",
            )
    console.print(table)


# --------------------------------------------------------------------------- markdown


def render_section(result: BenchmarkResult) -> str:
    bench, m, cfg = result.benchmark, result.machine, result.config
    lines = [
        f"<!-- bench:{bench.name} -->",
        f"## {bench.name} — {bench.title}",
        "",
    ]
    if bench.description:
        lines += [bench.description.strip(), ""]
    if cfg.quick:
        lines += ["> **--quick smoke run**: few, short rounds; not representative.", ""]
    lines += [
        f"- Command: `{result.command}`",
        f"- Date: {m.date}",
        f"- Machine: {machine_line(m)}",
        f"- Load average (1/5/15 min): before {fmt_load(m.load_before)}, "
        f"after {fmt_load(m.load_after)}",
        f"- Rounds: {cfg.rounds} per case, interleaved subject/floor, "
        f"~{cfg.round_seconds:g} s per side; columns are min / median / max over rounds; "
        "the ratio is the median (min-max) of the per-round paired ratios.",
        "",
        "| case | metric | subject (min / median / max) | floor (min / median / max) "
        "| ratio: median (min-max) | goal | result |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for case in result.cases:
        for row in case.rows:
            lines.append(
                f"| {row.case} | {row.metric} | {fmt_stats(row.subject, row.unit)} "
                f"| {fmt_stats(row.floor, row.unit)} | {fmt_ratio(row.ratio)} "
                f"| {row.goal or '—'} | {fmt_verdict(row)} |"
            )
    lines += ["", "Cases (subject vs floor, ops per round):", ""]
    for case in result.cases:
        c = case.case
        ratio = next((r.ratio_note for r in case.rows if r.ratio is not None), "")
        lines.append(
            f"- **{c.name}** ({c.kind.value}, {case.ops_per_round:,} ops x {case.rounds} rounds): "
            f"subject = {c.subject}; floor = {c.floor}; ratio = {ratio}."
        )
    lines += ["", f"<!-- /bench:{bench.name} -->"]
    return "\n".join(lines)


def placeholder_section(bench: Benchmark) -> str:
    return "\n".join(
        [
            f"<!-- bench:{bench.name} -->",
            f"## {bench.name} — {bench.title}",
            "",
            f"Not run yet: `python -m benchmarks run --only {bench.name}`.",
            "",
            f"<!-- /bench:{bench.name} -->",
        ]
    )


def existing_sections(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return {m["name"]: m.group(0) for m in _SECTION.finditer(text)}


def render_document(
    benchmarks: Sequence[Benchmark], results: Sequence[BenchmarkResult], previous: dict[str, str]
) -> str:
    fresh = {r.benchmark.name: render_section(r) for r in results}
    sections = [
        fresh.get(b.name) or previous.get(b.name) or placeholder_section(b) for b in benchmarks
    ]
    header = [
        GENERATED_NOTICE,
        "# Benchmarks",
        "",
        "_Generated by `python -m benchmarks run` (see `benchmarks/README.md`); "
        "never edit this file by hand._",
        "",
        "Every figure stands next to its **floor**, measured in the same run with rounds "
        "interleaved (subject, floor, subject, floor, ...). Throughput ratios are "
        "subject ops/s ÷ floor ops/s (higher is better); latency ratios are subject ÷ "
        "floor latency (lower is better). A MISS is reported, never a failure: the tests "
        "check correctness, not timings. `overhead/op` rows (no goal) show the time the "
        "subject spends beyond its floor per operation.",
        "",
    ]
    return "\n".join(header) + "\n" + "\n\n".join(sections) + "\n"


def write_document(
    path: Path, benchmarks: Sequence[Benchmark], results: Sequence[BenchmarkResult]
) -> None:
    text = render_document(benchmarks, results, existing_sections(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
