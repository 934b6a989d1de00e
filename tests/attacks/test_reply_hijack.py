"""Reply and handshake hijack: junk on the reply subject neither breaks nor repeats work.

An attacker in a separate process (an open server lets anyone subscribe to every
agent's subjects) answers each request and handshake first, with random bytes, a
fake "no responders", and unsigned handshake ``refused`` / ``ok`` replies. Every
request still gets the genuine peer's reply, the peer runs each request exactly
once, every handshake completes, and the junk is rejected, counted and audited.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.transport.nats import NatsTransport
from iatp.identity import AgentIdentity
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats


async def test_junk_replies_from_another_process_break_nothing(
    nats_server: NatsServerProcess, uid: str
) -> None:
    hijacker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.attacks.hijacker",
        nats_server.url,
        uid,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert hijacker.stdout is not None
        assert (await asyncio.wait_for(hijacker.stdout.readline(), 20)).strip() == b"ready"
        executed: list[bytes] = []

        async def pay(message: InboundMessage) -> bytes:
            executed.append(message.body)
            return b"paid " + message.body

        async with (
            MeshNode(
                AgentIdentity.generate(),
                NatsTransport(nats_server.url, name="alice"),
                config=NodeConfig(mesh=uid),
            ) as alice,
            MeshNode(
                AgentIdentity.generate(),
                NatsTransport(nats_server.url, name="bob"),
                config=NodeConfig(mesh=uid),
            ) as bob,
        ):
            bob.handle("pay", pay)
            for n in range(20):
                reply = await alice.request(bob.did, "pay", b"%d EUR" % n, timeout=5)
                assert reply.body == b"paid %d EUR" % n
            for _ in range(5):
                await alice.handshake(bob.did, timeout=5)
            for n in range(5):
                via = await alice.request(bob.did, "pay", b"s%d" % n, timeout=5, via_session=True)
                assert via.body == b"paid s%d" % n
            assert len(executed) == 25  # each request ran once: nobody had to retry
            assert alice.counters.handshakes == 5
            # The junk that arrived before the genuine reply was refused and audited
            # (junk arriving after it finds nothing waiting and is dropped).
            junk = sum(n for code, n in alice.counters.rejected.items() if code != "replayed")
            assert junk >= 1
            assert len(alice.audit.codes("rejected")) >= 1
            assert "handshake_junk_reply" in alice.audit.codes("handshake")
        hijacker.terminate()
        out, _ = await asyncio.wait_for(hijacker.communicate(), 10)
        sent = json.loads(out.decode().strip().splitlines()[-1])
        assert sent["requests"] >= 25
        assert sent["handshakes"] >= 10
    finally:
        if hijacker.returncode is None:
            hijacker.kill()
            await hijacker.wait()
