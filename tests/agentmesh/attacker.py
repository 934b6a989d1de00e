"""An attacker process with a raw nats-py client (no agentmesh transport).

It eavesdrops on every agent inbox of a mesh, captures one genuine request
frame, then injects: the frame replayed, the frame tampered, the frame sent to
the wrong agent, a frame forged in the sender's name, and garbage. It prints one
JSON line describing what it sent to whom, for the test to check the victims'
counters and audit logs.

    python -m tests.agentmesh.attacker NATS_URL MESH DID [DID ...]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import nats

from iatp.envelope import (
    SIGNING_DOMAIN,
    encode_frame,
    encode_payload,
    new_envelope,
    parse_frame,
)
from iatp.identity import AgentIdentity


def inbox(mesh: str, did: str) -> str:
    return f"{mesh}.agent.{did[len('did:key:') :]}.inbox"


async def attack(url: str, mesh: str, dids: list[str]) -> dict[str, object]:
    client = await nats.connect(url, name="attacker")
    captured: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def on_message(message: nats.aio.msg.Msg) -> None:
        captured.put_nowait((message.subject, message.data))

    await client.subscribe(f"{mesh}.agent.*.inbox", cb=on_message)
    await asyncio.sleep(0)
    await client.flush()
    subject, frame_bytes = await asyncio.wait_for(captured.get(), timeout=20)
    frame = parse_frame(frame_bytes)
    victim = next(did for did in dids if inbox(mesh, did) == subject)
    claimed_sender = frame.sender
    bystander = next(did for did in dids if did not in (victim, claimed_sender))

    tampered = bytearray(frame_bytes)
    tampered[-70] ^= 0x01  # inside the payload's body, just before the signature
    attacker = AgentIdentity.generate()
    forged_envelope = new_envelope(
        sender=claimed_sender,
        type="mesh.echo",
        recipient=victim,
        body=b"pay the attacker",
        now_ms=_now_ms(),
    )
    payload = encode_payload(forged_envelope)
    forged = encode_frame(claimed_sender, payload, attacker.sign(SIGNING_DOMAIN + payload))

    sent = {
        "replayed": [victim],
        "bad_signature": [victim, victim],
        "wrong_audience": [bystander],
        "malformed": [victim],
    }
    await client.publish(subject, frame_bytes)  # replay
    await client.publish(subject, bytes(tampered))  # tampered
    await client.publish(subject, forged)  # forged in claimed_sender's name
    await client.publish(inbox(mesh, bystander), frame_bytes)  # valid, but not for bystander
    await client.publish(subject, b"\x93\x01\x02")  # garbage
    await client.flush()
    await client.drain()
    return {
        "victim": victim,
        "claimed_sender": claimed_sender,
        "bystander": bystander,
        "sent": sent,
    }


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def main() -> None:
    url, mesh, *dids = sys.argv[1:]
    print(json.dumps(asyncio.run(attack(url, mesh, dids))), flush=True)


if __name__ == "__main__":
    main()
