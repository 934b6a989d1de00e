"""Trust-driven demotion through the CLI node: ``agentmesh node run --trust --policy``.

B is a node process whose policy lets the trust engine set rings (``rings.default:
1``): ring 2 may send ``mesh.*``, ring 3 nothing. B has no pre-trusted anchor
(global trust is anchored uniformly). Agent A (a MeshNode in this process) starts
unknown, so in ring 3. A witness W (another MeshNode here, with a trust
interceptor) serves A's requests and publishes signed success receipts about A
on the mesh's receipt stream; B folds them and promotes A to ring 2, where B
serves A's ``mesh.echo``. Then A misbehaves: B's policy refuses
``mesh.forbidden``, each refusal is a signed ``policy_violation`` receipt from B,
and B's trust engine demotes A (drift, or its score at the next recompute): the
``mesh.echo`` that B served before is refused with ``ring_denied``.

Before the fix, ``MeshTrust`` replaced the engine that ``node run --trust`` had
given the ring enforcer whenever it was still empty (an engine without
pre-trusted agents has ``len() == 0``, so it is falsy): the enforcer's engine
never saw a receipt, A was never promoted, and so could never be demoted either.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentmesh.audit import read_jsonl_audit
from agentmesh.errors import RemoteError
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage, Stage
from agentmesh.node.node import MeshNode
from agentmesh.transport.nats import NatsTransport
from agentmesh.trustnet.service import MeshTrust
from iatp.identity import AgentIdentity
from tests.agentmesh.node.test_cross_process import AgentProcess, start_agent
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

MESH = "demotion"
ECHO = "mesh.echo"  # what `node run` serves
POLICY = """\
version: 1
name: demotion
default: allow
rules:
  - id: no-forbidden
    effect: deny
    match: {actions: [mesh.forbidden]}
rings:
  capabilities:
    1: ["*"]
    2: ["mesh.*"]
    3: []
  default: 1   # no policy cap: the trust engine decides
"""


async def echo(message: InboundMessage) -> bytes:
    return message.body


@contextlib.asynccontextmanager
async def node_run(
    url: str, tmp: Path, b: AgentIdentity, *extra: str
) -> AsyncIterator[AgentProcess]:
    agent = await start_agent(url, tmp, b, [], 0, *extra, mesh=MESH)
    try:
        yield agent
        agent.process.send_signal(signal.SIGTERM)
        await agent.next_event("left")
        assert await asyncio.wait_for(agent.process.wait(), 15) == 0
    finally:
        if agent.process.returncode is None:
            agent.process.kill()
            await agent.process.wait()


async def refusal(node: MeshNode, peer: str, message_type: str, *, via_session: bool) -> str:
    """The code ``peer`` refuses the request with ("" when it was served)."""
    try:
        reply = await node.request(peer, message_type, b"x", via_session=via_session, timeout=5)
    except RemoteError as exc:
        return exc.remote_code
    assert reply.body == b"x"
    return ""


async def test_misbehaviour_demotes_an_agent_in_a_node_run_process(tmp_path: Path) -> None:
    a, b, w = (AgentIdentity.generate() for _ in range(3))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    config = NodeConfig(mesh=MESH)
    with NatsServerProcess() as server:
        async with contextlib.AsyncExitStack() as stack:
            process = await stack.enter_async_context(
                node_run(
                    server.url,
                    tmp_path,
                    b,
                    "--trust",  # no --pre-trusted: an engine that starts empty
                    "--policy",
                    str(policy),
                    "--admit",
                    a.did,
                )
            )
            witness_transport = NatsTransport(server.url, name="witness")
            await witness_transport.connect(timeout=5)
            stack.push_async_callback(witness_transport.aclose)
            witness = MeshNode(w, witness_transport, config=config)
            trust = await stack.enter_async_context(MeshTrust(witness_transport, w, mesh=MESH))
            witness.add_interceptor(trust.interceptor, stage=Stage.TRUST)
            witness.handle(ECHO, echo)
            await stack.enter_async_context(witness)
            agent = await stack.enter_async_context(
                MeshNode(a, NatsTransport(server.url, name="agent"), config=config)
            )
            assert (await process.next_event("trust"))["pre_trusted"] == 0
            await process.next_event("ready")

            # 1. A is served by the witness, whose signed receipts reach B's engine:
            #    credible evidence well above what ring 2 needs.
            for _ in range(25):
                assert await refusal(agent, w.did, ECHO, via_session=False) == ""
            await trust.interceptor.flush(timeout=5)

            # 2. B promotes A to ring 2 after two recomputes (2 s apart). Probe under a
            #    session: session traffic is never evidence, so probing adds none.
            await agent.handshake(b.did)
            for _ in range(60):
                if await refusal(agent, b.did, ECHO, via_session=True) != "ring_denied":
                    break
                await asyncio.sleep(0.25)
            assert await refusal(agent, b.did, ECHO, via_session=True) == "", "never promoted"
            for _ in range(20):  # served, signed: B's own evidence of good behaviour
                assert await refusal(agent, b.did, ECHO, via_session=False) == ""
            # B's reports count (credibility) once a recompute saw B agree with the rest.
            await asyncio.sleep(2.5)

            # 3. A misbehaves, in a burst, until B's ring enforcer demotes it (drift).
            codes: list[str] = []
            for _ in range(40):
                codes.append(await refusal(agent, b.did, "mesh.forbidden", via_session=False))
                if codes[-1] == "ring_denied":
                    break
            assert codes[0] == "policy_denied"
            assert set(codes) == {"policy_denied", "ring_denied"}
            assert await refusal(agent, b.did, ECHO, via_session=False) == "ring_denied"
            assert await refusal(agent, b.did, ECHO, via_session=True) == "ring_denied"

    refused = [e for e in read_jsonl_audit(process.audit) if e.kind == "rejected"]
    assert {e.code for e in refused if e.peer == a.did} == {"policy_denied", "ring_denied"}
