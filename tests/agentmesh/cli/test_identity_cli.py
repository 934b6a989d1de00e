"""``agentmesh identity``: create and inspect encrypted identity files."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from agentmesh.cli.main import app
from iatp.did import is_did
from iatp.keystore import load_identity, read_keystore_did

PASSPHRASE = "tr0ub4dor&3"
ENV = "AGENTMESH_TEST_PASSPHRASE"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _flat(text: str) -> str:
    """Rich wraps long lines inside a box; compare without the box and line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _new(runner: CliRunner, out: Path, *extra: str) -> Result:
    return runner.invoke(
        app,
        ["identity", "new", "--out", str(out), "--passphrase-env", ENV, *extra],
        env={ENV: PASSPHRASE},
    )


def test_identity_new_writes_an_encrypted_0600_file_and_prints_the_did(
    runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "agent.json"
    result = _new(runner, out)
    assert result.exit_code == 0, result.output
    did = result.stdout.strip().splitlines()[-1]
    assert is_did(did)
    assert read_keystore_did(out) == did
    assert load_identity(out, PASSPHRASE).did == did
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert PASSPHRASE not in result.output


def test_identity_new_refuses_to_overwrite_without_force(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "agent.json"
    assert _new(runner, out).exit_code == 0
    before = out.read_bytes()
    result = _new(runner, out)
    assert result.exit_code != 0
    assert "--force" in _flat(result.output)
    assert "exists" in _flat(result.output)
    assert out.read_bytes() == before


def test_identity_new_overwrites_with_force(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "agent.json"
    assert _new(runner, out).exit_code == 0
    first = read_keystore_did(out)
    result = _new(runner, out, "--force")
    assert result.exit_code == 0, result.output
    second = read_keystore_did(out)
    assert second != first
    assert load_identity(out, PASSPHRASE).did == second


def test_identity_new_refuses_existing_non_keystore_file_without_force(
    runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("precious")
    assert _new(runner, out).exit_code != 0
    assert out.read_text() == "precious"


@pytest.mark.parametrize("value", [None, ""])
def test_passphrase_env_unset_or_empty_is_a_clear_error(
    runner: CliRunner, tmp_path: Path, value: str | None
) -> None:
    out = tmp_path / "agent.json"
    env = {ENV: value} if value is not None else {}
    os.environ.pop(ENV, None)
    result = runner.invoke(
        app, ["identity", "new", "--out", str(out), "--passphrase-env", ENV], env=env
    )
    assert result.exit_code != 0
    message = _flat(result.output)
    assert ENV in message
    assert "not set" in message
    assert not out.exists()
    assert "Traceback" not in result.output


def test_identity_new_prompts_for_a_confirmed_passphrase(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "agent.json"
    result = runner.invoke(
        app, ["identity", "new", "--out", str(out)], input=f"{PASSPHRASE}\n{PASSPHRASE}\n"
    )
    assert result.exit_code == 0, result.output
    assert load_identity(out, PASSPHRASE).did == read_keystore_did(out)
    assert PASSPHRASE not in result.output


def test_identity_new_into_a_missing_directory_fails_cleanly(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = _new(runner, tmp_path / "missing" / "agent.json")
    assert result.exit_code == 2  # bad input (docs/cli.md)
    assert "cannot write" in _flat(result.output)


def test_identity_show_json_prints_the_did(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "agent.json"
    assert _new(runner, out).exit_code == 0
    result = runner.invoke(app, ["identity", "show", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["did"] == read_keystore_did(out)
    assert doc["file"] == str(out)
    assert "verified" not in doc


def test_identity_show_plain_prints_only_the_did(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "agent.json"
    assert _new(runner, out).exit_code == 0
    result = runner.invoke(app, ["identity", "show", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == read_keystore_did(out)


def test_identity_show_with_the_right_passphrase_is_verified(
    runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "agent.json"
    assert _new(runner, out).exit_code == 0
    result = runner.invoke(
        app,
        ["identity", "show", str(out), "--json", "--passphrase-env", ENV],
        env={ENV: PASSPHRASE},
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == {"did": read_keystore_did(out), "file": str(out), "verified": True}


def test_identity_show_verify_prompts_for_the_passphrase(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "agent.json"
    assert _new(runner, out).exit_code == 0
    result = runner.invoke(app, ["identity", "show", str(out), "--verify"], input=f"{PASSPHRASE}\n")
    assert result.exit_code == 0, result.output
    assert read_keystore_did(out) in result.stdout
    assert "verified" in result.output


def test_identity_show_with_a_wrong_passphrase_fails_and_says_so(
    runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "agent.json"
    assert _new(runner, out).exit_code == 0
    result = runner.invoke(
        app,
        ["identity", "show", str(out), "--json", "--passphrase-env", ENV],
        env={ENV: "wrong " + PASSPHRASE},
    )
    assert result.exit_code != 0
    assert "passphrase" in _flat(result.output)
    assert '"verified": true' not in result.stdout


def test_identity_show_of_a_tampered_file_fails(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "agent.json"
    assert _new(runner, out).exit_code == 0
    doc = json.loads(out.read_text())
    doc["version"] = 99
    out.write_text(json.dumps(doc))
    result = runner.invoke(app, ["identity", "show", str(out), "--json"])
    assert result.exit_code == 2
    assert "error" in _flat(result.output)


@pytest.mark.parametrize("content", [None, "not json"])
def test_identity_show_of_a_missing_or_foreign_file_fails(
    runner: CliRunner, tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "agent.json"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["identity", "show", str(path)])
    assert result.exit_code == 2
    assert "error" in _flat(result.output)
    assert "Traceback" not in result.output


def _command_paths(command: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    # typer vendors its own click, so groups are recognised by their ``commands``.
    paths = [prefix]
    for name, sub in (getattr(command, "commands", None) or {}).items():
        paths.extend(_command_paths(sub, (*prefix, name)))
    return paths


def test_every_command_has_working_help(runner: CliRunner) -> None:
    root = typer.main.get_command(app)
    paths = _command_paths(root)
    assert ("identity", "new") in paths
    assert ("identity", "show") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, f"{path}: {result.output}"
        assert "Usage" in result.output
        assert "--help" in result.output


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    result = runner.invoke(app, [])
    assert "identity" in result.output
    assert "Usage" in result.output


def test_real_subprocess_new_then_show_json(tmp_path: Path) -> None:
    out = tmp_path / "agent.json"
    env = {**os.environ, ENV: PASSPHRASE}
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentmesh",
            "identity",
            "new",
            "--out",
            str(out),
            "--passphrase-env",
            ENV,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentmesh",
            "identity",
            "show",
            str(out),
            "--json",
            "--passphrase-env",
            ENV,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert is_did(doc["did"])
    assert doc["verified"] is True
    assert doc["did"] == created.stdout.strip().splitlines()[-1]
    assert load_identity(out, PASSPHRASE).did == doc["did"]
