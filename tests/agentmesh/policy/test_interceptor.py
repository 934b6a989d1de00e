"""The policy interceptor inside real nodes, on the in-memory transport and on nats-server."""

from __future__ import annotations

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.errors import InterceptorDenied, RemoteError
from agentmesh.node.interceptors import InboundMessage, Stage
from agentmesh.policy import (
    CompiledPolicy,
    Governor,
    PolicyEngine,
    PolicyInterceptor,
    RingEnforcer,
    StaticRings,
)
from tests.agentmesh.node.conftest import NodeMaker

POLICY = {
    "version": 1,
    "name": "mesh",
    "rules": [
        {
            "id": "echo-in",
            "effect": "allow",
            "match": {"actions": ["echo", "pay"], "direction": "inbound"},
        },
        {
            "id": "out",
            "effect": "allow",
            "match": {"actions": ["echo", "pay", "secret"], "direction": "outbound"},
        },
        {
            "id": "no-secrets-out",
            "effect": "deny",
            "match": {"actions": ["secret"], "direction": "outbound"},
        },
    ],
}


async def echo(message: InboundMessage) -> bytes:
    return message.body


async def test_inbound_outbound_and_demotion_on_the_next_message(make_node: NodeMaker) -> None:
    alice, bob = await make_node(), await make_node()
    rings = StaticRings({alice.did: 2})
    governor = Governor(
        PolicyEngine(CompiledPolicy.from_data(POLICY)),
        rings=RingEnforcer([rings], {1: ["*"], 2: ["echo", "pay"], 3: ["echo"]}),
    )
    bob.add_interceptor(PolicyInterceptor(governor), stage=Stage.POLICY)
    alice.add_interceptor(PolicyInterceptor(governor), stage=Stage.POLICY)
    bob.handle("echo", echo)
    bob.handle("pay", echo)
    bob.handle("other", echo)
    assert (await alice.request(bob.did, "pay", b"1")).body == b"1"
    rings.set(alice.did, 3)  # demoted: the very next message loses "pay"
    with pytest.raises(RemoteError) as denied:
        await alice.request(bob.did, "pay", b"2")
    assert denied.value.remote_code == "ring_denied"
    assert (await alice.request(bob.did, "echo", b"3")).body == b"3"  # replies pass
    with pytest.raises(InterceptorDenied) as refused:
        await alice.request(bob.did, "secret", b"4")
    assert refused.value.denial_code == "policy_denied"
    with pytest.raises(InterceptorDenied):
        await alice.request(bob.did, "unlisted", b"5")  # default deny, outbound
    assert isinstance(bob.audit, MemoryAuditSink)
    rejected = bob.audit.of_kind("rejected")
    assert [e.code for e in rejected] == ["ring_denied"]
    assert "ring=3" in rejected[0].detail
    assert "rule=ring-3" in rejected[0].detail


async def test_a_broken_policy_source_fails_closed(make_node: NodeMaker) -> None:
    alice, bob = await make_node(), await make_node()

    class Broken:
        def ring(self, did: str) -> int:
            raise RuntimeError("trust store down")

    governor = Governor(
        PolicyEngine(CompiledPolicy.from_data(POLICY)), rings=RingEnforcer([Broken()], {2: ["*"]})
    )
    bob.add_interceptor(PolicyInterceptor(governor), stage=Stage.POLICY)
    bob.handle("echo", echo)
    with pytest.raises(RemoteError) as denied:
        await alice.request(bob.did, "echo", b"x")
    assert denied.value.remote_code == "interceptor_error"
