"""Tampering an open broker allows, tried with a plain nats-py client on a real server.

An open development server lets anyone write any KV key and read any subject.
Each test is one attack with that power, and checks that the mesh does not act
on it: a forged pin does not hold an honest agent out, a forged approval does not
lift a rug-pull hold, a deleted card does not take its agent out of discovery,
and an eavesdropper reads neither sealed nor session traffic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats
import pytest
from nats.aio.msg import Msg

from agentmesh.directory import Directory, bucket_name
from agentmesh.directory.pin_store import pin_key
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.transport.nats import NatsTransport
from iatp.identity import AgentIdentity
from registry.card import Capability
from registry.pin_record import sign_pin
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

SEARCH = Capability(name="search", version="1", description="web search")
AUTHORITY = AgentIdentity.from_seed(b"P" * 32)


async def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def directory(url: str, mesh: str, signer: AgentIdentity | None = None) -> Directory:
    transport = NatsTransport(url, name="dir")
    await transport.connect()
    found = Directory(
        transport, mesh=mesh, pin_signer=signer, pin_authorities=frozenset({AUTHORITY.did})
    )
    await found.start()
    return found


async def test_forged_pins_and_approvals_change_nothing(
    nats_server: NatsServerProcess, uid: str
) -> None:
    authority = await directory(nats_server.url, uid, AUTHORITY)
    watcher = await directory(nats_server.url, uid)
    honest, rogue, mallory = (AgentIdentity.generate() for _ in range(3))
    attacker = await nats.connect(nats_server.url)
    pins = f"$KV.{bucket_name(uid, 'pins')}"
    try:
        forged = sign_pin(
            mallory,
            did=honest.did,
            name="search",
            version="1",
            fingerprint="0" * 64,
            issued_at_ms=1,
        )
        key = pin_key((honest.did, "search", "1"))
        await attacker.request(f"{pins}.{key}", forged.encode(), timeout=2)
        await authority.register(honest, display_name="honest", capabilities=(SEARCH,))
        await eventually(lambda: len(watcher.find("search")) == 1)
        assert not watcher.pins.is_held(honest.did)
        await authority.register(rogue, display_name="rogue", capabilities=(SEARCH,))
        evil = SEARCH.model_copy(update={"description": "exfiltrates"})
        await eventually(lambda: len(watcher.find("search")) == 2)
        await authority.register(rogue, display_name="rogue", capabilities=(evil,))
        await eventually(lambda: watcher.pins.is_held(rogue.did))
        approval = sign_pin(
            mallory,
            did=rogue.did,
            name="search",
            version="1",
            fingerprint=evil.fingerprint(),
            issued_at_ms=2,
        )
        await attacker.request(
            f"{pins}.{pin_key((rogue.did, 'search', '1'))}", approval.encode(), timeout=2
        )
        await eventually(lambda: watcher.rejected["pin_unauthorized"] >= 2)
        assert watcher.pins.is_held(rogue.did)
    finally:
        await attacker.close()
        await watcher.aclose()
        await authority.aclose()


async def test_a_deleted_card_keeps_its_agent_in_discovery(
    nats_server: NatsServerProcess, uid: str
) -> None:
    owner = await directory(nats_server.url, uid)
    watcher = await directory(nats_server.url, uid)
    alice = AgentIdentity.generate()
    attacker = await nats.connect(nats_server.url)
    try:
        card = await owner.register(
            alice, display_name="alice", capabilities=(SEARCH,), ttl_ms=600_000
        )
        await eventually(lambda: len(watcher.find("search")) == 1)
        subject = f"$KV.{bucket_name(uid, 'cards')}.{alice.did[8:]}"
        await attacker.request(subject, b"", headers={"KV-Operation": "DEL"}, timeout=2)
        await attacker.request(subject, b"garbage", timeout=2)
        # Still found everywhere, and the owner re-announced at once.
        await eventually(
            lambda: (
                (c := watcher.lookup(alice.did)) is not None and c.issued_at_ms > card.issued_at_ms
            )
        )
        assert [c.did for c in watcher.find("search")] == [alice.did]
    finally:
        await attacker.close()
        await watcher.aclose()
        await owner.aclose()


async def test_an_eavesdropper_reads_no_sealed_or_session_traffic(
    nats_server: NatsServerProcess, uid: str
) -> None:
    secret, answer = b"patient 4711 diagnosis: X", b"prescribe Y to patient 4711"
    seen: list[bytes] = []
    eve = await nats.connect(nats_server.url)

    async def capture(msg: Msg) -> None:
        seen.append(msg.data)

    await eve.subscribe(">", cb=capture)
    await eve.flush()

    async def doctor(message: InboundMessage) -> bytes:
        return answer

    try:
        async with (
            MeshNode(
                AgentIdentity.generate(),
                NatsTransport(nats_server.url, name="a"),
                config=NodeConfig(mesh=uid),
            ) as alice,
            MeshNode(
                AgentIdentity.generate(),
                NatsTransport(nats_server.url, name="b"),
                config=NodeConfig(mesh=uid),
            ) as bob,
        ):
            bob.handle("consult", doctor)
            assert (await alice.request(bob.did, "consult", secret, sealed=True)).body == answer
            await alice.handshake(bob.did)
            reply = await alice.request(bob.did, "consult", secret, via_session=True)
            assert reply.body == answer
        await eve.flush()
        assert len(seen) >= 4
        assert not any(secret in data or answer in data for data in seen)
    finally:
        await eve.close()
