"""What a run leaves behind: ``report.md``, ``metrics.json``, ``events.jsonl``, PNG plots.

Plots need matplotlib (the ``plots`` extra); without it the report says so and
lists the series in ``metrics.json`` instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.runner import RunResult

PLOTS = {
    "bad_fraction.png": "bad-interaction fraction per round, with and without trust",
    "trust.png": "trust held by rogues and by honest agents per round",
    "containment.png": "rogues contained (quarantined or distrusted) per round",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "—"
    return str(value)


def render_markdown(result: RunResult, plots: Sequence[str]) -> str:
    spec = result.spec
    lines = [
        f"# Scenario `{spec.name}` ({result.fidelity} fidelity)",
        "",
        spec.description,
        "",
        f"Seed {spec.seed}, {spec.rounds} rounds (warm-up {spec.warmup}), {spec.honest} honest "
        f"agents ({spec.pre_trusted} pre-trusted), "
        + ", ".join(f"{b.count} {b.kind}" for b in spec.behaviours)
        + (f"; faults: {', '.join(f.kind for f in spec.faults)}" if spec.faults else "")
        + f". Ran in {result.seconds:.1f} s.",
        "",
        "## Expectations",
        "",
        "| metric | expected | measured | verdict |",
        "|---|---|---|---|",
    ]
    for v in result.verdicts:
        verdict = "PASS" if v.ok else "FAIL"
        lines.append(f"| {v.metric} | {v.op} {v.expected:g} | {_fmt(v.measured)} | {verdict} |")
    if not result.verdicts:
        lines.append("| (none stated) | | | |")
    lines += ["", "## Metrics", "", "| metric | with trust | without trust |", "|---|---|---|"]
    for name, value in result.metrics.items():
        if name.endswith("_without_trust"):
            continue
        lines.append(f"| {name} | {_fmt(value)} | {_fmt(result.baseline.get(name))} |")
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{PLOTS[p]}]({p})" for p in plots]
    else:
        lines += ["", "(plots need matplotlib: `pip install agentmesh[plots]`)"]
    return "\n".join(lines) + "\n"


def write_plots(result: RunResult, directory: Path) -> list[str]:
    """The PNG plots of ``result`` in ``directory``; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    series = result.series
    rounds = list(range(len(series["bad_fraction"])))
    written = []
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(rounds, series["bad_fraction"], label="with trust")
    if "bad_fraction_without_trust" in series:
        ax.plot(rounds, series["bad_fraction_without_trust"], label="without trust", ls="--")
    ax.set(xlabel="round", ylabel="bad interactions (honest requesters)", ylim=(0, 1))
    ax.legend()
    ax.set_title(f"{result.spec.name}: bad-interaction fraction")
    fig.tight_layout()
    fig.savefig(directory / "bad_fraction.png", dpi=110)
    plt.close(fig)
    written.append("bad_fraction.png")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(rounds, series["rogue_trust"], label="rogues", color="#c62828")
    ax.plot(rounds, series["honest_trust"], label="honest", color="#2e7d32")
    ax.set(xlabel="round", ylabel="sum of scores")
    ax.legend()
    ax.set_title(f"{result.spec.name}: trust of rogues vs honest agents")
    fig.tight_layout()
    fig.savefig(directory / "trust.png", dpi=110)
    plt.close(fig)
    written.append("trust.png")
    fig, ax = plt.subplots(figsize=(7, 3.0))
    ax.step(rounds, series["contained_rogues"], where="post", color="#1565c0")
    ax.set(xlabel="round", ylabel="rogues contained")
    ax.set_title(f"{result.spec.name}: containment timeline")
    fig.tight_layout()
    fig.savefig(directory / "containment.png", dpi=110)
    plt.close(fig)
    written.append("containment.png")
    return written


def write_report(result: RunResult, directory: str | Path) -> Path:
    """Write the run's report directory; returns the path of ``report.md``."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    plots = write_plots(result, target)
    document = {
        "scenario": result.spec.model_dump(mode="json"),
        "fidelity": result.fidelity,
        "seconds": result.seconds,
        "ok": result.ok,
        "metrics": result.metrics,
        "baseline": result.baseline,
        "verdicts": [v.__dict__ for v in result.verdicts],
        "series": result.series,
    }
    (target / "metrics.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    with (target / "events.jsonl").open("w") as events:
        for event in result.events:
            events.write(json.dumps(event, default=str) + "\n")
    report = target / "report.md"
    report.write_text(render_markdown(result, plots))
    return report


def write_sweep(
    name: str, parameter: str, values: Sequence[float], results: Sequence[RunResult], path: Path
) -> list[str]:
    """A plot (and a JSON file) of bad-interaction fractions across a parameter sweep."""
    path.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "value": value,
            "bad_fraction_after_warmup": r.metrics["bad_fraction_after_warmup"],
            "without_trust": r.metrics.get("bad_fraction_after_warmup_without_trust"),
            "contained_share": r.metrics["contained_share"],
            "false_containment": r.metrics["false_containment"],
        }
        for value, r in zip(values, results, strict=True)
    ]
    (path / "sweep.json").write_text(
        json.dumps({"scenario": name, "parameter": parameter, "rows": rows}, indent=2) + "\n"
    )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["sweep.json"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(values, [r["bad_fraction_after_warmup"] for r in rows], marker="o", label="with trust")
    if all(r["without_trust"] is not None for r in rows):
        ax.plot(
            values, [r["without_trust"] for r in rows], marker="s", ls="--", label="without trust"
        )
    ax.set(xlabel=parameter, ylabel="bad interactions after warm-up", ylim=(0, 1))
    ax.legend()
    ax.set_title(f"{name}: sweep of {parameter}")
    fig.tight_layout()
    fig.savefig(path / "sweep.png", dpi=110)
    plt.close(fig)
    return ["sweep.json", "sweep.png"]


__all__ = ["render_markdown", "write_plots", "write_report", "write_sweep"]
