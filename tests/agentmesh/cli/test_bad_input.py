"""Every command, given bad input, says what is wrong in one line and exits non-zero.

The table below has at least one row per command of the real command tree (a new
command without a row fails :func:`test_every_command_has_a_bad_input_row`). A row
runs the CLI in-process through the root group (the same error boundary as the
``agentmesh`` entry point) or, for the connection cases, as ``python -m agentmesh``
against a closed loopback port or a real nats-server started without JetStream.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from agentmesh.cli.main import app
from iatp.identity import AgentIdentity
from iatp.keystore import save_identity
from tests.conftest import start_or_fail
from tests.natsserver import NatsServerProcess

PASS_ENV = "AGENTMESH_TEST_PASS"
WRONG_ENV = "AGENTMESH_TEST_WRONG"
PASSPHRASE = "bad input passphrase"
DID = AgentIdentity.from_seed(bytes(32)).did
GARBAGE = b"not a receipt\n\x00\x01\x02 nor json\n"


@dataclass(frozen=True)
class Row:
    """One bad invocation: ``command`` (its path), ``args`` ({name} placeholders), expectations."""

    command: str
    args: str
    exit_code: int
    fragment: str
    process: bool = False  # run as `python -m agentmesh` (connection cases)

    @property
    def id(self) -> str:
        return f"{self.command}:{self.fragment}"


ID = "--identity {identity} --passphrase-env " + PASS_ENV
ROWS = [
    Row("identity new", "--out {identity} --passphrase-env " + PASS_ENV, 2, "pass --force"),
    Row("identity show", "{garbage}", 2, "not a JSON keystore"),
    Row("identity show", "{identity} --passphrase-env " + WRONG_ENV, 2, "wrong passphrase"),
    Row("node run", ID + " --nats http://127.0.0.1:4222", 2, "use nats://HOST:PORT", True),
    Row("node run", ID + " --nats {closed}", 1, "cannot reach nats-server", True),
    Row("node run", ID + " --nats {nojs}", 1, "has no JetStream", True),
    Row("node run", ID + " --nats {closed} --policy {non_utf8}", 2, "is not UTF-8 text"),
    Row("node run", "--identity {missing} --nats {closed}", 2, "No such file"),
    Row("node run", ID + " --nats {closed} --audit-log {garbage}", 2, "is not an audit log"),
    Row(
        "node run",
        ID + " --nats {closed} --organization " + DID + " --membership {garbage}",
        2,
        "does not hold a membership credential",
    ),
    Row("policy check", "{non_utf8}", 2, "is not UTF-8 text"),
    Row("policy check", "{missing}", 2, "does not exist"),
    Row("policy test", "{non_utf8} --request {{}}", 2, "is not UTF-8 text"),
    Row("audit verify", "{non_utf8_audit}", 2, "is not UTF-8 text"),
    Row("audit verify", "{missing}", 2, "does not exist"),
    Row("trust top", "--receipts {garbage}", 2, "is a valid signed receipt"),
    Row("trust show", DID + " --receipts {garbage}", 2, "is a valid signed receipt"),
    Row("trust graph", "--png {tmp}/g.png --receipts {missing}", 2, "does not exist"),
    Row("trust export", "--out {tmp}/r.txt --nats {nojs}", 1, "has no JetStream", True),
    Row("trust explain", DID + " --nats 127.0.0.1:4222", 2, "use nats://HOST:PORT"),
    Row("registry list", "--nats {closed}", 1, "cannot reach", True),
    Row("registry show", DID + " --nats {nojs}", 1, "has no JetStream", True),
    Row("registry find", "echo --nats tcp://127.0.0.1:4222", 2, "use nats://HOST:PORT"),
    Row(
        "registry revoke",
        DID + " --identity {identity} --passphrase-env " + WRONG_ENV + " --nats {closed}",
        2,
        "wrong passphrase",
    ),
    Row("registry approve", DID + " --identity {missing} --nats {closed}", 2, "No such file"),
    Row(
        "registry republish",
        ID + " --nats {closed} --journal {non_utf8_audit}",
        2,
        "is not UTF-8 text",
    ),
    Row("saga list", "--nats {nojs}", 1, "has no JetStream", True),
    Row("saga show", "x --nats localhost", 2, "use nats://HOST:PORT"),
    Row(
        "mesh init",
        "--dir {tmp}/m --identity {identity} --passphrase-env " + WRONG_ENV,
        2,
        "wrong passphrase",
    ),
    Row("mesh cluster-init", "--dir {tmp}/c --mesh-dir {missing}", 2, "mesh init"),
    Row("mesh add-agent", DID + " --dir {missing} " + ID + " --out {tmp}/a.jwt", 1, "mesh init"),
    Row("mesh provision", "--dir {missing} " + ID, 1, "mesh init"),
    Row("mesh show", "--dir {missing}", 1, "mesh init"),
    Row("mesh subject-map", "--mesh a,b", 2, "mesh name"),
    Row("mesh sync-revocations", "--dir {missing} " + ID, 1, "mesh init"),
    Row("mesh warden", "--dir {missing} " + ID, 1, "mesh init"),
    Row("federation link-key", "--mesh-dir {missing}", 1, "mesh init"),
    Row("federation propose", "{non_utf8} " + ID + " --out {tmp}/p.json", 2, "is not UTF-8"),
    Row("federation sign", "{garbage} " + ID, 1, "is not an agreement"),
    Row("federation show", "{missing}", 2, "does not exist"),
    Row("federation link", "{garbage} --mesh-dir {missing} " + ID, 1, "is not an agreement"),
    Row("federation unlink", "acme --mesh-dir {tmp} --identity {missing}", 2, "No such file"),
    Row(
        "federation revoke",
        "{missing} --mesh-dir {tmp} " + ID + " --reason x",
        2,
        "does not exist",
    ),
    Row(
        "federation issue-membership",
        "not-a-did --mesh-dir {tmp} " + ID + " --out {tmp}/m.vc",
        2,
        "not an Ed25519 did:key",
    ),
    Row(
        "federation revoke-membership",
        DID + " --mesh-dir {tmp} --identity {garbage}",
        2,
        "not a JSON keystore",
    ),
    Row("federation steward", "--mesh-dir {missing} " + ID, 1, "mesh init"),
    Row("dashboard", "--nats {nojs} --port 0", 1, "has no JetStream", True),
    Row("dashboard sign", "bogus " + DID + " " + ID + " --reason x", 2, "quarantine or release"),
    Row("quarantine", DID + " " + ID + " --reason x --nats {nojs}", 1, "has no JetStream", True),
    Row("release", DID + " " + ID + " --reason x --nats http://x", 2, "use nats://HOST:PORT"),
    Row("demo", "--nats foo", 2, "use nats://HOST:PORT"),
    Row("simulate list", "--bogus", 2, "No such option"),
    Row("simulate run", "{missing}", 2, "no scenario file"),
    Row("simulate sweep", "{missing} --param rounds --values 1", 2, "no scenario file"),
]


def commands(group: TyperGroup | None = None, path: tuple[str, ...] = ()) -> Iterator[str]:
    """Every command of the real tree (a group that runs on its own counts too)."""
    group = group or typer.main.get_command(app)  # type: ignore[assignment]
    assert isinstance(group, TyperGroup)
    if path and group.invoke_without_command:
        yield " ".join(path)
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            yield from commands(command, (*path, name))
        else:
            yield " ".join((*path, name))


def test_every_command_has_a_bad_input_row() -> None:
    found = set(commands())
    assert {"node run", "dashboard", "simulate run", "quarantine"} <= found  # the walk works
    missing = found - {row.command for row in ROWS}
    assert not missing, f"add a bad-input row for: {sorted(missing)}"
    assert not {row.command for row in ROWS} - found, "a row names no command"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("bad-input")
    identity = tmp / "agent.id"
    save_identity(AgentIdentity.generate(), identity, PASSPHRASE)
    (tmp / "policy.yaml").write_bytes(b"version: 1\nname: \xff\xfe caf\xe9\n")
    (tmp / "audit.jsonl").write_bytes(b'{"seq": 1, "kind": "\xff"}\n')
    (tmp / "garbage").write_bytes(GARBAGE)
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    return {
        "tmp": str(tmp),
        "identity": str(identity),
        "non_utf8": str(tmp / "policy.yaml"),
        "non_utf8_audit": str(tmp / "audit.jsonl"),
        "garbage": str(tmp / "garbage"),
        "missing": str(tmp / "no-such-file"),
        "closed": f"nats://127.0.0.1:{closed}",
    }


@pytest.fixture(scope="module")
def no_jetstream() -> Iterator[NatsServerProcess]:
    server = start_or_fail(NatsServerProcess(jetstream=False))
    try:
        yield server
    finally:
        server.close()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTMESH_DEBUG"}
    return {**env, PASS_ENV: PASSPHRASE, WRONG_ENV: "not " + PASSPHRASE}


def run_cli(argv: list[str], *, process: bool) -> tuple[int, str]:
    """(exit code, stderr) of ``agentmesh ARGV``, in this process or a child."""
    if process:
        done = subprocess.run(
            [sys.executable, "-m", "agentmesh", *argv],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
            check=False,
        )
        return done.returncode, done.stderr
    result = CliRunner().invoke(app, argv, env=_env())
    return result.exit_code, result.stderr


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.id)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    row: Row, files: dict[str, str], request: pytest.FixtureRequest
) -> None:
    values = dict(files)
    if "{nojs}" in row.args:
        values["nojs"] = request.getfixturevalue("no_jetstream").url
    argv = [*row.command.split(), *row.args.format(**values).split()]
    code, stderr = run_cli(argv, process=row.process)
    assert code == row.exit_code, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("agentmesh: error"), stderr
    assert row.fragment in lines[0]
    assert " — " in lines[0] or "(" in lines[0]  # what to do, or the error's code
    assert Path(files["garbage"]).read_bytes() == GARBAGE  # refused, never "repaired"


def test_debug_shows_the_traceback_then_the_line(files: dict[str, str]) -> None:
    argv = ["--debug", "policy", "test", files["non_utf8"], "--request", "{}"]
    code, stderr = run_cli(argv, process=True)
    assert code == 2
    assert "Traceback (most recent call last)" in stderr
    assert "UnicodeDecodeError" in stderr  # the cause, not only the CLI's own failure
    assert stderr.splitlines()[-1].startswith("agentmesh: error: ")
    quiet_code, quiet = run_cli(argv[1:], process=False)
    assert quiet_code == 2
    assert "Traceback" not in quiet


def test_agentmesh_debug_env_also_shows_it(
    files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTMESH_DEBUG", "1")
    result = CliRunner().invoke(app, ["audit", "verify", files["non_utf8_audit"]])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("agentmesh: error: ")


def test_an_unexpected_error_is_one_line_pointing_at_debug(
    files: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentmesh.policy.engine import CompiledPolicy

    def broken(path: object) -> object:
        raise RuntimeError("something nobody planned for")

    # The one place a fake is needed: a bug cannot be produced on purpose.
    monkeypatch.setattr(CompiledPolicy, "from_file", broken)
    result = CliRunner().invoke(app, ["policy", "check", files["non_utf8"]], env=_env())
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "agentmesh: error: unexpected RuntimeError: something nobody planned for "
        "— run with --debug for the traceback"
    ]


def test_help_documents_the_exit_codes_and_debug() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "--debug" in text
    assert "Exit codes: 0 ok" in text
    assert "2 bad usage or input" in text
