"""The oracle soft-drift bound that docs/trust.md section 11 cites."""

from __future__ import annotations

import pytest

from simulations.drift_bound import bound, main, render


def test_a_lower_alarm_level_trades_false_alarms_for_delay() -> None:
    low, high = bound([4.0, 7.0], agents=1000, reports=2000, trials=100)
    assert low.false_alarms > 3 * high.false_alarms > 0.0
    assert low.delay[0] < high.delay[0]
    assert low.worst[1] < high.worst[1]
    assert all(r.worst[0] <= r.worst[1] <= r.worst[2] for r in (low, high))


def test_at_one_false_alarm_per_1e4_the_worst_of_18_is_near_200() -> None:
    # the claim of docs/trust.md section 11: even the oracle test's worst of 18
    # drifting agents (turn to 15 % bad) is caught after about 200 reports
    (row,) = bound([5.7], trials=200)
    assert 0.7 < row.false_alarms < 1.5
    assert 170 < row.worst[1] < 240


def test_the_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--levels", "6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| h | false alarms / 1e4 |")
    assert out.count("\n") == 3
    assert render([]).count("\n") == 1
