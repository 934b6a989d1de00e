"""Every example and the demo run, on the embedded mesh and over a real nats-server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.nats
def test_demo_over_nats(nats_server: NatsServerProcess) -> None:
    result = run(["-m", "agentmesh", "demo", "--nats", nats_server.url])
    assert result.returncode == 0, result.stderr
    assert "caught 4 of 4 impostor messages" in result.stdout
    assert re.search(r"order-handoff-\w+: completed", result.stdout)
