"""docs/simulations.md is generated from the library: every scenario, its own expectations."""

from __future__ import annotations

import re

from simulations.docs import DOCUMENT, MARKER, Target, expectations_cell, render, scale
from simulations.runner import RunResult, Verdict
from simulations.spec import library


def _rows() -> dict[str, list[str]]:
    rows = {}
    for line in DOCUMENT.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5:
            rows[cells[0]] = cells
    return rows


def test_the_document_is_generated_and_lists_every_scenario_with_its_expectations() -> None:
    text = DOCUMENT.read_text(encoding="utf-8")
    assert MARKER in text
    rows = _rows()
    for spec in library():
        assert spec.name in rows, f"{spec.name} missing: run make simulate"
        row = rows[spec.name]
        assert row[1] == f"{spec.population} x {spec.rounds}"
        assert row[2] == expectations_cell(spec), f"{spec.name} changed: run make simulate"
        assert row[4].startswith("PASS"), f"{spec.name}: {row}"
        assert ("weakness" in row[4]) == bool(spec.weakness)
        assert f"### {spec.name}" in text


def test_render_marks_failures_and_targets() -> None:
    spec = library()[0]
    result = RunResult(spec, "mesh", {}, {}, {}, [])
    result.verdicts.append(Verdict("bad_fraction", "<=", 0.1, 0.5, ok=False))
    text = render(
        [result],
        [
            Target("model fidelity", "model", 1000, 1500, 60.0, seconds=75.0),
            Target("x", "mesh", 3, 3, 1.0),
        ],
    )
    assert re.search(rf"^\| {spec.name} \|.*\| bad_fraction = 0\.5 \| FAIL", text, re.M)
    assert "| 75.0 s | MISS |" in text
    assert "| — | not run |" in text


def test_scaling_keeps_the_rogue_share() -> None:
    spec = {s.name: s for s in library()}["independent-bad-providers"]
    big = scale(spec, 1000, 20, candidates=8)
    assert big.population == 1000
    share = sum(b.count for b in big.behaviours) / big.population
    original = sum(b.count for b in spec.behaviours) / spec.population
    assert abs(share - original) < 0.01
    assert big.candidates == 8
