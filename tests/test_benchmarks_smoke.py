"""Smoke test of the benchmark command: it runs and writes a table row per case.

Timings are never checked here (benchmarks are not tests): only that
``python -m benchmarks run --quick`` exits 0 and reports a numeric ratio for
every registered case.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from benchmarks.harness import discover

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_run_writes_a_ratio_for_every_case(tmp_path: Path) -> None:
    out = tmp_path / "b.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text(encoding="utf-8")
    assert "do not edit by hand" in text.lower()

    cases = [(b.name, c.name) for b in discover() for c in b.cases]
    assert cases
    for bench, case in cases:
        assert f"<!-- bench:{bench} -->" in text
        # | case | metric | subject | floor | **ratio** (min-max) | goal | result |
        row = re.compile(
            rf"^\| {re.escape(case)} \| (ops/s|p50|p99) \|[^|]+\|[^|]+\| \*\*(\d+\.\d+)\*\* ",
            re.M,
        )
        match = row.search(text)
        assert match, f"no ratio row for {bench}/{case}"
        assert float(match[2]) > 0
