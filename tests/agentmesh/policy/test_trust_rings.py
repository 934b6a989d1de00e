"""The real trust engine as the ring source: a drift demotion costs a capability at once."""

from __future__ import annotations

import itertools

import pytest

from agentmesh.errors import RemoteError
from agentmesh.node.interceptors import InboundMessage, Stage
from agentmesh.policy import CompiledPolicy, Governor, PolicyEngine, PolicyInterceptor, RingEnforcer
from iatp.clock import ManualClock
from iatp.identity import AgentIdentity
from tests.agentmesh.node.conftest import NodeMaker
from trust import Outcome, Receipt, TrustConfig, TrustEngine

_ids = itertools.count()
POLICY = {
    "version": 1,
    "name": "t",
    "rules": [{"id": "in", "effect": "allow", "match": {"actions": ["*"], "direction": "inbound"}}],
}


def receipt(observer: str, subject: str, outcome: Outcome, at_ms: int) -> Receipt:
    return Receipt.create(
        observer=observer,
        subject=subject,
        interaction_id=f"x{next(_ids)}",
        outcome=outcome,
        at_ms=at_ms,
    )


async def echo(message: InboundMessage) -> bytes:
    return message.body


async def test_drift_demotion_applies_to_the_next_message(make_node: NodeMaker) -> None:
    clock = ManualClock(1_700_000_000_000)
    anchor = AgentIdentity.generate().did
    caller, server = await make_node(), await make_node()
    engine = TrustEngine(pre_trusted=[anchor], clock=clock, config=TrustConfig(promotion_rounds=1))
    for _ in range(100):
        clock.advance(1000)
        engine.record(receipt(anchor, caller.did, Outcome.SUCCESS, clock.now_ms()))
    engine.recompute()
    assert engine.ring(caller.did) == 2
    rings = RingEnforcer([engine], {1: ["*"], 2: ["pay", "echo"], 3: ["echo"]})
    governor = Governor(PolicyEngine(CompiledPolicy.from_data(POLICY)), rings=rings)
    server.add_interceptor(PolicyInterceptor(governor), stage=Stage.POLICY)
    server.handle("pay", echo)
    server.handle("echo", echo)
    assert (await caller.request(server.did, "pay", b"1")).body == b"1"
    while engine.ring(caller.did) != 3:  # the agent starts failing: drift demotes it
        clock.advance(1000)
        engine.record(receipt(anchor, caller.did, Outcome.FAILURE, clock.now_ms()))
    with pytest.raises(RemoteError) as denied:
        await caller.request(server.did, "pay", b"2")
    assert denied.value.remote_code == "ring_denied"
    assert (await caller.request(server.did, "echo", b"3")).body == b"3"
