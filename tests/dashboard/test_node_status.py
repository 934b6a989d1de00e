"""``agentmesh node run --status-interval``: a node process reports to the dashboard."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from agentmesh.dashboard.monitor import MeshMonitor
from agentmesh.errors import AgentMeshError
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.node.runner import ECHO_TYPE
from agentmesh.transport.nats import NatsTransport
from iatp.identity import AgentIdentity
from tests.agentmesh.policy.processes import start_node
from tests.dashboard.conftest import wait_until
from tests.natsserver import NatsServerProcess

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]


async def test_a_node_process_reports_its_refusals(
    nats_server: NatsServerProcess, uid: str, tmp_path: Path
) -> None:
    identity = AgentIdentity.generate()
    process = await start_node(
        nats_server.url, uid, tmp_path, identity, "--status-interval", "0.3", "--name", "worker"
    )
    try:
        started = await process.event("status")
        assert started["topic"] == "ops.status"
        await process.event("ready")
        monitor = MeshMonitor(
            NatsTransport(nats_server.url, name="dashboard"),
            mesh=uid,
            refresh_interval=0.1,
        )
        stranger = MeshNode(
            AgentIdentity.generate(),
            NatsTransport(nats_server.url, name="stranger"),
            config=NodeConfig(mesh=uid),
        )
        async with monitor, stranger:
            # No card in the directory: the node refuses it (admission), and reports it.
            with contextlib.suppress(AgentMeshError):
                await stranger.request(identity.did, ECHO_TYPE, b"hi", timeout=3.0)

            def reported() -> bool:
                received = monitor.reports.get(identity.did)
                return received is not None and any(
                    r.peer == stranger.did for r in received.report.refusals
                )

            await wait_until(reported, "the node's report of its refusal", timeout=15.0)
            report = monitor.reports[identity.did].report
            assert report.name == "worker"
            refusal = next(r for r in report.refusals if r.peer == stranger.did)
            assert refusal.code == "unknown_agent"
            assert report.counters["rejected"] == {"unknown_agent": 1}
            row = next(a for a in monitor.snapshot()["agents"] if a["did"] == identity.did)
            assert row["card"] is True
            assert row["name"] == "worker"
    finally:
        assert await process.stop() == 0
