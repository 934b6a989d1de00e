"""Attacks injected with a raw transport against running nodes (both transports).

Each attack must be rejected with its own code, counted and audited, while the
node keeps serving legitimate traffic.
"""

from __future__ import annotations

import msgpack
import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.errors import RequestTimeout
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.node.wire import decode_reply, encode_step
from agentmesh.transport.base import Message
from iatp.clock import ManualClock, SystemClock
from iatp.envelope import (
    SIGNING_DOMAIN,
    EnvelopeLimits,
    encode_frame,
    encode_payload,
    new_envelope,
    seal_envelope,
)
from iatp.handshake import HandshakeInitiator
from iatp.identity import AgentIdentity
from tests.agentmesh.node.conftest import NodeMaker
from tests.agentmesh.transport.waiting import Recorder, eventually
from tests.conftest import TransportFactory


async def echo(message: InboundMessage) -> bytes:
    return message.body


def now_ms() -> int:
    return SystemClock().now_ms()


def sealed(
    author: AgentIdentity,
    recipient: str,
    *,
    at: int | None = None,
    lifetime: int = 60_000,
    body: bytes = b"x",
    type: str = "echo",
) -> bytes:
    envelope = new_envelope(
        sender=author.did,
        type=type,
        recipient=recipient,
        body=body,
        now_ms=now_ms() if at is None else at,
        lifetime_ms=lifetime,
    )
    return seal_envelope(envelope, author)


def forged(claimed: str, signer: AgentIdentity, recipient: str) -> bytes:
    envelope = new_envelope(
        sender=claimed, type="echo", recipient=recipient, body=b"x", now_ms=now_ms()
    )
    payload = encode_payload(envelope)
    return encode_frame(claimed, payload, signer.sign(SIGNING_DOMAIN + payload))


def codes(node: MeshNode) -> list[str]:
    assert isinstance(node.audit, MemoryAuditSink)
    return node.audit.codes("rejected")


async def test_every_injected_attack_is_rejected_counted_and_audited(
    make_node: NodeMaker, transport_factory: TransportFactory
) -> None:
    victim = await make_node(limits=EnvelopeLimits(max_frame_bytes=65_536))
    victim.handle("echo", echo)
    friend = AgentIdentity.generate()
    other = AgentIdentity.generate()
    attacker = AgentIdentity.generate()
    raw = await transport_factory.new("attacker")
    inbox = victim.addressing.inbox(victim.did)
    genuine = sealed(friend, victim.did)
    tampered = bytearray(genuine)
    tampered[-70] ^= 0x01
    non_canonical_payload = msgpack.packb(
        [
            "echo",
            b"\x01" * 16,
            friend.did,
            victim.did,
            now_ms(),
            now_ms() + 1000,
            None,
            {"b": "1", "a": "2"},
            b"",
        ],
        use_bin_type=True,
    )
    attacks = {
        "bad_signature": [forged(friend.did, attacker, victim.did), bytes(tampered)],
        "replayed": [genuine, genuine],  # the first copy is accepted
        "wrong_audience": [sealed(friend, other.did)],
        "expired": [sealed(friend, victim.did, at=now_ms() - 200_000)],
        "issued_in_future": [sealed(friend, victim.did, at=now_ms() + 120_000)],
        "lifetime_too_long": [sealed(friend, victim.did, lifetime=3_600_000)],
        "oversized": [b"\x90" * 65_537],
        "malformed": [b"\xc1", b"\x93\x01"],  # reserved byte; truncated array
        "trailing_bytes": [b"not msgpack at all"],  # 'n' is a fixint, then junk
        "unsupported_version": [msgpack.packb([2, friend.did, b"", b"\0" * 64])],
        "non_canonical": [
            encode_frame(
                friend.did,
                non_canonical_payload,
                friend.sign(SIGNING_DOMAIN + non_canonical_payload),
            )
        ],
        "invalid_sender": [encode_frame("did:key:zNOPE", b"\x90", b"\0" * 64)],
    }
    sent = 0
    for frames in attacks.values():
        for frame in frames:
            await raw.publish(inbox, frame)
            sent += 1
    await raw.flush()
    expected = {
        code: len(frames) - (1 if code == "replayed" else 0) for code, frames in attacks.items()
    }
    await eventually(lambda: victim.counters.rejected_total >= sum(expected.values()), 10)
    assert dict(victim.counters.rejected) == expected
    for code, count in expected.items():
        assert codes(victim).count(code) == count, code
    # Legitimate traffic still flows.
    client = await make_node()
    assert (await client.request(victim.did, "echo", b"still here")).body == b"still here"


async def test_forged_and_misdirected_replies_are_refused(
    make_node: NodeMaker, transport_factory: TransportFactory
) -> None:
    """A man in the middle answers a request with a reply it cannot have signed.

    Each junk reply is refused, counted and audited by its code; the request does
    not take it as the answer and keeps waiting (here until its timeout, as the
    genuine peer is offline).
    """
    alice = await make_node()
    bob = AgentIdentity.generate()  # the peer alice thinks she talks to; never online
    mallory = AgentIdentity.generate()
    raw = await transport_factory.new("mitm")
    mode: list[str] = []

    async def answer(message: Message) -> None:
        assert message.reply
        request_id = msgpack.unpackb(msgpack.unpackb(message.data)[2])[1]
        if mode[-1] == "forged-signature":
            envelope = new_envelope(
                sender=bob.did,
                type="echo.reply",
                recipient=alice.did,
                body=b"",
                now_ms=now_ms(),
                correlation_id=request_id,
            )
            payload = encode_payload(envelope)
            frame = encode_frame(bob.did, payload, mallory.sign(SIGNING_DOMAIN + payload))
        elif mode[-1] == "wrong-sender":
            frame = seal_envelope(
                new_envelope(
                    sender=mallory.did,
                    type="echo.reply",
                    recipient=alice.did,
                    body=b"",
                    now_ms=now_ms(),
                    correlation_id=request_id,
                ),
                mallory,
            )
        elif mode[-1] == "wrong-correlation":
            frame = seal_envelope(
                new_envelope(
                    sender=bob.did,
                    type="echo.reply",
                    recipient=alice.did,
                    body=b"",
                    now_ms=now_ms(),
                    correlation_id=b"\x07" * 16,
                ),
                bob,
            )
        else:  # addressed to someone else
            frame = seal_envelope(
                new_envelope(
                    sender=bob.did,
                    type="echo.reply",
                    recipient=mallory.did,
                    body=b"",
                    now_ms=now_ms(),
                    correlation_id=request_id,
                ),
                bob,
            )
        await raw.publish(message.reply, frame)

    await raw.subscribe(alice.addressing.inbox(bob.did), answer)
    await raw.flush()
    for name in ("forged-signature", "wrong-sender", "wrong-correlation", "wrong-audience"):
        mode.append(name)
        with pytest.raises(RequestTimeout):
            await alice.request(bob.did, "echo", b"", timeout=0.5)
    assert codes(alice) == ["bad_signature", "sender_mismatch", "sender_mismatch", "wrong_audience"]


async def test_handshake_replay_and_splice_over_the_transport(
    make_node: NodeMaker, transport_factory: TransportFactory
) -> None:
    alice, bob = await make_node(), await make_node()
    raw = await transport_factory.new("eve")
    hellos = Recorder()
    subject = bob.addressing.handshake(bob.did)
    await raw.subscribe(subject, hellos)
    await raw.flush()
    await alice.handshake(bob.did)
    await hellos.wait_for(2)  # HELLO and CONFIRM
    hello_step, confirm_step = hellos.payloads[:2]

    replayed = decode_reply((await raw.request(subject, hello_step, timeout=2)).data)
    assert replayed[0] == "refused"
    replayed_confirm = decode_reply((await raw.request(subject, confirm_step, timeout=2)).data)
    assert replayed_confirm[0] == "refused"

    # Splice: a fresh session of alice's, finished with the old session's CONFIRM.
    clock = ManualClock(now_ms())
    fresh = HandshakeInitiator(alice.identity, bob.did, clock=clock)
    accepted = decode_reply(
        (await raw.request(subject, encode_step("hello", fresh.hello()), timeout=2)).data
    )
    assert accepted[0] == "accept"
    spliced = msgpack.unpackb(confirm_step)[1]
    answer = decode_reply(
        (await raw.request(subject, encode_step("confirm", spliced), timeout=2)).data
    )
    assert answer[0] == "refused"
    assert answer[2]  # a reason is given
    assert len(bob.sessions.sessions) == 1  # only the genuine session
    refusals = [
        e
        for e in bob.audit
        if e.kind == "handshake"  # type: ignore[attr-defined]
        and e.code != "established"
    ]
    assert len(refusals) == 3
    assert bob.counters.rejected["handshake_failed"] == 3
