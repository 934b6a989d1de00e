"""`agentmesh node run --trust` across processes: receipts flow, every node folds the same set."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from iatp.identity import AgentIdentity
from tests.agentmesh.node.test_cross_process import AgentProcess, start_agent
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

REQUESTS = 15


async def test_three_trust_nodes_fold_the_same_receipts(tmp_path: Path) -> None:
    identities = [AgentIdentity.generate() for _ in range(3)]
    dids = [i.did for i in identities]
    anchor = dids[0]
    agents: list[AgentProcess] = []
    with NatsServerProcess() as server:
        try:
            for identity in identities:
                peers = [d for d in dids if d != identity.did]
                agents.append(
                    await start_agent(
                        server.url,
                        tmp_path,
                        identity,
                        peers,
                        REQUESTS,
                        "--trust",
                        "--pre-trusted",
                        anchor,
                        mesh="trustrun",
                    )
                )
            for agent in agents:
                assert (await agent.next_event("trust"))["pre_trusted"] == 1
            for agent in agents:
                done = await agent.next_event("requests_done", timeout=60)
                assert done["failures"] == 0, agent.events
            await asyncio.sleep(1.0)  # let the last receipts reach every node
            for agent in agents:
                agent.process.send_signal(signal.SIGTERM)
            views = [await agent.next_event("trust_view") for agent in agents]
            for agent in agents:
                assert await asyncio.wait_for(agent.process.wait(), 30) == 0

            top = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agentmesh",
                "trust",
                "top",
                "--nats",
                server.url,
                "--mesh",
                "trustrun",
                "--pre-trusted",
                anchor,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "COLUMNS": "250"},
            )
            out, _ = await asyncio.wait_for(top.communicate(), 60)
        finally:
            for agent in agents:
                if agent.process.returncode is None:
                    agent.process.kill()
                    await agent.process.wait()
    # Each of the 6 directed pairs: REQUESTS handled requests, one signed receipt each.
    expected = 6 * REQUESTS
    assert [view["folded"] for view in views] == [expected] * 3
    for view, me in zip(views, dids, strict=True):
        peers = view["peers"]
        assert isinstance(peers, dict)
        assert set(peers) == set(dids) - {me}
        for entry in peers.values():
            assert 0.0 < entry["score"] <= 1.0
            assert entry["ring"] in (1, 2, 3)
    # Same evidence, same scores on every node (up to decay between their report times).
    for did in dids:
        seen = [view["peers"][did]["score"] for view in views if did in view["peers"]]
        assert seen == pytest.approx([seen[0]] * len(seen), rel=1e-6)
    assert top.returncode == 0
    text = out.decode()
    assert all(did[-6:] in text for did in dids), text
