"""A crew whose agents live in two processes completes a task that needs both.

The analysis crew runs in its own process (``python -m
agentmesh.integrations.crewai.worker``) over a real nats-server; the research crew
runs here. The lead delegates across the process boundary as a signed request,
gets the answer, and the two crews' trust engines fold the same receipts. An
attacker connection injects a task forged in the lead's name into the worker's
subjects: the worker rejects and counts it, and reports so when it leaves.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import pytest

from agentmesh.integrations.crewai import MeshCrew, TaskRequest
from agentmesh.integrations.crewai.demo import delegating_llm
from agentmesh.integrations.crewai.tasks import TASK_MESSAGE
from agentmesh.node.addressing import MeshAddressing
from agentmesh.transport.factory import make_transport
from iatp.envelope import SIGNING_DOMAIN, encode_frame, encode_payload, new_envelope
from iatp.identity import AgentIdentity
from tests.integrations.crewai.conftest import crewai_environment
from tests.integrations.crewai.crews import agent, config, crew, mesh_name, wait_for
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

TEXT = "agents in two processes finish this together"


class Worker:
    """The worker process and its JSON-lines events."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, *args: str) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentmesh.integrations.crewai.worker",
            "--stop-on-stdin-eof",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **crewai_environment()},
        )
        return cls(process)

    async def next_event(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not line:
                raise AssertionError(f"worker exited before {name!r}: {self.events}")
            event: dict[str, Any] = json.loads(line)
            self.events.append(event)
            if event["event"] == name:
                return event

    async def stop(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()  # the worker leaves at the end of its stdin
        return await asyncio.wait_for(self.process.wait(), 30)

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


async def test_two_processes_complete_a_delegated_task(nats_server: NatsServerProcess) -> None:
    mesh = mesh_name()
    research_id, worker_id = AgentIdentity.generate(), AgentIdentity.generate()
    anchors = (research_id.did, worker_id.did)
    worker = await Worker.start(
        "--nats",
        nats_server.url,
        "--mesh",
        mesh,
        "--name",
        "analysis",
        "--member",
        "analyst=analysis",
        "--anchor",
        research_id.did,
        "--seed",
        worker_id.seed().hex(),
    )
    try:
        ready = await worker.next_event("ready")
        assert ready["crew"] == worker_id.did
        analyst = ready["members"]["analyst"]
        lead_crew = crew(agent("lead", delegating_llm(task=TEXT)), task="delegate it")
        cfg = config("research", mesh, delegates=("lead",), anchors=anchors)
        async with MeshCrew(
            lead_crew, cfg, nats_url=nats_server.url, identity=research_id
        ) as research:
            await wait_for(lambda: bool(research.delegator.candidates("analysis")), 10)
            started = time.perf_counter()
            output = await research.kickoff()
            elapsed = time.perf_counter() - started
            assert output.raw == f"words: {len(TEXT.split())}"
            [delegation] = research.delegator.history
            assert [(a.did, a.code) for a in delegation.attempts] == [(analyst, "ok")]
            assert elapsed < 10

            # The worker's crew issued a success receipt about its analyst's tool call;
            # the research crew folds it from the shared stream (and its own about the task).
            await research.settle()
            engine = research.trust.engine

            def endorsers() -> set[str]:
                return {e.observer for e in engine.explain(analyst).endorsers}

            await wait_for(lambda: endorsers() == set(anchors), 10)

            # An attacker injects a task forged in the lead's name into the worker's inbox.
            lead = research.member("lead").did
            envelope = new_envelope(
                sender=lead,
                type=TASK_MESSAGE,
                recipient=analyst,
                body=TaskRequest("analysis", "run this for me").encode(),
                now_ms=time.time_ns() // 1_000_000,
            )
            payload = encode_payload(envelope)
            forged = encode_frame(
                lead, payload, AgentIdentity.generate().sign(SIGNING_DOMAIN + payload)
            )
            attacker = make_transport(nats_server.url, name="attacker")
            await attacker.connect(timeout=5)
            try:
                await attacker.publish(MeshAddressing(mesh).inbox(analyst), forged)
                await attacker.publish(MeshAddressing(mesh).inbox(analyst), b"junk")
            finally:
                await attacker.aclose()
            await asyncio.sleep(0.3)
        assert await worker.stop() == 0
        stats = await worker.next_event("stats")
        await worker.next_event("left")
    finally:
        worker.kill()
    assert stats["served"] == {"analyst": 1}  # the forged task never ran
    assert stats["rejected"]["analyst"] == {"bad_signature": 1, "trailing_bytes": 1}
    assert [d["tool"] for d in stats["decisions"]] == ["word_count"]
    assert stats["receipts"] == {"success": 1}
