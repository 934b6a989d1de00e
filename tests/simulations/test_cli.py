"""``agentmesh simulate``: list, run (report directory, exit code), sweep, errors, help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from simulations.cli import app
from simulations.spec import library

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_the_agentmesh_command_finds_the_simulate_group() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentmesh.cli.main", "simulate", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    for spec in library():
        assert spec.name in result.stdout
    assert "bad_provider" in result.stdout  # the behaviours table


def test_help_names_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("list", "run", "sweep"):
        assert command in result.output


def test_run_writes_the_report_and_exits_zero_when_expectations_hold(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        ["run", "independent-bad-providers", "--fidelity", "model", "--out", str(out), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output
    assert "FAIL" not in result.output
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["metrics"]["contained_share"] >= 0.9
    assert (out / "report.md").is_file()
    assert sorted(p.name for p in out.glob("*.png"))


def test_run_exits_one_when_an_expectation_fails(tmp_path: Path) -> None:
    scenario = tmp_path / "strict.yaml"
    scenario.write_text(
        "name: strict\nrounds: 20\nwarmup: 5\nhonest: 10\n"
        "behaviours: [{kind: bad_provider, count: 5}]\n"
        "expectations: [{metric: bad_fraction, op: '<', value: 0.0}]\n",
        encoding="utf-8",
    )
    result = runner.invoke(
        app, ["run", str(scenario), "--fidelity", "model", "--out", str(tmp_path / "r"), "--quiet"]
    )
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_sweep_varies_one_parameter_and_plots_it(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = runner.invoke(
        app,
        [
            "sweep",
            "independent-bad-providers",
            "--param",
            "behaviours.0.count",
            "--values",
            "3,6",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert list(out.glob("*.png"))
    assert list(out.glob("*.json"))


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["run", "no-such-scenario", "--quiet"])
    assert missing.exit_code == 2
    assert "error (" in missing.output
    fidelity = runner.invoke(app, ["run", "sybil", "--fidelity", "exact", "--quiet"])
    assert fidelity.exit_code == 2
    values = runner.invoke(
        app, ["sweep", "sybil", "--param", "rounds", "--values", "a,b", "--out", str(tmp_path)]
    )
    assert values.exit_code == 2
    param = runner.invoke(
        app, ["sweep", "sybil", "--param", "nope.x", "--values", "1", "--out", str(tmp_path)]
    )
    assert param.exit_code == 2
    assert "error (" in param.output
