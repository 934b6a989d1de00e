"""Three agent processes and an attacker process over a real nats-server.

Each agent is `agentmesh node run` in its own process: it joins, handshakes with
the two others, and exchanges signed echo requests while an attacker process
(raw nats-py) injects replayed, tampered, forged, misaddressed and garbage
frames. Every attack must be rejected, counted and audited by its target, and
every legitimate request must still get its reply.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from agentmesh.audit import read_jsonl_audit
from iatp.identity import AgentIdentity
from iatp.keystore import save_identity
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

PASSPHRASE = "correct horse battery staple"
MESH = "xproc"


class AgentProcess:
    def __init__(self, process: asyncio.subprocess.Process, did: str, audit: Path) -> None:
        self.process = process
        self.did = did
        self.audit = audit
        self.events: list[dict[str, object]] = []

    async def next_event(self, name: str, timeout: float = 30.0) -> dict[str, object]:
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not line:
                raise AssertionError(f"agent exited before {name!r}: {self.events}")
            event = json.loads(line)
            self.events.append(event)
            if event["event"] == name:
                return event


async def start_agent(
    url: str,
    tmp: Path,
    identity: AgentIdentity,
    peers: list[str],
    requests: int,
    *extra: str,
    mesh: str = MESH,
) -> AgentProcess:
    key_file = tmp / f"{identity.did[-8:]}.id"
    save_identity(identity, key_file, PASSPHRASE)
    audit = tmp / f"{identity.did[-8:]}.audit.jsonl"
    args = [
        sys.executable,
        "-m",
        "agentmesh",
        "node",
        "run",
        "--identity",
        str(key_file),
        "--passphrase-env",
        "AGENT_PASS",
        "--nats",
        url,
        "--mesh",
        mesh,
        "--requests",
        str(requests),
        "--interval",
        "0.05",
        "--audit-log",
        str(audit),
    ]
    for peer in peers:
        args += ["--peer", peer]
    args += extra
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "AGENT_PASS": PASSPHRASE},
    )
    return AgentProcess(process, identity.did, audit)


async def test_three_agents_and_an_attacker(tmp_path: Path) -> None:
    identities = [AgentIdentity.generate() for _ in range(3)]
    dids = [i.did for i in identities]
    agents: list[AgentProcess] = []
    with NatsServerProcess() as server:
        try:
            for identity in identities:
                peers = [d for d in dids if d != identity.did]
                agents.append(await start_agent(server.url, tmp_path, identity, peers, 40))
            for agent in agents:
                ready = await agent.next_event("ready")
                assert ready["did"] == agent.did

            attacker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.agentmesh.attacker",
                server.url,
                MESH,
                *dids,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await asyncio.wait_for(attacker.communicate(), 30)
            assert attacker.returncode == 0
            report = json.loads(out)

            for agent in agents:
                done = await agent.next_event("requests_done", timeout=60)
                failed = [e for e in agent.events if e["event"] == "request_failed"]
                assert done["failures"] == 0, failed
                handshakes = [e for e in agent.events if e["event"] == "handshake"]
                assert [h["ok"] for h in handshakes] == [True, True]
            for agent in agents:
                agent.process.send_signal(signal.SIGTERM)
            stats = {agent.did: await agent.next_event("stats") for agent in agents}
            for agent in agents:
                await agent.next_event("left")
                assert await asyncio.wait_for(agent.process.wait(), 10) == 0
        finally:
            for agent in agents:
                if agent.process.returncode is None:
                    agent.process.kill()
                    await agent.process.wait()

    expected: dict[str, dict[str, int]] = {}
    for code, targets in report["sent"].items():
        for target in targets:
            expected.setdefault(target, {}).setdefault(code, 0)
            expected[target][code] += 1
    for target, codes in expected.items():
        rejected = stats[target]["rejected"]
        audited = [
            e.code
            for e in read_jsonl_audit(next(a.audit for a in agents if a.did == target))
            if e.kind == "rejected"
        ]
        for code, count in codes.items():
            assert rejected.get(code, 0) == count, (target, code, rejected)
            assert audited.count(code) == count, (target, code, audited)
    # Legitimate traffic: every agent answered 40 requests from each of its two peers.
    for agent in agents:
        assert stats[agent.did]["handled"] == 80
