"""``agentmesh mesh`` and the secure options of other commands: good paths and bad input.

Every bad input ends with one clear line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from agentmesh.broker.authority import read_jwt, role_of
from agentmesh.broker.config import MeshSecurityConfig
from agentmesh.broker.jwt import decode_jwt
from agentmesh.broker.nkeys import user_nkey_for_did
from agentmesh.broker.subject_map import Role
from agentmesh.cli.main import app
from iatp.identity import AgentIdentity
from iatp.keystore import save_identity

ENV = "AGENTMESH_TEST_PASSPHRASE"
PASSPHRASE = "mesh-cli-test"


def _flat(text: str) -> str:
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def authority(tmp_path: Path) -> tuple[AgentIdentity, Path]:
    identity = AgentIdentity.generate()
    path = tmp_path / "authority.id"
    save_identity(identity, path, PASSPHRASE)
    return identity, path


def invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(app, [*args, "--passphrase-env", ENV], env={ENV: PASSPHRASE})


def init(runner: CliRunner, directory: Path, identity: Path, *extra: str) -> Result:
    return invoke(
        runner, "mesh", "init", "--dir", str(directory), "--identity", str(identity), *extra
    )


def test_init_writes_a_mesh_and_add_agent_issues_a_scoped_jwt(
    runner: CliRunner, tmp_path: Path, authority: tuple[AgentIdentity, Path]
) -> None:
    identity, path = authority
    mesh = tmp_path / "mesh"
    result = init(runner, mesh, path, "--mesh", "corp", "--max-payload", "65536")
    assert result.exit_code == 0, result.output
    assert "nats-server -c" in _flat(result.output)
    config = MeshSecurityConfig.load(mesh)
    assert (config.mesh, config.authority_did) == ("corp", identity.did)
    assert config.limits.agent_max_payload == 65536
    conf = (mesh / "nats-server.conf").read_text()
    assert "resolver" in conf
    assert config.system_account in conf
    assert (mesh / "nats-server.conf").stat().st_mode & 0o077 == 0
    assert re.search(r"\bS[OAU][A-Z2-7]{56}\b", conf) is None  # no nkey seed in it
    agent = AgentIdentity.generate()
    out = tmp_path / "agent.jwt"
    result = invoke(
        runner,
        "mesh",
        "add-agent",
        agent.did,
        "--dir",
        str(mesh),
        "--identity",
        str(path),
        "--out",
        str(out),
        "--role",
        "coordinator",
        "--topic",
        "news",
    )
    assert result.exit_code == 0, result.output
    token = decode_jwt(read_jwt(out), kind="user")
    assert token.subject == user_nkey_for_did(agent.did)
    assert role_of(read_jwt(out)) is Role.COORDINATOR
    assert "corp.topic.news" in token.nats["pub"]["allow"]
    assert "saga.corp.log.>" in token.nats["pub"]["allow"]
    assert token.nats["payload"] == 65536


def test_init_refuses_an_existing_mesh_a_bad_name_and_a_wrong_passphrase(
    runner: CliRunner, tmp_path: Path, authority: tuple[AgentIdentity, Path]
) -> None:
    _, path = authority
    assert init(runner, tmp_path / "m", path).exit_code == 0
    again = init(runner, tmp_path / "m", path)
    assert again.exit_code == 1
    assert "already holds a mesh" in _flat(again.output)
    dotted = init(runner, tmp_path / "d", path, "--mesh", "a.b")
    assert dotted.exit_code == 1
    assert "single token" in _flat(dotted.output)
    wrong = runner.invoke(
        app,
        [
            "mesh",
            "init",
            "--dir",
            str(tmp_path / "w"),
            "--identity",
            str(path),
            "--passphrase-env",
            ENV,
        ],
        env={ENV: "not the passphrase"},
    )
    assert wrong.exit_code == 2  # bad input: an identity that does not open (docs/cli.md)
    assert "identity new" in _flat(wrong.output)
    assert "Traceback" not in wrong.output


def test_add_agent_refuses_bad_input_and_a_stranger_as_authority(
    runner: CliRunner, tmp_path: Path, authority: tuple[AgentIdentity, Path]
) -> None:
    _, path = authority
    mesh = tmp_path / "mesh"
    assert init(runner, mesh, path).exit_code == 0
    stranger = tmp_path / "stranger.id"
    save_identity(AgentIdentity.generate(), stranger, PASSPHRASE)
    did = AgentIdentity.generate().did
    cases = {
        ("not-a-did", "--identity", str(path)): "not an Ed25519 did:key",
        (did, "--identity", str(path), "--role", "king"): "one of",
        (did, "--identity", str(path), "--role", "authority"): "mesh init",
        (did, "--identity", str(path), "--topic", "bad topic"): "topic",
        (did, "--identity", str(stranger)): "is not the authority",
    }
    for args, message in cases.items():
        result = invoke(
            runner,
            "mesh",
            "add-agent",
            args[0],
            "--dir",
            str(mesh),
            "--out",
            str(tmp_path / "x.jwt"),
            *args[1:],
        )
        assert result.exit_code != 0, args
        assert message in _flat(result.output), (args, result.output)
        assert "Traceback" not in result.output
    missing = invoke(
        runner,
        "mesh",
        "add-agent",
        did,
        "--dir",
        str(tmp_path / "nowhere"),
        "--identity",
        str(path),
        "--out",
        str(tmp_path / "x.jwt"),
    )
    assert missing.exit_code == 1
    assert "mesh init" in _flat(missing.output)


def test_secure_options_must_fit_together(
    runner: CliRunner, tmp_path: Path, authority: tuple[AgentIdentity, Path]
) -> None:
    _, path = authority
    mesh = tmp_path / "mesh"
    assert init(runner, mesh, path).exit_code == 0
    other = AgentIdentity.generate()
    jwt = tmp_path / "other.jwt"
    assert (
        invoke(
            runner,
            "mesh",
            "add-agent",
            other.did,
            "--dir",
            str(mesh),
            "--identity",
            str(path),
            "--out",
            str(jwt),
        ).exit_code
        == 0
    )
    no_identity = invoke(
        runner, "registry", "list", "--nats", "nats://127.0.0.1:1", "--jwt", str(jwt)
    )
    assert no_identity.exit_code == 2
    assert "need --identity" in _flat(no_identity.output)
    wrong_key = invoke(
        runner,
        "registry",
        "list",
        "--nats",
        "nats://127.0.0.1:1",
        "--jwt",
        str(jwt),
        "--identity",
        str(path),
    )
    assert wrong_key.exit_code == 2
    assert "issued for another key" in _flat(wrong_key.output)
    not_a_jwt = tmp_path / "junk.jwt"
    not_a_jwt.write_text("hello world")
    junk = invoke(
        runner,
        "registry",
        "list",
        "--nats",
        "nats://127.0.0.1:1",
        "--jwt",
        str(not_a_jwt),
        "--identity",
        str(path),
    )
    assert junk.exit_code == 2
    assert "does not hold a JWT" in _flat(junk.output)


def test_subject_map_and_show(
    runner: CliRunner, tmp_path: Path, authority: tuple[AgentIdentity, Path]
) -> None:
    _, path = authority
    result = runner.invoke(app, ["mesh", "subject-map", "--mesh", "shop"])
    assert result.exit_code == 0
    assert "`shop.agent.{key}.>`" in result.output
    assert init(runner, tmp_path / "m", path, "--mesh", "shop").exit_code == 0
    shown = runner.invoke(app, ["mesh", "show", "--dir", str(tmp_path / "m")])
    assert shown.exit_code == 0
    assert "shop" in shown.output
    assert json.loads((tmp_path / "m" / "mesh.json").read_text())["mesh"] == "shop"
