"""The kill switch on real nodes: broadcast + durable, signed, hooks, release; memory and NATS."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.directory import RevocationList
from agentmesh.errors import InterceptorDenied, RemoteError
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage, Stage
from agentmesh.node.node import MeshNode
from agentmesh.policy import QuarantineOrderError
from agentmesh.policy.killswitch import KillSwitch, QuarantineInterceptor
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities, RevocationEntry, RevocationKind
from tests.conftest import TransportFactory

AUTHORITY = AgentIdentity.from_seed(b"K" * 32)


async def echo(message: InboundMessage) -> bytes:
    return message.body


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


class Member:
    def __init__(self, node: MeshNode, revocations: RevocationList, switch: KillSwitch) -> None:
        self.node, self.revocations, self.switch = node, revocations, switch

    async def aclose(self) -> None:
        await self.switch.aclose()
        await self.node.aclose()
        await self.revocations.aclose()


async def member(factory: TransportFactory, uid: str) -> Member:
    identity = AgentIdentity.generate()
    audit = MemoryAuditSink()
    transport = await factory.new("m")
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
    node.handle("echo", echo)
    await node.start()
    return Member(node, revocations, switch)


async def test_quarantine_release_hooks_and_late_joiners(
    transport_factory: TransportFactory, uid: str
) -> None:
    members = [await member(transport_factory, uid) for _ in range(3)]
    late: Member | None = None
    try:
        ops, worker, rogue = members
        handed_off: list[tuple[str, RevocationKind]] = []

        async def hand_off(did: str, order: RevocationEntry) -> None:
            handed_off.append((did, order.kind))

        worker.switch.on_quarantine(hand_off)
        worker.switch.on_release(hand_off)
        assert (await rogue.node.request(worker.node.did, "echo", b"1")).body == b"1"

        await ops.switch.quarantine(AUTHORITY, rogue.node.did, "exfiltration suspected")
        await wait_for(lambda: all(m.switch.is_blocked(rogue.node.did) for m in members))
        with pytest.raises(InterceptorDenied) as own:
            await rogue.node.request(worker.node.did, "echo", b"2")  # its own node stops it
        assert own.value.denial_code == "quarantined"
        with pytest.raises(InterceptorDenied):
            await worker.node.request(rogue.node.did, "echo", b"3")  # nobody routes to it
        await wait_for(lambda: handed_off == [(rogue.node.did, RevocationKind.QUARANTINED)])

        late = await member(transport_factory, uid)  # joins after the order: the KV tells it
        assert late.switch.is_blocked(rogue.node.did)

        await ops.switch.release(AUTHORITY, rogue.node.did, "cleared by review")
        await wait_for(lambda: not any(m.switch.is_blocked(rogue.node.did) for m in members))
        await wait_for(lambda: late is not None and not late.switch.is_blocked(rogue.node.did))
        assert (await rogue.node.request(worker.node.did, "echo", b"4")).body == b"4"
        await wait_for(lambda: len(handed_off) == 2)
        assert handed_off[1] == (rogue.node.did, RevocationKind.RELEASED)
        audit = worker.node.audit
        assert isinstance(audit, MemoryAuditSink)
        assert [e.code for e in audit.of_kind("quarantine")] == ["quarantined", "released"]
    finally:
        for m in [*members, *([late] if late else [])]:
            await m.aclose()


async def test_forged_and_unauthorized_orders_are_refused(
    transport_factory: TransportFactory, uid: str
) -> None:
    members = [await member(transport_factory, uid) for _ in range(2)]
    try:
        a, b = members
        mallory = AgentIdentity.generate()
        with pytest.raises(QuarantineOrderError):
            await a.switch.quarantine(mallory, b.node.did, "i say so")
        with pytest.raises(QuarantineOrderError):
            await a.switch.release(b.node.identity, b.node.did, "self-release")
        order = a.switch._sign(AUTHORITY, b.node.did, RevocationKind.QUARANTINED, "x")
        forged = replace(order, reason="edited")
        await a.node.transport.publish(b.switch.subject, forged.encode())  # raw broadcast
        await a.node.transport.publish(b.switch.subject, b"\x93junk")
        await wait_for(lambda: sum(b.switch.rejected.values()) == 2)
        assert not b.switch.is_blocked(b.node.did)
        assert set(b.switch.rejected) == {"revocation_bad_signature", "revocation_invalid"}
        assert (await a.node.request(b.node.did, "echo", b"ok")).body == b"ok"
        # an agent may quarantine itself (e.g. key compromise), never release itself
        await b.switch.quarantine(b.node.identity, b.node.did, "self-report")
        await wait_for(lambda: a.switch.is_blocked(b.node.did))
        with pytest.raises((RemoteError, InterceptorDenied)):
            await a.node.request(b.node.did, "echo", b"no")
    finally:
        for m in members:
            await m.aclose()
