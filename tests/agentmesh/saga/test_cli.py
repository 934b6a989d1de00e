"""``agentmesh saga list`` / ``show`` against sagas run over a real nats-server."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.saga import EligibilityGuard, StaticBlockList
from tests.agentmesh.saga.team import order_saga, standard_team
from tests.conftest import TransportFactory
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats


async def _run_sagas(url: str, mesh: str) -> None:
    factory = TransportFactory("nats", url)
    team = await standard_team(factory, mesh)
    blocks = StaticBlockList()
    try:
        coordinator = await team.coordinator(guard=EligibilityGuard(blocked=[blocks]))
        await coordinator.run(order_saga(), saga_id="ok-1")
        team.failing.add("ship")
        team.broken.add("refund")
        await coordinator.run(order_saga(), saga_id="bad-1")
    finally:
        await team.aclose()
        await factory.aclose()


@pytest.fixture(scope="module")
def mesh(nats_server: NatsServerProcess) -> str:
    asyncio.run(_run_sagas(nats_server.url, "clisagas"))
    return "clisagas"


def test_list_shows_every_saga_with_its_status(nats_server: NatsServerProcess, mesh: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["saga", "list", "--nats", nats_server.url, "--mesh", mesh])
    assert result.exit_code == 0, result.output
    assert "ok-1" in result.output
    assert "completed" in result.output
    assert "needs-attention" in result.output
    assert "need attention" in result.output
    as_json = runner.invoke(
        app,
        [
            "saga",
            "list",
            "--nats",
            nats_server.url,
            "--mesh",
            mesh,
            "--json",
            "--status",
            "completed",
        ],
    )
    assert [s["id"] for s in json.loads(as_json.stdout)] == ["ok-1"]


def test_show_prints_the_timeline_with_compensations(
    nats_server: NatsServerProcess, mesh: str
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["saga", "show", "bad-1", "--nats", nats_server.url, "--mesh", mesh],
        env={"COLUMNS": "220"},
    )
    assert result.exit_code == 0, result.output
    for text in (
        "saga.compensating",
        "compensation.attempt_failed",
        "compensation.failed",
        "saga.needs_attention",
        "compensations (reverse order)",
        "declined",
    ):
        assert text in result.output, text
    detail = json.loads(
        runner.invoke(
            app, ["saga", "show", "bad-1", "--nats", nats_server.url, "--mesh", mesh, "--json"]
        ).stdout
    )
    assert detail["status"] == "needs-attention"
    assert [c["step"] for c in detail["compensations"]] == ["charge", "reserve"]
    assert [c["status"] for c in detail["compensations"]] == ["failed", "done"]


def test_unknown_saga_and_unreachable_server_say_what_to_do(
    nats_server: NatsServerProcess, mesh: str
) -> None:
    runner = CliRunner()
    missing = runner.invoke(
        app, ["saga", "show", "nope", "--nats", nats_server.url, "--mesh", mesh]
    )
    assert missing.exit_code == 1
    assert "saga_not_found" in missing.output
    assert "agentmesh saga list" in missing.output
    down = runner.invoke(app, ["saga", "list", "--nats", "nats://127.0.0.1:1", "--mesh", mesh])
    assert down.exit_code == 1  # a connection failure (docs/cli.md)
    assert "Is nats-server running" in down.output


def test_help_explains_the_commands() -> None:
    result = CliRunner().invoke(app, ["saga", "--help"])
    assert result.exit_code == 0
    assert "list" in result.output
    assert "show" in result.output
