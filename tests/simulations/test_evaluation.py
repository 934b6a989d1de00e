"""The trust evaluation harness: seeded, worst seed reported, table between markers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from simulations.evaluation import (
    BEGIN,
    END,
    Case,
    Settings,
    _b,
    cases,
    evaluate,
    render,
    run_once,
    write,
)

SMALL = Settings(cycles=4, rounds_per_cycle=6, seeds=(1,))
CASE_B = Case("B 40%", "colluding-ring", (_b("collusion", 42),))


def test_same_seed_same_figures() -> None:
    first = asyncio.run(run_once(CASE_B, SMALL, 1, "agentmesh"))
    second = asyncio.run(run_once(CASE_B, SMALL, 1, "agentmesh"))
    assert first == second


def test_product_trust_beats_eigentrust_on_collusion_and_keeps_rogues_out_of_ring_1() -> None:
    ours = asyncio.run(run_once(CASE_B, SMALL, 1, "agentmesh"))
    theirs = asyncio.run(run_once(CASE_B, SMALL, 1, "EigenTrust"))
    assert ours.bad < theirs.bad
    assert ours.rogue_r1 == 0
    assert ours.demoted <= 0.02


def test_spies_cannot_buy_the_ring_trust_mass() -> None:
    spies = next(c for c in cases(quick=True) if c.name == "spies")
    ours = asyncio.run(run_once(spies, SMALL, 1, "agentmesh"))
    assert ours.mass is not None
    assert ours.mass <= 0.05


def test_render_and_write_between_markers(tmp_path: Path) -> None:
    rows = asyncio.run(evaluate(SMALL, [CASE_B]))
    table = render(rows, SMALL)
    assert table.startswith(BEGIN)
    assert table.endswith(END)
    assert "| B 40% | agentmesh |" in table
    assert "| B 40% | EigenTrust |" in table
    document = tmp_path / "trust.md"
    document.write_text("# Trust\n\nbefore\n", encoding="utf-8")
    write(document, table)
    write(document, table)  # idempotent: replaced between the markers
    text = document.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1
    assert "before" in text


def test_worker_processes_give_the_same_rows() -> None:
    camouflage = Case("camouflage f=0.8", "camouflage", (_b("camouflage", 27, f=0.8),), True)
    tiny = Settings(cycles=3, rounds_per_cycle=4, seeds=(1, 2))
    alone = asyncio.run(evaluate(tiny, [CASE_B, camouflage]))
    pooled = asyncio.run(evaluate(tiny, [CASE_B, camouflage], jobs=2))
    assert [(r.case.name, r.engine, r.per_seed) for r in pooled] == [
        (r.case.name, r.engine, r.per_seed) for r in alone
    ]
    assert all(f.bad_without is not None for r in pooled[2:] for f in r.per_seed)


@pytest.mark.slow
def test_full_sweep_meets_the_ring_targets_on_the_worst_seed() -> None:
    settings = Settings(cycles=10, rounds_per_cycle=10, seeds=(1, 2, 3))
    selected = [c for c in cases() if c.name.startswith(("honest", "A ", "B ", "spies", "sybils"))]
    rows = asyncio.run(evaluate(settings, selected, engines=("agentmesh",)))
    for row in rows:
        assert row.figures.rogue_r1 == 0, row.case.name
        assert row.figures.demoted <= 0.01, row.case.name
        if row.figures.mass is not None:
            assert row.figures.mass <= 0.05, row.case.name
