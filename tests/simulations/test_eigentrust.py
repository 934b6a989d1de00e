"""EigenTrust threat models A and B at 30 % and 60 % malicious (seeded, CI-sized)."""

from __future__ import annotations

import pytest

from simulations.eigentrust import Setup, main, run


@pytest.mark.parametrize("model", ["A", "B"])
@pytest.mark.parametrize("malicious", [0.3, 0.6])
def test_trust_keeps_bad_interactions_at_most_ten_percent(model: str, malicious: float) -> None:
    with_trust = run(Setup(model=model, malicious=malicious, seed=1))
    without = run(Setup(model=model, malicious=malicious, seed=1, use_trust=False))
    assert with_trust.bad_fraction_after_warmup <= 0.10
    assert with_trust.bad_fraction < without.bad_fraction / 4
    assert without.bad_fraction > 0.6
    assert with_trust.malicious_ring3 == 1.0


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
@pytest.mark.parametrize("seed", range(2, 8))
@pytest.mark.parametrize("model", ["A", "B"])
@pytest.mark.parametrize("malicious", [0.3, 0.6])
def test_more_seeds(model: str, malicious: float, seed: int) -> None:
    result = run(Setup(model=model, malicious=malicious, seed=seed))
    assert result.bad_fraction_after_warmup <= 0.10
