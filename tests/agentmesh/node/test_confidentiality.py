"""What an eavesdropper on the mesh reads: signed frames are readable, session and sealed
frames are not (both transports; on an open broker anyone can subscribe to everything)."""

from __future__ import annotations

import pytest

from agentmesh.node.interceptors import InboundMessage
from iatp.errors import InvalidSeal
from tests.agentmesh.node.conftest import NodeMaker
from tests.agentmesh.transport.waiting import Recorder
from tests.conftest import TransportFactory

SECRET = b"salary of employee 4711: 123456 EUR"
ANSWER = b"approved: transfer 987654 EUR to account 42"


async def answer(message: InboundMessage) -> bytes:
    assert message.body == SECRET
    return ANSWER + (b" (sealed)" if message.sealed else b"")


async def test_session_and_sealed_traffic_is_unreadable_on_the_wire(
    make_node: NodeMaker, transport_factory: TransportFactory, uid: str
) -> None:
    alice, bob = await make_node(), await make_node()
    bob.handle("hr.query", answer)
    eve = await transport_factory.new("eavesdropper")
    wire = Recorder()
    await eve.subscribe(f"{uid}.>", wire)
    await eve.subscribe("_INBOX.>", wire)  # replies too
    await eve.flush()

    plain = await alice.request(bob.did, "hr.query", SECRET)
    assert plain.body == ANSWER
    await eve.flush()
    assert any(SECRET in m.data for m in wire.messages)  # signed: authentic, not secret
    wire.messages.clear()

    sealed = await alice.request(bob.did, "hr.query", SECRET, sealed=True)
    assert sealed.body == ANSWER + b" (sealed)"
    assert sealed.sealed
    assert sealed.is_signed  # still signed inside: evidence for whoever reads it

    await alice.handshake(bob.did)
    via_session = await alice.request(bob.did, "hr.query", SECRET, via_session=True)
    assert via_session.body == ANSWER
    await eve.flush()
    await wire.wait_for(4)  # two requests and two replies went by
    for message in wire.messages:
        for visible in (SECRET, ANSWER, b"hr.query"):
            assert visible not in message.data, message.subject

    await alice.send(bob.did, "hr.query", SECRET, sealed=True)
    with pytest.raises(ValueError, match="one of"):
        await alice.request(bob.did, "hr.query", SECRET, sealed=True, via_session=True)


async def test_a_sealed_frame_for_someone_else_is_refused_and_audited(
    make_node: NodeMaker, transport_factory: TransportFactory
) -> None:
    alice, bob, carol = await make_node(), await make_node(), await make_node()
    raw = await transport_factory.new("relay")
    captured = Recorder()
    await raw.subscribe(bob.addressing.sealed_inbox(bob.did), captured)
    await raw.flush()
    await alice.send(bob.did, "note", SECRET, sealed=True)
    (frame,) = await captured.wait_for(1)
    await raw.publish(carol.addressing.sealed_inbox(carol.did), frame.data)
    tampered = bytearray(frame.data)
    tampered[-5] ^= 0x01
    await raw.publish(bob.addressing.sealed_inbox(bob.did), bytes(tampered))
    await raw.flush()
    for node, code in ((carol, "wrong_audience"), (bob, InvalidSeal.code)):
        for _ in range(200):
            if node.counters.rejected[code]:
                break
            await raw.flush()
        assert node.counters.rejected[code] == 1, node.counters.rejected
        assert code in node.audit.codes("rejected")
