"""``agentmesh simulate``: chaos simulations of rogue agents (list, run, sweep).

agentmesh simulate list
agentmesh simulate run colluding-ring                    # mesh fidelity, embedded bus
agentmesh simulate run my-scenario.yaml --fidelity model --out reports/
agentmesh simulate run flooding --nats nats://127.0.0.1:4222
agentmesh simulate run process-faults --nats local --processes 3   # kill -9, server restart
agentmesh simulate sweep colluding-ring --param behaviours.0.count --values 5,10,20,30
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentmesh.cli.failures import EXIT_USAGE, CommandFailed
from simulations.behaviours import BEHAVIOURS
from simulations.report import write_report, write_sweep
from simulations.runner import Fidelity, RunResult, run_scenario
from simulations.spec import ScenarioError, ScenarioSpec, library, load_scenario

app = typer.Typer(help="Chaos simulations of rogue agents on the mesh.", no_args_is_help=True)
out = Console(emoji=False, highlight=False)
err = Console(stderr=True, emoji=False, highlight=False)

FidelityOpt = Annotated[
    str,
    typer.Option(
        "--fidelity",
        help="mesh: real nodes, envelopes, receipts, policy, kill switch (default); "
        "model: the same behaviours on the trust engine alone, for large sweeps.",
    ),
]
NatsOpt = Annotated[
    str | None,
    typer.Option(
        "--nats",
        help="Mesh fidelity over a real nats-server: its URL, or 'local' to start a "
        "throwaway one (needed for the server_restart fault).",
    ),
]
ProcessesOpt = Annotated[
    int,
    typer.Option(
        "--processes",
        min=1,
        help="Split the agents over this many host processes (needs --nats; "
        "1: every node in this process). The kill fault kill -9s one of them.",
    ),
]


def _load(source: str) -> ScenarioSpec:
    try:
        return load_scenario(source)
    except ScenarioError as exc:
        raise _bad_scenario(exc) from None


def _bad_scenario(exc: ScenarioError) -> CommandFailed:
    """One line on stderr, exit 2 (the CLI's error boundary prints it)."""
    return CommandFailed(
        str(exc), "see 'agentmesh simulate list'", exit_code=EXIT_USAGE, reason=exc.code
    )


def _fidelity(value: str) -> Fidelity:
    if value not in ("mesh", "model"):
        raise typer.BadParameter("mesh or model", param_hint="--fidelity")
    return "mesh" if value == "mesh" else "model"


def _run(
    spec: ScenarioSpec, fidelity: Fidelity, nats: str | None, quiet: bool, processes: int = 1
) -> RunResult:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    ) as progress:
        tasks = {
            label: progress.add_task(f"{spec.name} {label}", total=spec.rounds)
            for label in ("with trust", "without trust")
        }

        def advance(label: str, round_no: int) -> None:
            progress.update(tasks[label], completed=round_no + 1)

        try:
            return asyncio.run(
                run_scenario(spec, fidelity, nats_url=nats, processes=processes, progress=advance)
            )
        except ScenarioError as exc:
            progress.stop()
            raise _bad_scenario(exc) from None


@app.command("list")
def list_() -> None:
    """The scenario library (one line each) and the behaviours a scenario can use."""
    table = Table(title="scenarios (simulations/library)")
    for column in ("name", "agents", "rounds", "what it shows"):
        table.add_column(column)
    for spec in library():
        table.add_row(spec.name, str(spec.population), str(spec.rounds), spec.description)
    out.print(table)
    behaviours = Table(title="behaviours")
    behaviours.add_column("kind")
    behaviours.add_column("rogue")
    behaviours.add_column("what it does")
    for kind, cls in sorted(BEHAVIOURS.items()):
        behaviours.add_row(kind, "yes" if cls.rogue else "no", cls.summary)
    out.print(behaviours)


@app.command("run")
def run(
    scenario: Annotated[str, typer.Argument(help="A library name or a YAML/TOML file.")],
    fidelity: FidelityOpt = "mesh",
    nats: NatsOpt = None,
    processes: ProcessesOpt = 1,
    output: Annotated[
        Path | None, typer.Option("--out", help="Report directory (default: reports/NAME).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the seed.")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds", help="Override the rounds.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run a scenario (and its no-trust baseline); write report.md, plots, metrics, events."""
    spec = _load(scenario)
    changes: dict[str, int] = {}
    if seed is not None:
        changes["seed"] = seed
    if rounds is not None:
        changes["rounds"] = rounds
    if changes:
        spec = spec.scaled(**changes)
    result = _run(spec, _fidelity(fidelity), nats, quiet, processes)
    report = write_report(result, output or Path("reports") / spec.name)
    table = Table(title=f"{spec.name} ({result.fidelity}): {result.seconds:.1f} s")
    for column in ("expectation", "measured", "verdict"):
        table.add_column(column)
    for v in result.verdicts:
        measured = "—" if v.measured is None else f"{v.measured:.4f}"
        verdict = "[green]PASS[/]" if v.ok else "[red]FAIL[/]"
        table.add_row(f"{v.metric} {v.op} {v.expected:g}", measured, verdict)
    out.print(table)
    out.print(f"report: {report}")
    raise typer.Exit(0 if result.ok else 1)


@app.command("sweep")
def sweep(
    scenario: Annotated[str, typer.Argument(help="A library name or a YAML/TOML file.")],
    param: Annotated[
        str, typer.Option("--param", help="What to vary: a field (rounds) or behaviours.N.count.")
    ],
    values: Annotated[str, typer.Option("--values", help="Comma-separated values.")],
    fidelity: FidelityOpt = "model",
    nats: NatsOpt = None,
    processes: ProcessesOpt = 1,
    output: Annotated[
        Path | None, typer.Option("--out", help="Directory (default: reports/NAME-sweep).")
    ] = None,
) -> None:
    """Vary one parameter across runs and plot the bad-interaction fraction against it."""
    spec = _load(scenario)
    try:
        numbers = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter("numbers, e.g. 5,10,20", param_hint="--values") from None
    results = []
    for number in numbers:
        value: int | float = int(number) if number.is_integer() else number
        try:
            varied = spec.with_param(param, value)
        except ScenarioError as exc:
            raise _bad_scenario(exc) from None
        results.append(_run(varied, _fidelity(fidelity), nats, False, processes))
    target = output or Path("reports") / f"{spec.name}-sweep"
    written = write_sweep(spec.name, param, numbers, results, target)
    table = Table(title=f"{spec.name}: {param}")
    for column in (param, "bad after warm-up", "without trust", "contained", "false containment"):
        table.add_column(column)
    for number, result in zip(numbers, results, strict=True):
        m = result.metrics
        without = m.get("bad_fraction_after_warmup_without_trust")
        table.add_row(
            f"{number:g}",
            f"{m['bad_fraction_after_warmup']:.4f}",
            "—" if without is None else f"{without:.4f}",
            f"{m['contained_share']:.2f}",
            f"{m['false_containment']:.2f}",
        )
    out.print(table)
    out.print(f"written: {', '.join(str(target / w) for w in written)}")


__all__ = ["app"]
