"""Every example and the demo run, on the embedded mesh and over a real nats-server."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from agentmesh.demo.governance import Attempt, GovernanceReport, run_governance_act
from tests.natsserver import NatsServerProcess

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def test_there_are_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_embedded(example: Path) -> None:
    result = run([str(example)])
    assert result.returncode == 0, result.stderr


@pytest.mark.nats
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_over_nats(example: Path, nats_server: NatsServerProcess) -> None:
    result = run([str(example), "--nats", nats_server.url])
    assert result.returncode == 0, result.stderr


def test_demo_catches_every_impostor_message_embedded() -> None:
    result = run(["-m", "agentmesh", "demo"])
    assert result.returncode == 0, result.stderr
    assert "caught 4 of 4 impostor messages" in result.stdout
    for code in ("bad_signature", "malformed", "replayed", "handshake_failed"):
        assert code in result.stdout
    # The saga section: a declined payment is compensated, a quarantined one handed off.
    assert re.search(r"order-declined-\w+: compensated", result.stdout)
    assert re.search(r"order-handoff-\w+: completed", result.stdout)
    assert "step.handoff" in result.stdout
    assert_governance_narrated(result.stdout)
    assert result.stdout.index("impostor messages") < result.stdout.index("governance:")
    assert result.stdout.index("governance:") < result.stdout.index("saga order-")
    assert_next_steps_closes(result.stdout)


@pytest.mark.nats
def test_demo_over_nats(nats_server: NatsServerProcess) -> None:
    result = run(["-m", "agentmesh", "demo", "--nats", nats_server.url])
    assert result.returncode == 0, result.stderr
    assert "caught 4 of 4 impostor messages" in result.stdout
    assert re.search(r"order-handoff-\w+: completed", result.stdout)
    assert_governance_narrated(result.stdout)
    assert_next_steps_closes(result.stdout)


def assert_next_steps_closes(stdout: str) -> None:
    """The demo ends by saying where to look next: dashboard, metrics, traces, docs."""
    closing = stdout[stdout.index("where to look next") :]
    assert "saga order-" not in closing  # printed last
    assert "impostor" not in closing
    for line in (
        "agentmesh dashboard --demo",
        "http://127.0.0.1:8787",
        "agentmesh dashboard --nats nats://127.0.0.1:4222",
        "agentmesh node run ... --metrics-port 9464",
        "curl http://127.0.0.1:9464/metrics",
        "agentmesh node run ... --trace-file spans.jsonl",
        "--otlp-endpoint http://127.0.0.1:4318/v1/traces",
        "docs/dashboard.md",
        "docs/metrics.md",
        "docs/observability.md",
    ):
        assert line in closing, line


def assert_governance_narrated(stdout: str) -> None:
    text = " ".join(stdout.split())  # rich wraps long lines at 80 columns
    assert "planner verifies 5" in text
    assert "research: researcher" in text
    assert "researcher payments.refund (ring 2): allowed" in text
    assert re.search(r"outcome_cusum → ring 2 → 3 at once", text)
    assert (
        "researcher payments.refund (ring 3): refused policy_denied (sandbox-no-payments)" in text
    )
    assert "analyst payments.refund (ring 2): allowed" in text
    assert "transfer(5000): refused policy_denied (transfer-limit)" in text
    assert "refused egress_denied (cloud metadata endpoint)" in text
    assert "research, rings 1-2: analyst" in text


def test_demo_without_governance_or_saga() -> None:
    result = run(["-m", "agentmesh", "demo", "--no-governance", "--no-saga"])
    assert result.returncode == 0, result.stderr
    assert "caught 4 of 4 impostor messages" in result.stdout
    assert "governance" not in result.stdout
    assert "saga" not in result.stdout
    assert_next_steps_closes(result.stdout)


EXPECTED_ATTEMPTS = [
    ("researcher", "payments.refund", "allowed", None),  # ring 2, before the drift
    ("researcher", "payments.refund", "policy_denied", "sandbox-no-payments"),  # next request
    ("analyst", "payments.refund", "allowed", None),  # the same request, ring 2
    ("analyst", "payments.transfer", "allowed", None),  # 250
    ("analyst", "payments.transfer", "policy_denied", "transfer-limit"),  # 5000
    ("analyst", "web.fetch", "egress_denied", "cloud metadata endpoint"),
]


@pytest.mark.parametrize("over", ["memory", pytest.param("nats", marks=pytest.mark.nats)])
async def test_governance_act_outcomes(over: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("nats_server").url if over == "nats" else None
    report = await run_governance_act(url, console=Console(file=io.StringIO()))
    assert report.cards == 5
    assert report.ranking == ["researcher", "analyst", "newcomer"]  # most good evidence first
    assert report.rings_before == {"researcher": 2, "analyst": 2, "newcomer": 3}
    assert report.rings_after == {"researcher": 3, "analyst": 2, "newcomer": 3}
    assert report.drifted == "researcher"
    assert 5 <= report.bad_deliveries <= 8  # the CUSUM alarm, not the loop's bound
    assert report.scores["researcher"] < report.scores["newcomer"] < report.scores["analyst"]
    assert report.engines_agree  # planner and treasury folded the same stream
    assert [(a.agent, a.action, a.outcome, a.rule) for a in report.attempts] == EXPECTED_ATTEMPTS
    assert report.attempts[1].ring == 3
    assert report.ranking_after == ["analyst"]
    # The receiving node refused and audited the message; the governor audited the tools.
    assert report.treasury_rejected == {"policy_denied": 1}
    assert report.treasury_audited["policy_denied"] == 2
    assert report.treasury_audited["egress_denied"] == 1
    assert report.ok


def test_governance_report_ok_needs_every_outcome() -> None:
    good = GovernanceReport(
        drifted="researcher",
        rings_before={"researcher": 2},
        rings_after={"researcher": 3},
        attempts=[Attempt(*fields) for fields in EXPECTED_ATTEMPTS],
        ranking=["researcher", "analyst"],
        ranking_after=["analyst"],
        engines_agree=True,
    )
    assert good.ok
    allowed = Attempt("researcher", "payments.refund", "allowed")
    assert not replace(good, attempts=[*good.attempts[:1], allowed, *good.attempts[2:]]).ok
    assert not replace(good, rings_after={"researcher": 2}).ok
    by_default = Attempt("researcher", "payments.refund", "policy_denied", None)
    assert not replace(good, attempts=[*good.attempts[:1], by_default, *good.attempts[2:]]).ok
    assert not replace(good, drifted=None).ok
    assert not replace(good, ranking_after=["analyst", "researcher"]).ok
    assert not replace(good, engines_agree=False).ok
    assert not GovernanceReport().ok


@pytest.mark.nats
def test_federation_example_runs_the_order_saga_across_two_organizations() -> None:
    result = run([str(ROOT / "examples" / "federation" / "order_saga.py")], timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "order-declined: compensated" in result.stdout
    assert "order-handoff: completed" in result.stdout
    assert re.search(r"globex quarantines pay-[ab] while it charges", result.stdout)
