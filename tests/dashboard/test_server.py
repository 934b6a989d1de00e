"""Serving: loopback by default, live server-sent events, and the CLI around it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agentmesh.cli import dashboard as dashboard_cli
from agentmesh.cli.main import app as cli
from agentmesh.dashboard.app import create_app
from agentmesh.dashboard.errors import RemoteBindRefused
from agentmesh.dashboard.monitor import MeshMonitor
from agentmesh.dashboard.operations import OperationGate
from agentmesh.dashboard.server import DashboardServer, check_bind, is_loopback
from iatp.identity import AgentIdentity
from iatp.keystore import save_identity
from registry.revocation import RevocationKind
from tests.dashboard.conftest import SmallMesh

runner = CliRunner()


def test_only_loopback_unless_remote_is_allowed() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
        check_bind(host, allow_remote=False)
    for host in ("0.0.0.0", "192.168.1.10", "::", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(RemoteBindRefused):
            check_bind(host, allow_remote=False)
    check_bind("0.0.0.0", allow_remote=True)


async def _events(stream: httpx.Response) -> Any:
    event: dict[str, str] = {}
    async for line in stream.aiter_lines():
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            event[key] = value.strip()


async def test_events_push_a_new_snapshot_when_an_agent_is_quarantined(
    memory_mesh: SmallMesh, monitor: MeshMonitor, gate: OperationGate
) -> None:
    stop = asyncio.Event()
    app = create_app(monitor, operations=gate, stop=stop)
    async with (
        DashboardServer(app, port=0, stop=stop) as server,
        httpx.AsyncClient(base_url=server.url, timeout=10.0) as http,
    ):
        assert server.port != 0
        assert server.url.startswith("http://127.0.0.1:")
        async with http.stream("GET", "/api/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = _events(stream)
            first = await anext(events)
            assert first["event"] == "state"
            assert json.loads(first["data"])["mesh"] == memory_mesh.mesh
            from agentmesh.dashboard.operations import operation_document, sign_operation

            carol = memory_mesh.did("carol")
            entry = sign_operation(memory_mesh.authority, carol, RevocationKind.QUARANTINED, "live")
            posted = await http.post("/api/operations", json=operation_document(entry))
            assert posted.status_code == 200

            async def quarantined() -> dict[str, Any]:
                async for event in events:
                    state = json.loads(event["data"])
                    row = next(a for a in state["agents"] if a["did"] == carol)
                    if row["status"] == "quarantined":
                        return state
                raise AssertionError("stream ended")

            state = await asyncio.wait_for(quarantined(), 10.0)
            assert state["quarantines"][0]["did"] == carol
    assert stop.is_set()


async def test_a_taken_port_is_reported(monitor: MeshMonitor) -> None:
    async with DashboardServer(create_app(monitor), port=0) as first:
        second = DashboardServer(create_app(monitor), port=first.port)
        with pytest.raises(Exception, match="could not listen"):
            await second.start(timeout=5.0)


def test_cli_refuses_a_remote_host_and_needs_a_source() -> None:
    result = runner.invoke(cli, ["dashboard", "--demo", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "not a loopback address" in result.output
    result = runner.invoke(cli, ["dashboard"])
    assert result.exit_code == 2
    assert "--nats URL or --demo" in result.output


def test_cli_hints_at_the_extra_when_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard_cli, "_NEEDED", ("starlette", "no_such_module_xyz"))
    result = runner.invoke(cli, ["dashboard", "--demo"])
    assert result.exit_code == 2
    assert "pip install 'agentmesh[dashboard]'" in result.output


def test_cli_signs_an_operation_the_gate_accepts(tmp_path: Path) -> None:
    authority = AgentIdentity.generate()
    key = tmp_path / "authority.id"
    save_identity(authority, key, "pass phrase")
    target = AgentIdentity.generate().did
    out = tmp_path / "op.json"
    result = runner.invoke(
        cli,
        [
            "dashboard",
            "sign",
            "quarantine",
            target,
            "--identity",
            str(key),
            "--reason",
            "rogue",
            "--passphrase-env",
            "DASH_PASS",
            "--out",
            str(out),
        ],
        env={"DASH_PASS": "pass phrase"},
    )
    assert result.exit_code == 0, result.output
    entry = OperationGate(lambda e: asyncio.sleep(0), [authority.did]).check(out.read_bytes())
    assert (entry.subject, entry.kind, entry.reason) == (
        target,
        RevocationKind.QUARANTINED,
        "rogue",
    )
    bad = runner.invoke(
        cli,
        ["dashboard", "sign", "revoke", target, "--identity", str(key), "--reason", "x"],
    )
    assert bad.exit_code == 2
