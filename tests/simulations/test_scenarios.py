"""Sybil ring, traitor and false-demotion scenarios."""

from __future__ import annotations

import pytest

from simulations.population import World, agent_dids
from simulations.scenarios import false_demotions, main, sybil_ring, traitor
from trust import Outcome


def test_sybil_ring_never_leaves_ring_3() -> None:
    result = sybil_ring(1)
    assert result.sybils == 100
    assert result.best_ring == 3
    assert result.max_score == 0.0
    assert result.honest_ring_le2 > 0.8  # the slander did not sink the honest agents


def test_traitor_is_sandboxed_within_ten_bad_interactions() -> None:
    result = traitor(1)
    assert result.ring_before <= 2
    assert result.bad_interactions_to_ring3 is not None
    assert result.bad_interactions_to_ring3 <= 10


@pytest.mark.parametrize("rate", [0.05, 0.1])
def test_false_demotion_rate_is_low(rate: float) -> None:
    result = false_demotions(1, failure_rate=rate)
    assert result.agents_promoted >= 40
    assert result.rate <= 0.02


def test_a_short_burst_of_failures_does_not_sandbox_an_honest_agent() -> None:
    dids = agent_dids(6, namespace=77)
    world = World(pre_trusted=dids[:2])
    target = dids[-1]
    for i in range(60):
        world.report(dids[i % 5], target, Outcome.SUCCESS)
    for _ in range(3):
        world.engine.recompute()
    assert world.engine.ring(target) <= 2
    for i in range(3):
        world.report(dids[i], target, Outcome.FAILURE)
    world.engine.recompute()
    assert world.engine.ring(target) <= 2
    assert not world.engine.flagged(target)


def test_cli_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "1"]) == 0
    assert "false demotions" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 12))
def test_more_seeds(seed: int) -> None:
    assert sybil_ring(seed).best_ring == 3
    turned = traitor(seed).bad_interactions_to_ring3
    assert turned is not None
    assert turned <= 10
