"""``agentmesh node run`` as a process: SIGTERM while it sends, and a broker restart.

Two nodes over a real nats-server: the sender is stopped by SIGTERM in the middle of
a long run of echo requests and must still print its stats and exit 0; a node whose
server restarts logs the disconnect and the reconnect, one stderr line each.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from iatp.identity import AgentIdentity
from iatp.keystore import save_identity
from tests.conftest import start_or_fail
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

PASSPHRASE = "node run process passphrase"
REQUESTS = 1_000_000  # far more than fit in the test: SIGTERM must cut the run short


class Node:
    """One ``python -m agentmesh node run`` child; its stdout is JSON events."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, object]] = []
        self.logged: list[str] = []  # stderr lines read so far

    async def next_event(self, name: str, timeout: float = 30.0) -> dict[str, object]:
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not line:
                raise AssertionError(f"node exited before {name!r}: {self.events}")
            event: dict[str, object] = json.loads(line)
            self.events.append(event)
            if event["event"] == name:
                return event

    async def stderr_line(self, containing: str, timeout: float = 30.0) -> str:
        assert self.process.stderr is not None
        while True:
            line = await asyncio.wait_for(self.process.stderr.readline(), timeout)
            if not line:
                raise AssertionError(f"node exited before logging {containing!r}")
            text = line.decode()
            self.logged.append(text)
            if containing in text:
                return text

    async def stop(self, timeout: float = 20.0) -> tuple[int, list[dict[str, object]], str]:
        """SIGTERM; (exit code, remaining events, remaining stderr)."""
        self.process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(self.process.communicate(), timeout)
        rest = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        assert self.process.returncode is not None
        return self.process.returncode, rest, err.decode()


async def start(url: str, tmp: Path, identity: AgentIdentity, mesh: str, *extra: str) -> Node:
    key = tmp / f"{identity.did[-8:]}.id"
    save_identity(identity, key, PASSPHRASE)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentmesh",
        "node",
        "run",
        "--identity",
        str(key),
        "--passphrase-env",
        "NODE_PASS",
        "--nats",
        url,
        "--mesh",
        mesh,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PASS": PASSPHRASE},
    )
    return Node(process)


async def test_sigterm_while_sending_prints_the_stats_and_exits_0(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    responder, sender = AgentIdentity.generate(), AgentIdentity.generate()
    mesh = f"sigterm{os.getpid()}"
    answering = await start(nats_server.url, tmp_path, responder, mesh)
    talking: Node | None = None
    try:
        await answering.next_event("ready")
        talking = await start(
            nats_server.url,
            tmp_path,
            sender,
            mesh,
            "--peer",
            responder.did,
            "--requests",
            str(REQUESTS),
        )
        handshake = await talking.next_event("handshake")
        assert handshake["ok"] is True, talking.events
        await asyncio.sleep(1.0)  # in the middle of the requests
        code, rest, stderr = await talking.stop()
        names = [event["event"] for event in rest]
        assert code == 0, stderr
        assert "stats" in names, (names, stderr)
        assert names[-1] == "left"
        done = next(event for event in rest if event["event"] == "requests_done")
        assert done["failures"] == 0
        stats = next(event for event in rest if event["event"] == "stats")
        sent = stats["sent"]
        assert isinstance(sent, int)
        assert 0 < sent < REQUESTS  # it was sending, and it stopped
        assert "Traceback" not in stderr
        code, rest, stderr = await answering.stop()
        assert code == 0, stderr
        assert "stats" in [event["event"] for event in rest]
    finally:
        for node in (talking, answering):
            if node is not None and node.process.returncode is None:
                node.process.kill()
                await node.process.wait()


async def test_a_server_restart_is_logged_as_one_disconnect_and_one_reconnect_line(
    tmp_path: Path,
) -> None:
    server = start_or_fail(NatsServerProcess())
    node: Node | None = None
    try:
        node = await start(server.url, tmp_path, AgentIdentity.generate(), "restart")
        await node.next_event("ready")
        server.restart()
        disconnected = await node.stderr_line("disconnected")
        reconnected = await node.stderr_line("reconnected")
        assert disconnected.startswith("agentmesh: warning: transport ")
        assert "reconnecting" in disconnected
        assert reconnected.startswith("agentmesh: transport ")
        assert f"127.0.0.1:{server.port}" in reconnected
        code, rest, stderr = await node.stop()
        assert code == 0, stderr
        names = [event["event"] for event in rest]
        assert "stats" in names
        assert names[-1] == "left"
        assert "Traceback" not in stderr
        assert node.logged == [disconnected, reconnected]  # one line each, nothing else
    finally:
        if node is not None and node.process.returncode is None:
            node.process.kill()
            await node.process.wait()
        server.close()
