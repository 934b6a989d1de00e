"""MeshNode behaviour, run on the in-memory transport and on a real nats-server."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.errors import (
    HandshakeRefused,
    InterceptorDenied,
    NodeStateError,
    NoResponders,
    RemoteError,
)
from agentmesh.node.interceptors import (
    ALLOW,
    InboundMessage,
    Outcome,
    PassThroughInterceptor,
    Verdict,
)
from agentmesh.node.node import MeshNode, NodeState
from iatp.envelope import Envelope
from iatp.handshake import PeerOffer
from iatp.identity import AgentIdentity
from tests.agentmesh.node.conftest import NodeMaker
from tests.agentmesh.transport.waiting import eventually


async def echo(message: InboundMessage) -> bytes:
    return b"echo:" + message.body


def audit_codes(node: MeshNode, kind: str = "rejected") -> list[str]:
    assert isinstance(node.audit, MemoryAuditSink)
    return node.audit.codes(kind)


async def test_signed_request_reply(make_node: NodeMaker) -> None:
    alice, bob = await make_node(), await make_node()
    bob.handle("echo", echo)
    reply = await alice.request(bob.did, "echo", b"hi")
    assert reply.body == b"echo:hi"
    assert reply.sender == bob.did
    assert reply.envelope.correlation_id is not None
    assert reply.type == "echo.reply"
    assert bob.counters.handled == 1
    assert alice.counters.accepted == 1


async def test_one_way_send_and_topic_broadcast(make_node: NodeMaker) -> None:
    alice, bob, carol = await make_node(), await make_node(), await make_node()
    got: list[tuple[str, str, bytes]] = []

    def recorder(name: str):  # type: ignore[no-untyped-def]
        async def record(message: InboundMessage) -> None:
            got.append((name, message.sender, message.body))

        return record

    bob.handle("note", recorder("bob"))
    await alice.send(bob.did, "note", b"direct")
    await bob.subscribe_topic("news", recorder("bob-topic"))
    await carol.subscribe_topic("news", recorder("carol-topic"))
    await alice.transport.flush()
    await alice.publish("news", "headline", b"broadcast")
    await eventually(lambda: len(got) == 3)
    assert sorted(got) == sorted(
        [
            ("bob", alice.did, b"direct"),
            ("bob-topic", alice.did, b"broadcast"),
            ("carol-topic", alice.did, b"broadcast"),
        ]
    )


async def test_missing_handler_and_failing_handler_are_typed_remote_errors(
    make_node: NodeMaker,
) -> None:
    alice, bob = await make_node(), await make_node()

    async def broken(message: InboundMessage) -> bytes:
        raise ValueError("boom")

    bob.handle("broken", broken)
    with pytest.raises(RemoteError) as missing:
        await alice.request(bob.did, "unknown", b"")
    assert missing.value.remote_code == "no_handler"
    with pytest.raises(RemoteError) as failed:
        await alice.request(bob.did, "broken", b"")
    assert failed.value.remote_code == "handler_error"
    assert bob.counters.handler_errors == 1
    assert "no_handler" in audit_codes(bob)
    assert audit_codes(bob, "handler_error") == ["handler_error"]


async def test_request_to_nobody_raises_no_responders(make_node: NodeMaker) -> None:
    alice = await make_node()
    with pytest.raises(NoResponders):
        await alice.request(AgentIdentity.generate().did, "echo", b"", timeout=1.0)


async def test_many_messages_are_verified_in_batches_and_all_handled(
    make_node: NodeMaker,
) -> None:
    alice, bob = await make_node(), await make_node(verify_workers=2)
    seen: list[bytes] = []

    async def record(message: InboundMessage) -> None:
        seen.append(message.body)

    bob.handle("n", record)
    for index in range(400):
        await alice.send(bob.did, "n", str(index).encode())
    await eventually(lambda: len(seen) == 400, timeout=20)
    assert seen == [str(i).encode() for i in range(400)]  # handlers start in arrival order
    assert bob.counters.rejected_total == 0


async def test_mutual_handshake_derives_matching_session_keys(make_node: NodeMaker) -> None:
    alice = await make_node(capabilities=("planner.v1",))
    bob = await make_node(capabilities=("search.v1",))
    keys = await alice.handshake(bob.did)
    theirs = bob.sessions.sessions[alice.did]
    assert keys.send_key == theirs.receive_key
    assert keys.receive_key == theirs.send_key
    assert keys.send_key != keys.receive_key
    assert keys.peer.capabilities == ("search.v1",)
    assert theirs.peer.capabilities == ("planner.v1",)
    assert audit_codes(bob, "handshake") == ["established"]


class Gatekeeper(PassThroughInterceptor):
    """Refuses handshakes from and messages of a chosen kind."""

    def __init__(self, refuse_peer: str = "", refuse_type: str = "", outbound: str = "") -> None:
        self.refuse_peer, self.refuse_type, self.outbound = refuse_peer, refuse_type, outbound
        self.outcomes: list[Outcome] = []

    async def check_handshake(self, offer: PeerOffer) -> Verdict:
        if offer.did == self.refuse_peer:
            return Verdict.deny("untrusted_peer", "not on the list")
        return ALLOW

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        if message.type == self.refuse_type:
            return Verdict.deny("policy_denied", f"{message.type} is not allowed")
        return ALLOW

    async def check_outbound(self, envelope: Envelope) -> Verdict:
        if envelope.type == self.outbound:
            return Verdict.deny("egress_denied", "not to be sent")
        return ALLOW

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


async def test_responder_hook_refuses_handshake(make_node: NodeMaker) -> None:
    alice, bob = await make_node(), await make_node()
    bob.add_interceptor(Gatekeeper(refuse_peer=alice.did))
    with pytest.raises(HandshakeRefused) as refused:
        await alice.handshake(bob.did)
    assert refused.value.remote_code == "untrusted_peer"
    assert alice.did not in bob.sessions.sessions
    assert "untrusted_peer" in audit_codes(bob, "handshake")


async def test_inbound_deny_outbound_deny_and_outcomes(make_node: NodeMaker) -> None:
    alice, bob = await make_node(), await make_node()
    gate = Gatekeeper(refuse_type="wire.money")
    bob.add_interceptor(gate)
    alice.add_interceptor(Gatekeeper(outbound="secret.dump"))
    bob.handle("echo", echo)
    bob.handle("wire.money", echo)
    await alice.request(bob.did, "echo", b"ok")
    with pytest.raises(RemoteError) as denied:
        await alice.request(bob.did, "wire.money", b"1000000")
    assert denied.value.remote_code == "policy_denied"
    sent_before = alice.counters.sent
    with pytest.raises(InterceptorDenied) as local:
        await alice.send(bob.did, "secret.dump", b"")
    assert local.value.denial_code == "egress_denied"
    assert alice.counters.sent == sent_before
    assert gate.outcomes == [Outcome.SUCCESS, Outcome.REJECTED]
    assert audit_codes(bob) == ["policy_denied"]


async def test_a_crashing_interceptor_fails_closed(make_node: NodeMaker) -> None:
    alice, bob = await make_node(), await make_node()

    class Broken(PassThroughInterceptor):
        async def check_inbound(self, message: InboundMessage) -> Verdict:
            raise RuntimeError("bug in a policy plugin")

    bob.add_interceptor(Broken())
    bob.handle("echo", echo)
    with pytest.raises(RemoteError) as denied:
        await alice.request(bob.did, "echo", b"")
    assert denied.value.remote_code == "interceptor_error"
    assert bob.counters.handled == 0


async def test_lifecycle_is_explicit_and_close_is_idempotent(make_node: NodeMaker) -> None:
    alice = await make_node()
    assert alice.state is NodeState.RUNNING
    with pytest.raises(NodeStateError):
        await alice.start()
    await alice.aclose()
    await alice.aclose()
    assert alice.state is NodeState.CLOSED
    with pytest.raises(NodeStateError):
        await alice.send(alice.did, "x", b"")
    assert [e.code for e in alice.audit if e.kind == "lifecycle"] == [  # type: ignore[attr-defined]
        "joined",
        "left",
    ]


async def test_handler_concurrency_is_bounded(make_node: NodeMaker) -> None:
    alice, bob = await make_node(), await make_node(max_concurrent_handlers=3)
    running = 0
    peak = 0
    release = asyncio.Event()

    async def slow(message: InboundMessage) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    bob.handle("slow", slow)
    for _ in range(10):
        await alice.send(bob.did, "slow", b"")
    await eventually(lambda: running == 3)
    await asyncio.sleep(0.1)
    assert peak == 3
    release.set()
    await eventually(lambda: bob.counters.handled == 10)


async def test_error_replies_are_not_silenced_by_outbound_hooks(make_node: NodeMaker) -> None:
    """A hook that refuses inbound from, and outbound to, a peer still lets it learn why."""
    server, client = await make_node(), await make_node()

    class Blocked(PassThroughInterceptor):
        async def check_inbound(self, message: InboundMessage) -> Verdict:
            return Verdict.deny("quarantined", f"{message.sender} is quarantined")

        async def check_outbound(self, envelope: Envelope) -> Verdict:
            return Verdict.deny("quarantined", "no traffic to a quarantined agent")

    server.add_interceptor(Blocked())
    with pytest.raises(RemoteError) as caught:
        await client.request(server.did, "anything", b"x", timeout=5)
    assert caught.value.remote_code == "quarantined"
