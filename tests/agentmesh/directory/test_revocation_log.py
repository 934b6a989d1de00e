"""Revocation logs on both transports: a removed entry is noticed, the node fails closed,
and the issuer's republish repairs it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentmesh.directory import RevocationInterceptor, RevocationList, bucket_name
from agentmesh.directory.revocation_log import read_journal
from agentmesh.node.interceptors import InboundMessage
from iatp.envelope import new_envelope
from iatp.identity import AgentIdentity
from registry.errors import RevocationLogIncomplete
from registry.revocation import RevocationAuthorities, RevocationKind, sign_revocation
from registry.revocation_log import chain_link, chain_start, sign_head
from tests.conftest import TransportFactory

AUTHORITY = AgentIdentity.from_seed(b"L" * 32)


def trusted() -> RevocationAuthorities:
    return RevocationAuthorities(mesh=frozenset({AUTHORITY.did}))


def order(subject: AgentIdentity, kind: RevocationKind, n: int) -> object:
    return sign_revocation(
        AUTHORITY,
        subject=subject.did,
        kind=kind,
        reason=f"order {n}",
        issued_at_ms=1_000 + n,
        sequence=n,
    )


async def started(
    factory: TransportFactory, uid: str, *, require_complete: bool = True, **options: object
) -> RevocationList:
    revocations = RevocationList(
        await factory.new("rl"),
        mesh=uid,
        authorities=trusted(),
        **options,  # type: ignore[arg-type]
    )
    await revocations.start(require_complete=require_complete)
    return revocations


async def test_a_deleted_entry_makes_a_later_node_fail_closed_until_republished(
    transport_factory: TransportFactory, uid: str, tmp_path: Path
) -> None:
    agents = [AgentIdentity.generate() for _ in range(3)]
    journal = tmp_path / "authority.journal.jsonl"
    issuer = await started(transport_factory, uid, journal=journal)
    for n, agent in enumerate(agents, 1):
        await issuer.issue(order(agent, RevocationKind.REVOKED, n), signer=AUTHORITY)  # type: ignore[arg-type]
    await issuer.aclose()
    assert len(read_journal(journal)) == 3
    # Someone with write access deletes the newest revocation.
    kv = await (await transport_factory.new("tamperer")).key_value(bucket_name(uid, "revocations"))
    await kv.delete(f"{AUTHORITY.did[8:]}.3")
    late = RevocationList(
        await transport_factory.new("late"), mesh=uid, authorities=trusted(), head_grace=0.3
    )
    with pytest.raises(RevocationLogIncomplete) as broken:
        await late.start()
    assert "index 3" in str(broken.value)
    assert "revocation_log_incomplete" in late.audit.codes("revocation_rejected")
    # The authority republishes its journal; the log is whole again and still revokes.
    repair = await started(transport_factory, uid, require_complete=False)
    assert repair.incomplete
    assert await repair.republish(AUTHORITY, read_journal(journal)) == 1
    assert repair.incomplete == {}
    await repair.aclose()
    fresh = await started(transport_factory, uid)
    assert all(fresh.is_blocked(a.did) for a in agents)
    await fresh.aclose()


async def test_a_gap_that_fills_within_the_grace_does_not_refuse_the_start(
    transport_factory: TransportFactory, uid: str
) -> None:
    """A replica that has just restarted may serve the watch before it caught up."""
    agents = [AgentIdentity.generate() for _ in range(3)]
    issuer = await started(transport_factory, uid)
    for n, agent in enumerate(agents, 1):
        await issuer.issue(order(agent, RevocationKind.REVOKED, n), signer=AUTHORITY)  # type: ignore[arg-type]
    await issuer.aclose()
    kv = await (await transport_factory.new("lagging")).key_value(bucket_name(uid, "revocations"))
    key = f"{AUTHORITY.did[8:]}.3"
    stored = (await kv.get(key)).value
    await kv.delete(key)
    late = RevocationList(
        await transport_factory.new("late"), mesh=uid, authorities=trusted(), head_grace=5.0
    )
    starting = asyncio.create_task(late.start())
    await asyncio.sleep(0.3)
    assert not starting.done()  # waiting for the missing entry, not refused yet
    await kv.put(key, stored)  # the replica catches up
    await asyncio.wait_for(starting, 5.0)
    assert late.incomplete == {}
    assert all(late.is_blocked(a.did) for a in agents)
    await late.aclose()


async def test_a_running_node_fails_closed_when_a_heads_entries_never_arrive(
    transport_factory: TransportFactory, uid: str
) -> None:
    quarantined, bystander, other = (AgentIdentity.generate() for _ in range(3))
    issuer = await started(transport_factory, uid)
    first = order(quarantined, RevocationKind.QUARANTINED, 1)
    await issuer.issue(first, signer=AUTHORITY)  # type: ignore[arg-type]
    node = await started(transport_factory, uid, head_grace=0.2)
    interceptor = RevocationInterceptor(node)
    envelope = new_envelope(sender=other.did, type="t", recipient=AUTHORITY.did, body=b"", now_ms=1)
    message = InboundMessage(envelope, "s", is_request=True)
    assert (await interceptor.check_inbound(message)).allowed
    # The authority's second entry was removed from the store before this node read
    # it (it was away); its head, broadcast, still counts it.
    second = order(bystander, RevocationKind.QUARANTINED, 2)
    chain = chain_link(chain_link(chain_start(AUTHORITY.did), first), second)  # type: ignore[arg-type]
    head = sign_head(AUTHORITY, count=2, chain_hash=chain, issued_at_ms=2_000)
    broadcaster = await transport_factory.new("broadcaster")
    await broadcaster.publish(f"{uid}.ctl.revocation-head", head.encode())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not node.incomplete:
        assert loop.time() < deadline, "the node did not notice"
        await asyncio.sleep(0.02)
    verdict = await interceptor.check_inbound(message)
    assert not verdict.allowed
    assert verdict.code == "revocation_log_incomplete"
    assert "index 2" in verdict.reason
    # The authority republishes the entry from its journal: the node is whole again.
    key = f"{AUTHORITY.did[8:]}.2"
    await issuer.republish(AUTHORITY, [(key, second)])  # type: ignore[list-item]
    while node.incomplete:
        assert loop.time() < deadline + 5, "the node did not recover"
        await asyncio.sleep(0.02)
    assert (await interceptor.check_inbound(message)).allowed
    assert node.is_blocked(bystander.did)
    await node.aclose()
    await issuer.aclose()


async def test_heads_of_untrusted_issuers_are_refused(
    transport_factory: TransportFactory, uid: str
) -> None:
    mallory = AgentIdentity.generate()
    node = await started(transport_factory, uid, head_grace=0.1)
    kv = await (await transport_factory.new("t")).key_value(bucket_name(uid, "revocation_heads"))
    fake = sign_head(mallory, count=5, chain_hash=b"\x01" * 32, issued_at_ms=1)
    await kv.put(mallory.did[8:], fake.encode())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while node.rejected["revocation_unauthorized"] < 1:
        assert loop.time() < deadline
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert node.incomplete == {}  # a stranger's head cannot make everyone fail closed
    await node.aclose()
