"""Two members of one identity (one partition each) on both transports.

The claims of docs/scaleout.md: members share the identity's traffic (senders
that know the partition count go straight to the owner, others through the
shared plain subjects); a replayed envelope is refused wherever it is sent
(``wrong_partition`` on the other member, ``replayed`` on the owner); sessions
live in one member and reach it; a dead member's partition fails fast.
"""

from __future__ import annotations

import os

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.errors import NoResponders, RemoteError, RequestTimeout
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.node.partitions import Partition, partition_of, partition_subject
from agentmesh.node.wire import decode_reply, encode_step
from iatp.clock import SystemClock
from iatp.envelope import new_envelope, seal_envelope
from iatp.handshake import HandshakeInitiator
from iatp.identity import AgentIdentity
from iatp.sealed import seal_frame_to
from tests.agentmesh.node.conftest import NodeMaker
from tests.agentmesh.transport.waiting import eventually
from tests.conftest import TransportFactory

P = 2


async def echo(message: InboundMessage) -> bytes:
    return message.body


async def members(make_node: NodeMaker, identity: AgentIdentity) -> list[MeshNode]:
    nodes = [await make_node(identity, partition=Partition(i, P)) for i in range(P)]
    for node in nodes:
        node.handle("echo", echo)
    return nodes


def owned_envelope(author: AgentIdentity, recipient: str, owner: int, body: bytes = b"x") -> bytes:
    """A signed request frame whose id falls in partition ``owner``."""
    while True:
        envelope = new_envelope(
            sender=author.did,
            type="echo",
            recipient=recipient,
            body=body,
            now_ms=SystemClock().now_ms(),
            envelope_id=os.urandom(16),
        )
        if partition_of(envelope.id, P) == owner:
            return seal_envelope(envelope, author)


def rejected(node: MeshNode, code: str) -> int:
    assert isinstance(node.audit, MemoryAuditSink)
    assert node.audit.codes("rejected").count(code) == node.counters.rejected[code]
    return node.counters.rejected[code]


@pytest.mark.parametrize("aware", [True, False], ids=["routed", "forwarded"])
async def test_members_share_requests_signed_sealed_and_session(
    make_node: NodeMaker, aware: bool
) -> None:
    identity = AgentIdentity.generate()
    nodes = await members(make_node, identity)
    client = await make_node()
    if aware:
        client.partitions.set(identity.did, P)
    for i in range(40):
        body = f"{i}".encode()
        assert (await client.request(identity.did, "echo", body)).body == body
        assert (await client.request(identity.did, "echo", body, sealed=True)).body == body
    assert all(n.counters.handled > 10 for n in nodes), [n.counters.handled for n in nodes]
    assert sum(n.counters.handled for n in nodes) == 80
    forwarded = sum(n.counters.sent_by["forward"] for n in nodes)
    assert (forwarded == 0) if aware else (forwarded > 10)
    # A session lives in the member that owns its id; its frames reach it either way.
    keys = await client.handshake(identity.did)
    owner = nodes[partition_of(keys.session_id, P)]
    assert owner.sessions.table.get(client.did, keys.session_id) is not None
    before = owner.counters.handled
    for i in range(10):
        reply = await client.request(identity.did, "echo", b"s%d" % i, via_session=True)
        assert reply.authenticated_by == "session"
    assert owner.counters.handled == before + 10
    assert sum(n.counters.rejected_total for n in nodes) == 0


async def test_a_member_opens_sessions_it_owns_and_the_peer_reaches_it(
    make_node: NodeMaker,
) -> None:
    identity = AgentIdentity.generate()
    nodes = await members(make_node, identity)
    client = await make_node()  # does not know the partition count: plain subjects
    client.handle("echo", echo)
    for node in nodes:
        keys = await node.handshake(client.did)
        assert node.config.partition is not None
        assert node.config.partition.owns(keys.session_id)
        # The client sends under the session the member opened (it has none of its own).
        reply = await client.request(identity.did, "echo", b"back", via_session=True)
        assert reply.body == b"back"
        client.sessions.table.discard(identity.did, keys.session_id)
    assert all(n.counters.rejected_total == 0 for n in nodes)


async def test_replays_are_refused_on_every_member_and_subject(
    make_node: NodeMaker, transport_factory: TransportFactory
) -> None:
    identity = AgentIdentity.generate()
    nodes = await members(make_node, identity)
    friend = AgentIdentity.generate()
    raw = await transport_factory.new("attacker")
    inbox = nodes[0].addressing.inbox(identity.did)
    frame = owned_envelope(friend, identity.did, owner=0)

    # The genuine delivery, to its owner: handled (and answered).
    reply = await raw.request(partition_subject(inbox, P, 0), frame, timeout=5.0)
    assert reply.data
    assert nodes[0].counters.handled == 1
    # The captured frame replayed to the other member: refused before its replay cache
    # (unanswered, like every replay).
    await raw.publish(partition_subject(inbox, P, 1), frame)
    await eventually(lambda: rejected(nodes[1], "wrong_partition") == 1)
    # ... to the owner again, and through the shared plain subject: replayed.
    await raw.publish(partition_subject(inbox, P, 0), frame)
    await raw.publish(inbox, frame)
    await eventually(lambda: rejected(nodes[0], "replayed") == 2)
    # Sealed to the identity and sent to the other member's sealed subject: refused too.
    sealed_inbox = nodes[0].addressing.sealed_inbox(identity.did)
    await raw.publish(partition_subject(sealed_inbox, P, 1), seal_frame_to(identity.did, frame))
    await eventually(lambda: rejected(nodes[1], "wrong_partition") == 2)
    assert [n.counters.handled for n in nodes] == [1, 0]
    assert len(nodes[1]._replay) == 0  # nothing of partition 0 was remembered there


async def test_a_hello_for_another_members_session_is_refused_signed(
    make_node: NodeMaker, transport_factory: TransportFactory
) -> None:
    identity = AgentIdentity.generate()
    nodes = await members(make_node, identity)
    friend = AgentIdentity.generate()
    raw = await transport_factory.new("attacker")
    subject = nodes[0].addressing.handshake(identity.did)
    while True:
        initiator = HandshakeInitiator(friend, identity.did, clock=SystemClock())
        if partition_of(initiator.session_id, P) == 1:
            break
    reply = await raw.request(
        partition_subject(subject, P, 0), encode_step("hello", initiator.hello()), timeout=5.0
    )
    kind, code, _, _ = decode_reply(reply.data)
    assert (kind, code) == ("refused", "wrong_partition")
    assert nodes[0].counters.rejected["wrong_partition"] == 1
    assert isinstance(nodes[0].audit, MemoryAuditSink)
    assert nodes[0].audit.codes("handshake").count("wrong_partition") == 1
    # The owner accepts the same HELLO.
    reply = await raw.request(
        partition_subject(subject, P, 1), encode_step("hello", initiator.hello()), timeout=5.0
    )
    assert decode_reply(reply.data)[0] == "accept"


async def test_a_sender_with_the_wrong_count_gets_no_responders(make_node: NodeMaker) -> None:
    identity = AgentIdentity.generate()
    nodes = await members(make_node, identity)
    client = await make_node()
    client.partitions.set(identity.did, 3)  # three members assumed, two serve
    # The count is part of the subject: no member can misjudge a frame routed for 3.
    with pytest.raises(NoResponders):
        await client.request(identity.did, "echo", b"x", timeout=2.0)
    with pytest.raises(NoResponders):
        await client.handshake(identity.did, timeout=2.0)
    assert all(n.counters.received == 0 for n in nodes)
    client.partitions.set(identity.did, 1)  # one (as far as it knows): plain subjects
    assert (await client.request(identity.did, "echo", b"y")).body == b"y"


async def until_the_server_forgot_the_member(client: MeshNode, did: str) -> None:
    """A closed member's subscription lives on in nats-server until it processes the
    close; a request routed there meanwhile is lost (a timeout), not refused. Probe
    until one is refused with NoResponders: from then on the member is known dead."""
    for i in range(60):
        try:
            await client.request(did, "echo", b"probe %d" % i, timeout=0.5)
        except NoResponders:
            return
        except RequestTimeout:
            continue
    pytest.fail("the server never noticed the closed member")


async def test_a_dead_members_partition_fails_fast_the_rest_is_served(
    make_node: NodeMaker,
) -> None:
    identity = AgentIdentity.generate()
    nodes = await members(make_node, identity)
    client = await make_node()
    client.partitions.set(identity.did, P)
    await nodes[1].aclose()
    await until_the_server_forgot_the_member(client, identity.did)
    handled_before = nodes[0].counters.handled
    served = failed = 0
    for i in range(30):
        try:
            await client.request(identity.did, "echo", b"%d" % i, timeout=3.0)
            served += 1
        except NoResponders:
            failed += 1
    assert served > 3
    assert failed > 3
    assert served + failed == 30
    assert nodes[0].counters.handled - handled_before == served


async def test_topic_broadcasts_reach_every_member(make_node: NodeMaker) -> None:
    identity = AgentIdentity.generate()
    nodes = await members(make_node, identity)
    got: list[list[bytes]] = [[], []]
    for index, node in enumerate(nodes):

        async def on_topic(message: InboundMessage, index: int = index) -> None:
            got[index].append(message.body)

        await node.subscribe_topic("news", on_topic)
    publisher = await make_node()
    for i in range(6):
        await publisher.publish("news", "news", b"%d" % i)
    await eventually(lambda: all(len(g) == 6 for g in got))
    assert all(n.counters.rejected_total == 0 for n in nodes)


async def test_an_error_reply_names_the_refusal(make_node: NodeMaker) -> None:
    identity = AgentIdentity.generate()
    await members(make_node, identity)
    client = await make_node()
    with pytest.raises(RemoteError) as caught:
        await client.request(identity.did, "no.such.type", b"")
    assert caught.value.remote_code == "no_handler"
