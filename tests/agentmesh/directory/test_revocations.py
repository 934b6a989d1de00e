"""RevocationList and RevocationInterceptor on both transports (memory and real NATS)."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.directory import (
    RevocationChange,
    RevocationInterceptor,
    RevocationList,
)
from agentmesh.errors import InterceptorDenied, RemoteError
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import Stage
from agentmesh.node.node import MeshNode
from iatp.identity import AgentIdentity
from registry.errors import RevocationSignatureInvalid, UnauthorizedRevocation
from registry.revocation import (
    RevocationAuthorities,
    RevocationEntry,
    RevocationKind,
    sign_revocation,
)
from tests.conftest import TransportFactory

AUTHORITY = AgentIdentity.from_seed(b"A" * 32)


def entry(
    issuer: AgentIdentity, subject: str, kind: RevocationKind, at: int = 1_000, seq: int = 1
) -> RevocationEntry:
    return sign_revocation(
        issuer, subject=subject, kind=kind, reason="test", issued_at_ms=at, sequence=seq
    )


async def wait_for(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def authorities() -> RevocationAuthorities:
    return RevocationAuthorities(mesh=frozenset({AUTHORITY.did}))


async def test_revocation_reaches_every_list_and_is_final(
    transport_factory: TransportFactory, uid: str
) -> None:
    lists = [
        RevocationList(await transport_factory.new(f"n{i}"), mesh=uid, authorities=authorities())
        for i in range(3)
    ]
    changes: list[RevocationChange] = []
    for rl in lists:
        await rl.start()
    lists[2].add_listener(changes.append)
    victim = AgentIdentity.generate().did
    try:
        await lists[0].issue(entry(AUTHORITY, victim, RevocationKind.REVOKED))
        assert lists[0].is_blocked(victim)
        await wait_for(lambda: all(rl.status(victim) is RevocationKind.REVOKED for rl in lists))
        assert [c.status for c in changes] == [RevocationKind.REVOKED]
        # A later release does not lift a revocation.
        await lists[1].issue(entry(AUTHORITY, victim, RevocationKind.RELEASED, at=2_000))
        await wait_for(lambda: len(lists[2].entries(victim)) == 2)
        assert all(rl.status(victim) is RevocationKind.REVOKED for rl in lists)
    finally:
        for rl in lists:
            await rl.aclose()


async def test_quarantine_then_release_in_any_order(
    transport_factory: TransportFactory, uid: str
) -> None:
    rl = RevocationList(await transport_factory.new(), mesh=uid, authorities=authorities())
    await rl.start()
    agent = AgentIdentity.generate().did
    try:
        await rl.issue(entry(AUTHORITY, agent, RevocationKind.RELEASED, at=3_000))
        assert not rl.is_blocked(agent)
        await rl.issue(entry(AUTHORITY, agent, RevocationKind.QUARANTINED, at=2_000))
        assert rl.status(agent) is RevocationKind.RELEASED  # the release is newer
        await rl.issue(entry(AUTHORITY, agent, RevocationKind.QUARANTINED, at=4_000))
        assert rl.status(agent) is RevocationKind.QUARANTINED
    finally:
        await rl.aclose()


async def test_a_restarted_list_rebuilds_from_the_store(
    transport_factory: TransportFactory, uid: str
) -> None:
    agent = AgentIdentity.generate()
    first = RevocationList(await transport_factory.new(), mesh=uid, authorities=authorities())
    await first.start()
    await first.issue(entry(agent, agent.did, RevocationKind.REVOKED))  # self-revocation
    await first.aclose()
    second = RevocationList(await transport_factory.new(), mesh=uid, authorities=authorities())
    await second.start()
    try:
        assert second.status(agent.did) is RevocationKind.REVOKED
    finally:
        await second.aclose()


async def test_unauthorized_and_forged_entries_are_refused_and_audited(
    transport_factory: TransportFactory, uid: str
) -> None:
    transport = await transport_factory.new()
    rl = RevocationList(transport, mesh=uid, authorities=authorities())
    await rl.start()
    agent, stranger = AgentIdentity.generate(), AgentIdentity.generate()
    try:
        with pytest.raises(UnauthorizedRevocation):
            await rl.issue(entry(stranger, agent.did, RevocationKind.REVOKED))
        with pytest.raises(UnauthorizedRevocation):  # nobody lifts their own quarantine
            await rl.issue(entry(agent, agent.did, RevocationKind.RELEASED))
        good = entry(AUTHORITY, agent.did, RevocationKind.QUARANTINED)
        forged = RevocationEntry(
            good.subject, RevocationKind.REVOKED, good.issuer, good.reason, 1_000, 1, good.signature
        )
        with pytest.raises(RevocationSignatureInvalid):
            await rl.issue(forged)
        # Written straight into the store, behind the list's back: refused on read.
        kv = await transport.key_value(f"{uid}_registry_revocations")
        bad = entry(stranger, agent.did, RevocationKind.REVOKED)
        await kv.put(f"{stranger.did[8:]}.1", bad.encode())
        await kv.put(f"{agent.did[8:]}.junk", b"\x93garbage")
        await wait_for(lambda: sum(rl.rejected.values()) >= 5)
        assert not rl.is_blocked(agent.did)
        assert rl.rejected["revocation_unauthorized"] == 3
        assert rl.rejected["revocation_invalid"] == 1
        audited = [e.code for e in rl.audit if e.kind == "revocation_rejected"]
        assert sorted(audited) == sorted(rl.rejected.elements())
    finally:
        await rl.aclose()


async def test_interceptor_blocks_messages_and_handshakes(
    transport_factory: TransportFactory, uid: str
) -> None:
    alice, bob = AgentIdentity.generate(), AgentIdentity.generate()
    config = NodeConfig(mesh=uid)
    ta, tb = await transport_factory.new("a"), await transport_factory.new("b")
    rl_a = RevocationList(ta, mesh=uid, authorities=authorities())
    rl_b = RevocationList(tb, mesh=uid, authorities=authorities())
    await rl_a.start()
    await rl_b.start()
    try:
        async with MeshNode(alice, ta, config=config) as a, MeshNode(bob, tb, config=config) as b:
            a.add_interceptor(RevocationInterceptor(rl_a), stage=Stage.REVOCATION)
            b.add_interceptor(RevocationInterceptor(rl_b), stage=Stage.REVOCATION)

            async def echo(message: object) -> bytes:
                return b"ok"

            b.handle("echo", echo)  # type: ignore[arg-type]
            assert (await a.request(bob.did, "echo", b"x")).body == b"ok"
            await rl_a.issue(entry(AUTHORITY, alice.did, RevocationKind.QUARANTINED))
            await wait_for(lambda: rl_b.is_blocked(alice.did))
            with pytest.raises(RemoteError) as refused:
                await a.request(bob.did, "echo", b"x")
            assert refused.value.remote_code == "quarantined"
            assert b.counters.snapshot()["rejected"] == {"quarantined": 1}
            with pytest.raises(InterceptorDenied) as denied:
                await b.request(alice.did, "echo", b"x")
            assert denied.value.denial_code == "quarantined"
            # Naming a message "iatp.error" is no way around the block.
            with pytest.raises(InterceptorDenied):
                await b.send(alice.did, "iatp.error", b"x")
            await rl_b.issue(entry(AUTHORITY, alice.did, RevocationKind.RELEASED, at=2_000))
            await wait_for(lambda: not rl_b.is_blocked(alice.did))
            assert (await a.request(bob.did, "echo", b"x")).body == b"ok"
    finally:
        await rl_a.aclose()
        await rl_b.aclose()
