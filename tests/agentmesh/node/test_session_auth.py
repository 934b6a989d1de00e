"""Session-authenticated messages between two nodes (both transports), and attacks on them."""

from __future__ import annotations

import msgpack
import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.errors import NoSession
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from iatp.clock import ManualClock, SystemClock
from iatp.envelope import encode_payload, new_envelope, seal_envelope
from iatp.identity import AgentIdentity
from iatp.session_frame import seal_session_frame, seal_session_payload
from iatp.session_table import SessionLimits
from tests.agentmesh.node.conftest import NodeMaker
from tests.agentmesh.transport.waiting import eventually
from tests.conftest import TransportFactory

SEEN: list[InboundMessage] = []


async def echo(message: InboundMessage) -> bytes:
    SEEN.append(message)
    return message.body


def rejected_codes(node: MeshNode) -> list[str]:
    assert isinstance(node.audit, MemoryAuditSink)
    return node.audit.codes("rejected")


async def pair(make_node: NodeMaker) -> tuple[MeshNode, MeshNode]:
    client, server = await make_node(), await make_node()
    server.handle("echo", echo)
    await client.handshake(server.did)
    return client, server


async def test_request_and_reply_travel_under_the_session(make_node: NodeMaker) -> None:
    SEEN.clear()
    client, server = await pair(make_node)
    reply = await client.request(server.did, "echo", b"fast", via_session=True)
    assert reply.body == b"fast"
    assert reply.authenticated_by == "session"
    assert not reply.is_signed
    assert SEEN[-1].authenticated_by == "session"
    assert SEEN[-1].subject == server.addressing.session_inbox(server.did)
    signed = await client.request(server.did, "echo", b"signed")
    assert signed.is_signed
    assert SEEN[-1].is_signed
    await client.send(server.did, "echo", b"one-way", via_session=True)
    await eventually(lambda: SEEN[-1].body == b"one-way")
    assert SEEN[-1].authenticated_by == "session"


async def test_without_a_handshake_there_is_no_session(make_node: NodeMaker) -> None:
    client, server = await make_node(), await make_node()
    with pytest.raises(NoSession, match="handshake"):
        await client.request(server.did, "echo", b"x", via_session=True)
    with pytest.raises(NoSession):
        await client.send(server.did, "echo", b"x", via_session=True)
    assert client.counters.sent == 0


async def test_session_attacks_are_rejected_counted_and_audited(
    make_node: NodeMaker, transport_factory: TransportFactory
) -> None:
    client, server = await pair(make_node)
    keys = client.sessions.sessions[server.did]
    raw = await transport_factory.new("attacker")
    subject = server.addressing.session_inbox(server.did)
    now = SystemClock().now_ms()

    def envelope(sender: str = client.did, body: bytes = b"x"):  # type: ignore[no-untyped-def]
        return new_envelope(sender=sender, type="echo", recipient=server.did, body=body, now_ms=now)

    genuine = seal_session_frame(envelope(), keys)
    tampered = bytearray(genuine)
    tampered[-20] ^= 0x01  # inside the ciphertext
    stranger = AgentIdentity.generate()
    payload = encode_payload(envelope(stranger.did))
    sealed = seal_session_payload(bytes(32), bytes(16), stranger.did, bytes(24), payload)
    made_up = msgpack.packb([1, stranger.did, bytes(16), bytes(24), sealed], use_bin_type=True)
    attacks = {
        "bad_mac": [bytes(tampered)],
        "unknown_session": [made_up],
        "replayed": [genuine, genuine],  # the first copy is accepted
        "malformed": [b"\xc1"],
        # a signed frame is not a session frame: the session subject takes only those
        "missing_fields": [seal_envelope(envelope(), client.identity)],
    }
    for frames in attacks.values():
        for frame in frames:
            await raw.publish(subject, frame)
    await raw.flush()
    expected = {code: len(f) - (1 if code == "replayed" else 0) for code, f in attacks.items()}
    await eventually(lambda: server.counters.rejected_total >= sum(expected.values()), 10)
    assert dict(server.counters.rejected) == expected
    for code, count in expected.items():
        assert rejected_codes(server).count(code) == count, code
    # Legitimate session traffic still flows.
    assert (await client.request(server.did, "echo", b"ok", via_session=True)).body == b"ok"


async def test_a_newer_handshake_replaces_the_session(make_node: NodeMaker) -> None:
    # Without a grace window, the old session ends as soon as the new one is used
    # (test_session_rekey.py covers the window).
    clock = ManualClock(SystemClock().now_ms())
    client = await make_node(clock=clock, session_limits=SessionLimits(grace_ms=0))
    server = await make_node(clock=clock, session_limits=SessionLimits(grace_ms=0))
    server.handle("echo", echo)
    await client.handshake(server.did)
    old = client.sessions.sessions[server.did]
    await client.handshake(server.did)
    assert client.sessions.sessions[server.did].session_id != old.session_id
    assert (await client.request(server.did, "echo", b"new", via_session=True)).body == b"new"
    clock.advance(1)
    raw_frame = seal_session_frame(
        new_envelope(
            sender=client.did,
            type="echo",
            recipient=server.did,
            body=b"old",
            now_ms=clock.now_ms(),
        ),
        old,
    )
    await client.transport.publish(server.addressing.session_inbox(server.did), raw_frame)
    await eventually(lambda: "unknown_session" in rejected_codes(server))
