"""Tampering with the cards bucket does not take an honest agent out of the directory.

Bare deletes are ignored, garbage is refused, the owner re-announces at once (not
at its next renewal), a fresh node finds the last valid card in the key's history,
an agent leaves only by a signed withdrawal, and a deleted bucket is recreated and
filled again by its owners. Both transports, except the bucket deletion (a
server-side attack).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from agentmesh.directory import Directory, bucket_name
from agentmesh.transport.base import KeyValue
from agentmesh.transport.nats import NatsTransport
from iatp.identity import AgentIdentity
from registry.withdrawal import sign_withdrawal
from tests.conftest import TransportFactory

LONG_TTL = 600_000  # no heartbeat renewal during a test: a repair must be a re-announce


async def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def started(factory: TransportFactory, uid: str, name: str, **options: object) -> Directory:
    directory = Directory(await factory.new(name), mesh=uid, **options)  # type: ignore[arg-type]
    await directory.start()
    return directory


async def bucket(factory: TransportFactory, uid: str) -> KeyValue:
    """The raw cards bucket, as a tamperer with write access holds it."""
    return await (await factory.new("tamperer")).key_value(bucket_name(uid, "cards"))


async def test_bare_delete_keeps_the_card_and_the_owner_reannounces_at_once(
    transport_factory: TransportFactory, uid: str
) -> None:
    alice = AgentIdentity.generate()
    owner = await started(transport_factory, uid, "owner")
    observer = await started(transport_factory, uid, "observer")
    first = await owner.register(alice, display_name="alice", ttl_ms=LONG_TTL)
    await eventually(lambda: observer.lookup(alice.did) is not None)
    kv = await bucket(transport_factory, uid)
    await kv.delete(alice.did[8:])
    # The owner writes a fresh card right away; the observer never drops Alice.
    await eventually(
        lambda: (
            (card := observer.lookup(alice.did)) is not None
            and card.issued_at_ms > first.issued_at_ms
        )
    )

    async def latest_is_a_card() -> bool:
        entry = await kv.get(alice.did[8:])
        return entry.value.startswith(b"{") and b'"did"' in entry.value

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    while not await latest_is_a_card():
        assert loop.time() < deadline, "the owner did not re-announce"
        await asyncio.sleep(0.02)
    assert "card_deleted_unsigned" in observer.audit.codes("registry_rejected")
    await owner.aclose()
    await observer.aclose()


async def test_garbage_is_refused_and_the_owner_repairs_it(
    transport_factory: TransportFactory, uid: str
) -> None:
    alice = AgentIdentity.generate()
    owner = await started(transport_factory, uid, "owner")
    observer = await started(transport_factory, uid, "observer")
    first = await owner.register(alice, display_name="alice", ttl_ms=LONG_TTL)
    await eventually(lambda: observer.lookup(alice.did) is not None)
    kv = await bucket(transport_factory, uid)
    await kv.put(alice.did[8:], b'{"did": "garbage"}')
    await eventually(
        lambda: (
            (card := observer.lookup(alice.did)) is not None
            and card.issued_at_ms >= first.issued_at_ms
            and observer.rejected["card_invalid"] >= 1
        )
    )
    # The owner overwrites the garbage with a fresh card (the observer may refuse
    # the garbage before the owner's repair reaches the store).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while b"garbage" in (await kv.get(alice.did[8:])).value:
        assert loop.time() < deadline, "the owner did not repair the card"
        await asyncio.sleep(0.02)
    await owner.aclose()
    await observer.aclose()


async def test_a_fresh_node_prefers_the_last_valid_card_in_the_history(
    transport_factory: TransportFactory, uid: str
) -> None:
    alice = AgentIdentity.generate()
    owner = await started(transport_factory, uid, "owner")
    await owner.register(alice, display_name="alice", ttl_ms=LONG_TTL)
    await owner.aclose()  # offline: nobody repairs the key
    kv = await bucket(transport_factory, uid)
    await kv.put(alice.did[8:], b"not a card at all")
    fresh = await started(transport_factory, uid, "fresh")
    await eventually(lambda: fresh.lookup(alice.did) is not None)
    assert fresh.lookup(alice.did).display_name == "alice"  # type: ignore[union-attr]
    assert "card_recovered" in fresh.audit.codes("registry")
    await fresh.aclose()


async def test_an_agent_leaves_only_by_its_signed_withdrawal(
    transport_factory: TransportFactory, uid: str
) -> None:
    alice, mallory = AgentIdentity.generate(), AgentIdentity.generate()
    owner = await started(transport_factory, uid, "owner")
    observer = await started(transport_factory, uid, "observer")
    await owner.register(alice, display_name="alice", ttl_ms=LONG_TTL)
    await eventually(lambda: observer.lookup(alice.did) is not None)
    kv = await bucket(transport_factory, uid)
    # Mallory's withdrawal stored under Alice's key: refused, Alice stays.
    forged = sign_withdrawal(mallory, issued_at_ms=observer.clock.now_ms())
    await kv.put(alice.did[8:], forged.encode())
    await eventually(lambda: observer.rejected["card_invalid"] >= 1)
    assert observer.lookup(alice.did) is not None
    # Alice's own withdrawal removes her everywhere.
    await owner.deregister(alice)
    await eventually(lambda: observer.lookup(alice.did) is None)
    old = (await kv.get(alice.did[8:])).value
    # She registers again; her old withdrawal, put back by someone, changes nothing.
    await owner.register(alice, display_name="alice", ttl_ms=LONG_TTL)
    await eventually(lambda: observer.lookup(alice.did) is not None)
    await kv.put(alice.did[8:], old)
    await asyncio.sleep(0.3)
    assert observer.lookup(alice.did) is not None
    await owner.aclose()
    await observer.aclose()


@pytest.mark.nats
async def test_a_deleted_cards_bucket_is_recreated_and_refilled(
    nats_server: object, uid: str
) -> None:
    url = nats_server.url  # type: ignore[attr-defined]
    alice, bob = AgentIdentity.generate(), AgentIdentity.generate()
    transports = [NatsTransport(url, name=f"n{i}") for i in range(3)]
    for transport in transports:
        await transport.connect()
    try:
        a = Directory(transports[0], mesh=uid, store_check_every=0.3)
        b = Directory(transports[1], mesh=uid, store_check_every=0.3)
        await a.start()
        await b.start()
        await a.register(alice, display_name="alice", ttl_ms=LONG_TTL)
        await b.register(bob, display_name="bob", ttl_ms=LONG_TTL)
        await eventually(lambda: a.lookup(bob.did) is not None and b.lookup(alice.did) is not None)
        await transports[2].js.delete_stream(f"KV_{bucket_name(uid, 'cards')}")
        # Both owners notice, recreate, re-announce; a fresh node finds both again.
        await eventually(lambda: a._cards.resets >= 1 and b._cards.resets >= 1, timeout=10)
        fresh = Directory(transports[2], mesh=uid)
        await fresh.start()
        await eventually(lambda: fresh.lookup(alice.did) is not None and fresh.lookup(bob.did))
        await fresh.aclose()
        await a.aclose()
        await b.aclose()
    finally:
        for transport in transports:
            await transport.aclose()
