"""``python -m benchmarks run [--quick] [--only NAME ...] [--out docs/benchmarks.md]``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from benchmarks.harness import RunConfig, discover, machine_info, run_benchmark
from benchmarks.report import print_header, print_result, write_document

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "agentmesh benchmarks. Every figure is measured next to its floor in the same "
            "run (interleaved rounds) and reported as a ratio with a goal; a missed goal "
            "is reported as MISS, never as a failing exit status."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run benchmarks, print a table and regenerate docs/benchmarks.md",
        description=(
            "Run the benchmarks (all, or those named by --only), print a table, and "
            "regenerate the markdown report. With --only, the sections of the other "
            "benchmarks are kept from the existing report."
        ),
    )
    run.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 short rounds per case (seconds, not representative)",
    )
    run.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these benchmarks (see `python -m benchmarks list`)",
    )
    run.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="markdown report to regenerate (default: docs/benchmarks.md of the project)",
    )
    run.add_argument(
        "--no-write", action="store_true", help="print the table only; leave the report alone"
    )
    sub.add_parser("list", help="list the benchmarks and their cases")
    return parser


def _command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "-m", "benchmarks", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    # Wide enough for the table when the output is a pipe or a file (no terminal width).
    console = Console() if sys.stdout.isatty() else Console(width=150)
    benchmarks = discover()
    if args.command == "list":
        for bench in benchmarks:
            console.print(f"[bold]{bench.name}[/] — {bench.title}")
            for case in bench.cases:
                goal = f"goal {case.goal}" if case.goal else "no goal"
                console.print(f"  {case.name} ({case.kind.value}, {goal})")
        return 0

    by_name = {b.name: b for b in benchmarks}
    unknown = sorted(set(args.only or ()) - by_name.keys())
    if unknown:
        console.print(f"[red]unknown benchmark(s): {', '.join(unknown)}[/]")
        console.print(f"known: {', '.join(by_name)}")
        return 2
    selected = [b for b in benchmarks if not args.only or b.name in args.only]
    config = RunConfig.for_mode(args.quick)
    command = _command_line(argv)
    print_header(console, machine_info(), command)
    results = []
    for bench in selected:
        with console.status(f"running {bench.name} ..."):
            result = run_benchmark(bench, config, command)
        print_result(console, result)
        results.append(result)
    console.print(
        f"load average (1/5/15 min) after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if not args.no_write:
        write_document(args.out, benchmarks, results)
        console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
