"""``agentmesh registry``: help, bad input and an unreachable mesh (no server needed).

The commands against a live mesh run in ``test_cross_process.py``.
"""

from __future__ import annotations

from typer.testing import CliRunner

from agentmesh.cli.main import app

runner = CliRunner()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["registry", "--help"])
    assert result.exit_code == 0
    for command in ("list", "show", "find", "revoke", "approve"):
        assert command in result.output


def test_a_malformed_did_is_a_usage_error() -> None:
    result = runner.invoke(app, ["registry", "show", "did:web:x", "--nats", "nats://127.0.0.1:1"])
    assert result.exit_code == 2
    assert "did:key" in result.output


def test_an_unreachable_mesh_says_what_to_check() -> None:
    result = runner.invoke(app, ["registry", "list", "--nats", "nats://127.0.0.1:1"])
    assert result.exit_code == 1
    assert "cannot reach the mesh" in result.output


def test_node_run_refuses_a_bad_capability() -> None:
    result = runner.invoke(
        app,
        ["node", "run", "--identity", "x", "--nats", "nats://h:1", "--capability", "Bad Name"],
    )
    assert result.exit_code == 2
    assert "capability" in result.output.lower()
