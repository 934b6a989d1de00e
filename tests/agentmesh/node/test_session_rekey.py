"""Long-running sessions (both transports): concurrent handshakes, grace window, expiry, rekey.

Two nodes that handshake with each other while session requests are in flight
must not lose a request: a receiver keeps every live session with a peer by its
id, and a superseded session for a grace window. Sessions expire by age and by
message count; the sender rekeys before that, and a frame under an expired
session is refused (``session_expired``) and audited.
"""

from __future__ import annotations

import asyncio
import itertools

from agentmesh.audit import MemoryAuditSink
from agentmesh.errors import AgentMeshError
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from iatp.clock import ManualClock, SystemClock
from iatp.envelope import new_envelope
from iatp.session_frame import seal_session_frame
from iatp.session_table import SessionLimits
from tests.agentmesh.node.conftest import NodeMaker
from tests.agentmesh.transport.waiting import eventually

SESSION_CODES = ("unknown_session", "bad_mac", "session_expired")


async def echo(message: InboundMessage) -> bytes:
    return message.body


def rejected_codes(node: MeshNode) -> list[str]:
    assert isinstance(node.audit, MemoryAuditSink)
    return node.audit.codes("rejected")


def session_rejections(*nodes: MeshNode) -> dict[str, int]:
    return {
        code: sum(node.counters.rejected.get(code, 0) for node in nodes) for code in SESSION_CODES
    }


async def echo_pair(make_node: NodeMaker, **config: object) -> tuple[MeshNode, MeshNode]:
    alice, bob = await make_node(**config), await make_node(**config)
    alice.handle("echo", echo)
    bob.handle("echo", echo)
    return alice, bob


async def test_concurrent_handshakes_lose_no_session_request(make_node: NodeMaker) -> None:
    alice, bob = await echo_pair(make_node)
    await alice.handshake(bob.did)
    await bob.handshake(alice.did)
    stop = asyncio.Event()
    failures: list[str] = []
    served = itertools.count()

    async def traffic(client: MeshNode, server: MeshNode, lane: int) -> None:
        for index in itertools.count():
            if stop.is_set():
                return
            body = f"{lane}:{index}".encode()
            try:
                reply = await client.request(
                    server.did, "echo", body, via_session=True, timeout=2.0
                )
            except AgentMeshError as exc:
                failures.append(exc.code)
                continue
            assert reply.body == body
            next(served)

    async def churn(initiator: MeshNode, responder: MeshNode, rounds: int) -> None:
        for _ in range(rounds):
            await initiator.handshake(responder.did)
            await asyncio.sleep(0.04)

    lanes = [
        asyncio.create_task(traffic(client, server, lane))
        for lane, (client, server) in enumerate([(alice, bob), (bob, alice)] * 4)
    ]
    # Both sides handshake again and again, two at a time in each direction.
    await asyncio.gather(*(churn(a, b, 25) for a, b in [(alice, bob), (bob, alice)] * 2))
    stop.set()
    await asyncio.gather(*lanes)
    assert session_rejections(alice, bob) == dict.fromkeys(SESSION_CODES, 0)
    assert failures == []
    assert next(served) > 100
    assert alice.counters.handshakes + bob.counters.handshakes == 102


async def test_a_superseded_session_stays_valid_for_the_grace_window(
    make_node: NodeMaker,
) -> None:
    clock = ManualClock(SystemClock().now_ms())
    limits = SessionLimits(grace_ms=10_000)
    client, server = await echo_pair(make_node, clock=clock, session_limits=limits)
    old = await client.handshake(server.did)
    clock.advance(1)  # sessions of one initiator are ordered by HELLO time, then id
    await client.handshake(server.did)
    # Both sessions open frames until the new one is used: then the old one has
    # the grace window left.
    assert (await client.request(server.did, "echo", b"new", via_session=True)).body == b"new"

    def frame(body: bytes) -> bytes:
        envelope = new_envelope(
            sender=client.did, type="echo", recipient=server.did, body=body, now_ms=clock.now_ms()
        )
        return seal_session_frame(envelope, old)

    subject = server.addressing.session_inbox(server.did)
    await client.transport.publish(subject, frame(b"in grace"))
    await eventually(lambda: server.counters.handled == 2)
    clock.advance(10_001)
    await client.transport.publish(subject, frame(b"too late"))
    await eventually(lambda: "unknown_session" in rejected_codes(server))
    assert server.counters.handled == 2
    # The current session is unaffected.
    assert (await client.request(server.did, "echo", b"still", via_session=True)).body == b"still"


async def test_sender_rekeys_before_the_message_limit(make_node: NodeMaker) -> None:
    limits = SessionLimits(max_messages=20, rekey_margin_messages=5)
    client, server = await echo_pair(make_node, session_limits=limits)
    await client.handshake(server.did)
    for index in range(100):
        body = str(index).encode()
        assert (await client.request(server.did, "echo", body, via_session=True)).body == body
    # 100 requests, at most 15 per session before the rekey starts: several new sessions.
    assert client.counters.handshakes >= 6
    assert session_rejections(client, server) == dict.fromkeys(SESSION_CODES, 0)
    assert set(rejected_codes(server)) == set()


async def test_sender_rekeys_before_the_age_limit(make_node: NodeMaker) -> None:
    clock = ManualClock(SystemClock().now_ms())
    limits = SessionLimits(max_age_ms=60_000, rekey_margin_ms=10_000)
    client, server = await echo_pair(make_node, clock=clock, session_limits=limits)
    first = await client.handshake(server.did)
    assert (await client.request(server.did, "echo", b"a", via_session=True)).body == b"a"
    clock.advance(50_000)  # inside the margin: the next send starts a rekey
    assert (await client.request(server.did, "echo", b"b", via_session=True)).body == b"b"
    await eventually(lambda: client.counters.handshakes == 2)
    current = client.sessions.sessions[server.did]
    assert current.session_id != first.session_id
    clock.advance(60_000)  # far past the first session's end: a fresh one is made inline
    assert (await client.request(server.did, "echo", b"c", via_session=True)).body == b"c"
    assert client.counters.handshakes == 3
    assert session_rejections(client, server) == dict.fromkeys(SESSION_CODES, 0)


async def test_an_expired_session_is_refused_and_audited(make_node: NodeMaker) -> None:
    clock = ManualClock(SystemClock().now_ms())
    limits = SessionLimits(max_age_ms=60_000, rekey_margin_ms=10_000)
    client, server = await echo_pair(make_node, clock=clock, session_limits=limits)
    keys = await client.handshake(server.did)
    clock.advance(60_000)
    envelope = new_envelope(
        sender=client.did, type="echo", recipient=server.did, body=b"x", now_ms=clock.now_ms()
    )
    subject = server.addressing.session_inbox(server.did)
    await client.transport.publish(subject, seal_session_frame(envelope, keys))
    await eventually(lambda: "session_expired" in rejected_codes(server))
    assert server.counters.rejected["session_expired"] == 1
    assert server.counters.handled == 0
