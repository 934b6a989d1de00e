"""``agentmesh policy check|test`` and ``agentmesh audit verify``, and the shipped examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentmesh.audit import AuditEvent, ChainedAuditLog, CheckpointSigner, checkpoint_path
from agentmesh.cli.main import app
from agentmesh.policy import CompiledPolicy
from iatp.identity import AgentIdentity

EXAMPLES = sorted((Path(__file__).parents[3] / "examples" / "policies").glob("*.*"))
runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_policy_loads(path: Path) -> None:
    assert CompiledPolicy.from_file(path).rules


def test_policy_check_reports_ok_and_errors_with_locations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nname: t\nrules:\n  - id: fine\n    effect: allow\n    match: {actions: [a]}\n"
        "  - id: typo\n    effect: allow\n    match: {actions: [a]}\n"
        "    when: {args.amount: {lessthan: 3}}\n"
    )
    result = runner.invoke(app, ["policy", "check", str(EXAMPLES[0]), str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:7: rule 'typo': args.amount: unknown operator 'lessthan'" in flat(result.output)
    assert runner.invoke(app, ["policy", "check", *map(str, EXAMPLES)]).exit_code == 0


def test_policy_test_prints_the_deciding_rule() -> None:
    payments = next(p for p in EXAMPLES if p.name == "payments.yaml")
    request = {
        "action": "payments.transfer",
        "kind": "tool",
        "ring": 2,
        "trust": 0.9,
        "args": {"amount": 40, "currency": "EUR"},
        "context": {"env": "prod"},
    }
    result = runner.invoke(
        app,
        ["policy", "test", str(payments), "--request", json.dumps(request), "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rule"] == "small-transfers"
    request["context"] = {"env": "dev"}
    result = runner.invoke(
        app,
        ["policy", "test", str(payments), "--request", json.dumps(request), "--expect", "allow"],
    )
    assert result.exit_code == 1
    assert "rule: production-only" in result.output
    bad = runner.invoke(app, ["policy", "test", str(payments), "--request", '{"actoin": "x"}'])
    assert bad.exit_code == 2
    assert "unknown request field" in flat(bad.output)


def test_audit_verify_ok_then_tampered(tmp_path: Path) -> None:
    node = AgentIdentity.generate()
    log_path = tmp_path / "audit.jsonl"
    signer = CheckpointSigner(node, checkpoint_path(log_path))
    with ChainedAuditLog(log_path, on_head=signer, checkpoint_every=2) as log:
        for i in range(6):
            log.append(AuditEvent(at_ms=i, node=node.did, kind="k", code=f"c{i}"))
    signer.close()
    ok = runner.invoke(app, ["audit", "verify", str(log_path), "--node", node.did])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output
    lines = log_path.read_text().splitlines()
    del lines[2]
    log_path.write_text("\n".join(lines) + "\n")
    tampered = runner.invoke(app, ["audit", "verify", str(log_path), "--node", node.did])
    assert tampered.exit_code == 1
    assert "removed" in tampered.output
    assert "TAMPERED" in tampered.output
    missing = runner.invoke(app, ["audit", "verify", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2
