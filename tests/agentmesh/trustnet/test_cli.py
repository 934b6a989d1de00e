"""``agentmesh trust``: show, top, graph and export, offline and against a real nats-server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentmesh.cli.main import app
from agentmesh.transport.nats import NatsTransport
from agentmesh.trustnet import ReceiptLedger
from iatp.clock import ManualClock
from tests.agentmesh.trustnet.trust_peer import CLIENT, WORLD, forged_receipt, world_receipts
from tests.natsserver import NatsServerProcess
from trust import TrustEngine

runner = CliRunner()
ANCHOR = WORLD[0].did


@pytest.fixture
def receipts_file(tmp_path: Path) -> Path:
    path = tmp_path / "receipts.jsonl"
    lines = [r.encode() for r in world_receipts()] + [forged_receipt().encode(), b"garbage"]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_top_lists_agents_best_first(receipts_file: Path) -> None:
    result = runner.invoke(
        app, ["trust", "top", "--receipts", str(receipts_file), "--pre-trusted", ANCHOR]
    )
    assert result.exit_code == 0, result.output
    assert "top 10 of 7 agents (69 receipts)" in result.output
    assert "forged_receipt" in result.output  # refused receipts are reported
    assert ANCHOR[:20] in result.output


def test_show_explains_one_agent(receipts_file: Path) -> None:
    args = ["trust", "show", WORLD[1].did, "--receipts", str(receipts_file)]
    result = runner.invoke(app, [*args, "--pre-trusted", ANCHOR])
    assert result.exit_code == 0, result.output
    for text in ("score", "ring", "who carries its trust", "receipts that moved it most"):
        assert text in result.output
    unknown = runner.invoke(app, ["trust", "show", CLIENT.did, "--receipts", str(receipts_file)])
    assert unknown.exit_code == 0
    assert "score" in unknown.output  # the client has one receipt about it


def test_bad_input_says_what_to_do(receipts_file: Path, tmp_path: Path) -> None:
    neither = runner.invoke(app, ["trust", "top"])
    assert neither.exit_code == 2
    assert "--nats" in neither.output
    bad_did = runner.invoke(app, ["trust", "show", "did:web:x", "--receipts", str(receipts_file)])
    assert bad_did.exit_code == 2
    missing = runner.invoke(app, ["trust", "top", "--receipts", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    unreachable = runner.invoke(app, ["trust", "top", "--nats", "nats://127.0.0.1:1"])
    assert unreachable.exit_code == 1
    assert "cannot read the receipt stream" in unreachable.output


def test_graph_writes_a_png(receipts_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "g.png"
    result = runner.invoke(
        app, ["trust", "graph", "--png", str(png), "--receipts", str(receipts_file)]
    )
    assert result.exit_code == 0, result.output
    assert png.read_bytes().startswith(b"\x89PNG")


def test_graph_without_matplotlib_is_a_friendly_error(
    receipts_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(
        app, ["trust", "graph", "--png", str(tmp_path / "g.png"), "--receipts", str(receipts_file)]
    )
    assert result.exit_code == 2
    assert "agentmesh[plots]" in result.output


@pytest.mark.nats
def test_export_and_top_against_a_real_server(
    nats_server: NatsServerProcess, uid: str, tmp_path: Path
) -> None:
    async def publish() -> None:
        async with NatsTransport(nats_server.url, name="cli-test") as transport:
            ledger = await ReceiptLedger.open(transport, TrustEngine(clock=ManualClock()), mesh=uid)
            for receipt in world_receipts():
                await ledger.publish(receipt)

    asyncio.run(publish())
    top = runner.invoke(
        app, ["trust", "top", "--nats", nats_server.url, "--mesh", uid, "--pre-trusted", ANCHOR]
    )
    assert top.exit_code == 0, top.output
    assert "(69 receipts)" in top.output
    out = tmp_path / "export.jsonl"
    exported = runner.invoke(
        app, ["trust", "export", "--out", str(out), "--nats", nats_server.url, "--mesh", uid]
    )
    assert exported.exit_code == 0, exported.output
    assert len(out.read_bytes().splitlines()) == 69
    offline = runner.invoke(app, ["trust", "top", "--receipts", str(out), "--pre-trusted", ANCHOR])
    assert offline.output.split("agents")[1] == top.output.split("agents")[1]
