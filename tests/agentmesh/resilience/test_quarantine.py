"""``action: quarantine``: an authority's node quarantines a cascade's root over the signed path.

B is a mesh authority and calls C; C's handler fails; B's callers A1 and A2 see
their requests fail because of C. B's cascade detector raises the event and
calls the quarantine callback, wired to B's kill switch: a signed order is
broadcast and stored, and every member (C's own node included) stops routing to
and from C. Memory and a real nats-server.
"""

from __future__ import annotations

import random

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.directory import RevocationList
from agentmesh.errors import InterceptorDenied, RemoteError
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage, Stage
from agentmesh.node.node import MeshNode
from agentmesh.policy.killswitch import KillSwitch, QuarantineInterceptor
from agentmesh.resilience import (
    BreakerConfig,
    CascadeConfig,
    ResilienceDocument,
    install_resilience,
)
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities
from tests.agentmesh.transport.waiting import eventually
from tests.conftest import TransportFactory

AUTHORITY = AgentIdentity.from_seed(b"R" * 32)


class Member:
    def __init__(self, node: MeshNode, revocations: RevocationList, switch: KillSwitch) -> None:
        self.node, self.revocations, self.switch = node, revocations, switch

    async def aclose(self) -> None:
        await self.switch.aclose()
        await self.node.aclose()
        await self.revocations.aclose()


async def member(
    factory: TransportFactory, uid: str, identity: AgentIdentity | None = None
) -> Member:
    identity = identity or AgentIdentity.generate()
    audit = MemoryAuditSink()
    transport = await factory.new("member")
    revocations = RevocationList(
        transport,
        mesh=uid,
        authorities=RevocationAuthorities(mesh=frozenset({AUTHORITY.did})),
        audit=audit,
        node=identity.did,
    )
    await revocations.start()
    switch = KillSwitch(transport, revocations, mesh=uid, node=identity.did, audit=audit)
    await switch.start()
    node = MeshNode(identity, transport, config=NodeConfig(mesh=uid), audit=audit)
    node.add_interceptor(QuarantineInterceptor(switch, identity.did), stage=Stage.REVOCATION)
    return Member(node, revocations, switch)


async def broken(message: InboundMessage) -> bytes:
    raise ValueError("C is broken")


async def test_authority_quarantines_the_root_of_a_cascade(
    transport_factory: TransportFactory, uid: str
) -> None:
    a1, a2 = await member(transport_factory, uid), await member(transport_factory, uid)
    b = await member(transport_factory, uid, AUTHORITY)
    c = await member(transport_factory, uid)
    members = [a1, a2, b, c]
    try:
        c.node.handle("compute", broken)

        async def work(message: InboundMessage) -> bytes:
            return (await b.node.request(c.node.did, "compute", message.body, timeout=1.0)).body

        b.node.handle("work", work)

        async def quarantine(did: str, reason: str) -> None:
            await b.switch.quarantine(AUTHORITY, did, reason)

        on_b = install_resilience(
            b.node,
            ResilienceDocument(
                breakers=BreakerConfig(failure_threshold=5),
                cascade=CascadeConfig(window_ms=10_000, min_callers=2, action="quarantine"),
            ),
            quarantine=quarantine,
            rng=random.Random(5),
        )
        assert on_b.cascades is not None
        for m in members:
            await m.node.start()

        with pytest.raises(RemoteError):
            await a1.node.request(b.node.did, "work", b"1")
        assert not c.switch.is_blocked(c.node.did)
        with pytest.raises(RemoteError):
            await a2.node.request(b.node.did, "work", b"2")
        await on_b.cascades.drain()

        # The signed order reached every member, C's own node included.
        await eventually(lambda: all(m.switch.is_blocked(c.node.did) for m in members))
        assert isinstance(b.node.audit, MemoryAuditSink)
        assert b.node.audit.codes("cascade") == ["detected", "quarantine_requested"]
        assert [e.peer for e in b.node.audit.of_kind("quarantine")] == [c.node.did]
        order = c.revocations.entries(c.node.did)[-1]
        assert order.issuer == AUTHORITY.did
        assert order.reason.startswith("cascading failure")
        with pytest.raises(InterceptorDenied):  # nobody routes to C any more
            await b.node.request(c.node.did, "compute", b"3")
        with pytest.raises(InterceptorDenied):  # and C's own node sends nothing
            await c.node.request(a1.node.did, "anything", b"4")
    finally:
        for m in members:
            await m.aclose()
