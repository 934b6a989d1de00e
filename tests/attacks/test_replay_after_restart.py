"""Replay after restart: a captured request replayed to a node killed and restarted runs once.

On an open development server an eavesdropper records a signed request to B.
Replayed at once, B's replay cache refuses it. Then B is killed with ``kill -9``
and started again with the same identity: its in-memory cache is empty, and
without the restart fence the same frame would run a second time ("pay 5 EUR
once" paid twice). With the fence B refuses it as ``issued_before_start``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.transport.nats import NatsTransport
from iatp.identity import AgentIdentity
from tests.agentmesh.policy.processes import start_node
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats


async def test_captured_request_replayed_after_kill_9_does_not_run_again(
    nats_server: NatsServerProcess, tmp_path: Path, uid: str
) -> None:
    payer, requester = AgentIdentity.generate(), AgentIdentity.generate()
    options = ("--admit", requester.did)
    first = await start_node(nats_server.url, uid, tmp_path, payer, *options)
    second = None
    spy = await nats.connect(nats_server.url)
    captured: list[bytes] = []
    try:
        await first.event("ready")
        inbox = first.named("ready")[0]["inbox"]
        assert isinstance(inbox, str)

        async def record(msg: nats.aio.msg.Msg) -> None:
            captured.append(msg.data)

        await spy.subscribe(inbox, cb=record)
        await spy.flush()
        async with MeshNode(
            requester, NatsTransport(nats_server.url, name="requester"), config=NodeConfig(mesh=uid)
        ) as node:
            reply = await node.request(payer.did, "mesh.echo", b"pay 5 EUR once")
            assert reply.body == b"pay 5 EUR once"
        await spy.flush()
        assert len(captured) == 1
        frame = captured[0]

        # Replayed to the same run: the replay cache refuses it (no reply to junk).
        with pytest.raises(nats.errors.TimeoutError):
            await spy.request(inbox, frame, timeout=0.5)

        await first.kill()  # kill -9: nothing is flushed, the cache is gone
        second = await start_node(nats_server.url, uid, tmp_path, payer, *options)
        await second.event("ready")
        with pytest.raises(nats.errors.TimeoutError):
            await spy.request(inbox, frame, timeout=0.5)
        await asyncio.sleep(0.2)
        assert await second.stop() == 0
        stats = second.named("stats")[0]
        assert stats["accepted"] == 0, stats
        assert stats["rejected"] == {"issued_before_start": 1}, stats
    finally:
        await spy.close()
        for node in (first, second):
            if node is not None and node.process.returncode is None:
                await node.kill()
