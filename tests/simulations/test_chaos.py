"""Chaos scenarios: every library scenario at mesh fidelity (embedded), determinism, faults."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from agentmesh.transport import InMemoryBus, InMemoryTransport
from simulations.behaviours import BEHAVIOURS, make_behaviour
from simulations.driver import populate
from simulations.faults import FaultPlan, FaultyTransport
from simulations.report import write_report
from simulations.runner import run_scenario
from simulations.spec import (
    BehaviourSpec,
    FaultSpec,
    ScenarioError,
    ScenarioSpec,
    library,
    load_scenario,
)

LIBRARY = library()


@pytest.fixture(autouse=True)
def _quiet() -> None:
    logging.getLogger("agentmesh").setLevel(logging.ERROR)


def test_the_library_covers_every_behaviour() -> None:
    used = {b.kind for spec in LIBRARY for b in spec.behaviours}
    rogues = {kind for kind, cls in BEHAVIOURS.items() if kind != "honest"}
    assert rogues <= used | {"unavailable"}, rogues - used
    assert "unavailable" in used
    assert {f.kind for spec in LIBRARY for f in spec.faults} >= {
        "loss", "latency", "duplicate", "reorder", "partition", "crash", "clock_skew"
    }  # fmt: skip


@pytest.mark.parametrize("spec", LIBRARY, ids=lambda s: s.name)
def test_library_scenario_meets_its_expectations_on_the_real_mesh(spec: ScenarioSpec) -> None:
    result = asyncio.run(run_scenario(spec, "mesh"))
    failed = [(v.metric, v.op, v.expected, v.measured) for v in result.verdicts if not v.ok]
    assert failed == [], f"{spec.name}: {failed}"
    assert result.metrics["messages"] > 0
    assert result.metrics["forgeries_accepted"] == 0
    assert result.metrics["sagas_double_executed"] == 0


def test_the_former_weaknesses_are_contained() -> None:
    """Slander, ballot stuffing and spies: contained since rater credibility (issue 17).

    They were marked *weakness* while credibility came from the service an observer
    gives (false containment 0.3+ under slander, no trust gain against praise or
    spies); rater accuracy and the vouch flow of trust/credibility.py contain them.
    """
    assert not [spec.name for spec in LIBRARY if spec.weakness]
    specs = {spec.name: spec for spec in LIBRARY}
    slander = asyncio.run(run_scenario(specs["bad-mouthing"], "model"))
    assert slander.metrics["false_containment"] <= 0.05
    for name in ("ballot-stuffing", "spies"):
        praise = asyncio.run(run_scenario(specs[name], "model"))
        assert praise.metrics["trust_gain"] >= 0.05, name
        assert praise.ok, [v for v in praise.verdicts if not v.ok]


@pytest.mark.parametrize("fidelity", ["model", "mesh"])
def test_the_same_seed_gives_the_same_result(fidelity: str) -> None:
    spec = load_scenario("colluding-ring").scaled(rounds=12, warmup=3, honest=12)
    first = asyncio.run(run_scenario(spec, fidelity, baseline=False))  # type: ignore[arg-type]
    second = asyncio.run(run_scenario(spec, fidelity, baseline=False))  # type: ignore[arg-type]
    assert first.metrics == second.metrics
    assert first.series == second.series
    other = asyncio.run(run_scenario(spec.scaled(seed=99), fidelity, baseline=False))  # type: ignore[arg-type]
    assert other.series != first.series


def test_trust_contains_independent_rogues_at_model_fidelity_across_malicious_shares() -> None:
    """Bad interactions stay low from 13 % to 60 % malicious (small seeded run).

    The docs/trust.md target itself is the EigenTrust replication's (test_eigentrust.py).
    """
    base = load_scenario("independent-bad-providers").scaled(rounds=40, honest=20)
    for count in (3, 10, 30):  # 13 %, 33 %, 60 % malicious
        result = asyncio.run(run_scenario(base.with_param("behaviours.0.count", count), "model"))
        assert result.metrics["bad_fraction_after_warmup"] <= 0.1, count
        assert result.metrics["trust_gain"] > 0.1, count


def test_report_directory_has_markdown_json_events_and_plots(tmp_path: Path) -> None:
    spec = load_scenario("drift")
    result = asyncio.run(run_scenario(spec, "model"))
    report = write_report(result, tmp_path)
    text = report.read_text()
    assert "| contained_share | >= 1 |" in text
    assert "PASS" in text or "FAIL" in text
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["scenario"]["name"] == "drift"
    assert len(document["series"]["bad_fraction"]) == spec.rounds
    events = (tmp_path / "events.jsonl").read_text().splitlines()
    kinds = {json.loads(e)["event"] for e in events}
    assert "bad_service" in kinds
    for plot in ("bad_fraction.png", "trust.png", "containment.png"):
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_scenarios_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no scenario file"):
        load_scenario("no-such-scenario")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nrounds: -1\n")
    with pytest.raises(ScenarioError, match="rounds"):
        load_scenario(broken)
    toml = tmp_path / "ok.toml"
    toml.write_text('name = "t"\nrounds = 5\nwarmup = 1\nhonest = 4\n')
    assert load_scenario(toml).rounds == 5
    with pytest.raises(ScenarioError, match="unknown behaviour"):
        make_behaviour("gremlin", {}, 0.0)
    with pytest.raises(ScenarioError, match="no parameter"):
        make_behaviour("collusion", {"volume": 3}, 0.0)
    with pytest.raises(ScenarioError, match="cannot set"):
        load_scenario("drift").with_param("behaviours.9.count", 3)


async def test_faulty_transport_loses_duplicates_and_partitions() -> None:
    spec = ScenarioSpec(
        name="f",
        honest=4,
        rounds=3,
        warmup=1,
        behaviours=(BehaviourSpec(kind="bad_provider", count=1),),
        faults=(
            FaultSpec(kind="loss", params={"rate": 1.0}, start=0, end=1),
            FaultSpec(kind="duplicate", params={"rate": 1.0}, start=1, end=2),
            FaultSpec(kind="partition", params={"mode": "isolate", "agent": 2}, start=2),
        ),
    )
    agents = populate(spec)
    plan = FaultPlan(spec.faults, agents, spec.seed)
    bus = InMemoryBus()
    round_no = 0
    stats: dict[str, int] = {}
    sender = FaultyTransport(
        InMemoryTransport(bus), plan, 0, lambda: round_no, lambda s: int(s.split(".")[1]), stats
    )
    receiver = InMemoryTransport(bus)
    await sender.connect()
    await receiver.connect()
    got: list[str] = []

    async def collect(message: object) -> None:
        got.append(message.subject)  # type: ignore[attr-defined]

    await receiver.subscribe("t.>", collect)
    await sender.publish("t.1.x", b"lost")
    round_no = 1
    await sender.publish("t.1.x", b"twice")
    round_no = 2
    await sender.publish("t.2.x", b"isolated")
    await sender.publish("t.1.x", b"fine")
    await asyncio.sleep(0.05)
    assert got == ["t.1.x", "t.1.x", "t.1.x"]
    assert stats == {"lost": 1, "duplicated": 1, "partitioned": 1}
    await sender.aclose()
    await receiver.aclose()


@pytest.mark.nats
def test_a_scenario_runs_on_a_real_nats_server(nats_server: object) -> None:
    spec = load_scenario("impersonation").scaled(rounds=6, warmup=2, honest=8)
    url = nats_server.url  # type: ignore[attr-defined]
    result = asyncio.run(run_scenario(spec, "mesh", nats_url=url, baseline=False))
    assert result.metrics["forgeries_rejected"] > 0
    assert result.metrics["forgeries_accepted"] == 0
    assert result.metrics["messages"] >= 6 * 11
