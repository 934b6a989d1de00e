"""One identity served by two `agentmesh node run --partition I/2` processes.

Over a real nats-server: both members answer requests (from a sender that knows
the partition count and from one that does not); a captured envelope replayed to
the other member, to its owner and to the shared plain subject is refused each
time, counted and audited by the member that saw it; when a member dies, its
partition fails (fast for a sender that routes by partition) and the other
member goes on serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from agentmesh.audit import read_jsonl_audit
from agentmesh.errors import NoResponders, RequestTimeout
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.node.partitions import partition_of, partition_subject
from agentmesh.node.runner import ECHO_TYPE
from agentmesh.transport.nats import NatsTransport
from iatp.clock import SystemClock
from iatp.envelope import new_envelope, seal_envelope
from iatp.identity import AgentIdentity
from iatp.keystore import save_identity
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

PASSPHRASE = "correct horse battery staple"
MESH = "scaleout"
P = 2


class Member:
    def __init__(self, process: asyncio.subprocess.Process, audit: Path) -> None:
        self.process = process
        self.audit = audit
        self.events: list[dict[str, object]] = []

    async def next_event(self, name: str, timeout: float = 30.0) -> dict[str, object]:
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not line:
                raise AssertionError(f"member exited before {name!r}: {self.events}")
            event: dict[str, object] = json.loads(line)
            self.events.append(event)
            if event["event"] == name:
                return event

    def rejected(self, code: str) -> int:
        return [e.code for e in read_jsonl_audit(self.audit) if e.kind == "rejected"].count(code)


async def start_member(
    url: str, tmp: Path, identity: AgentIdentity, index: int, admit: str
) -> Member:
    key_file = tmp / "member.id"
    if not key_file.exists():
        save_identity(identity, key_file, PASSPHRASE)
    audit = tmp / f"member{index}.audit.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentmesh",
        "node",
        "run",
        "--identity",
        str(key_file),
        "--passphrase-env",
        "AGENT_PASS",
        "--nats",
        url,
        "--mesh",
        MESH,
        "--partition",
        f"{index}/{P}",
        "--admit",
        admit,
        "--audit-log",
        str(audit),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "AGENT_PASS": PASSPHRASE},
    )
    return Member(process, audit)


def owned_frame(author: AgentIdentity, recipient: str, owner: int) -> bytes:
    while True:
        envelope = new_envelope(
            sender=author.did,
            type=ECHO_TYPE,
            recipient=recipient,
            body=b"captured",
            now_ms=SystemClock().now_ms(),
        )
        if partition_of(envelope.id, P) == owner:
            return seal_envelope(envelope, author)


async def stop(members: list[Member]) -> list[dict[str, object]]:
    for member in members:
        member.process.send_signal(signal.SIGTERM)
    stats = [await member.next_event("stats") for member in members]
    for member in members:
        assert await asyncio.wait_for(member.process.wait(), 15) == 0
    return stats


async def test_two_member_processes_share_an_identity_and_refuse_replays(
    tmp_path: Path,
) -> None:
    identity = AgentIdentity.generate()
    client_identity = AgentIdentity.generate()
    members: list[Member] = []
    with NatsServerProcess() as server:
        try:
            for index in range(P):
                members.append(
                    await start_member(server.url, tmp_path, identity, index, client_identity.did)
                )
            for index, member in enumerate(members):
                ready = await member.next_event("ready")
                assert (ready["did"], ready["partition"]) == (identity.did, f"{index}/{P}")
            async with (
                NatsTransport(server.url, name="client") as transport,
                MeshNode(client_identity, transport, config=NodeConfig(mesh=MESH)) as client,
            ):
                # Unaware of the partitions (plain subjects, forwarded), then aware.
                for i in range(20):
                    assert (await client.request(identity.did, ECHO_TYPE, b"%d" % i)).body
                client.partitions.set(identity.did, P)
                for i in range(20):
                    assert (await client.request(identity.did, ECHO_TYPE, b"%d" % i)).body
                keys = await client.handshake(identity.did)
                for _ in range(5):
                    await client.request(identity.did, ECHO_TYPE, b"s", via_session=True)
                # The attack: a captured envelope owned by member 0, delivered once.
                frame = owned_frame(client_identity, identity.did, owner=0)
                inbox = client.addressing.inbox(identity.did)
                reply = await transport.request(partition_subject(inbox, P, 0), frame, timeout=5)
                assert reply.data
                for subject in (partition_subject(inbox, P, 1), partition_subject(inbox, P, 0)):
                    await transport.publish(subject, frame)
                await transport.publish(inbox, frame)
                await transport.flush()
                await asyncio.sleep(0.5)  # let the members take them in before SIGTERM
            stats = await stop(members)
        finally:
            for member in members:
                if member.process.returncode is None:
                    member.process.kill()
                    await member.process.wait()
    handled = [int(str(s["handled"])) for s in stats]
    session_owner = partition_of(keys.session_id, P)
    assert sum(handled) == 20 + 20 + 5 + 1
    assert all(h >= 5 for h in handled), handled  # both served a share
    rejected = [dict(s["rejected"]) for s in stats]  # type: ignore[call-overload]
    assert rejected[1] == {"wrong_partition": 1}, rejected
    assert rejected[0] == {"replayed": 2}, rejected
    assert members[1].rejected("wrong_partition") == 1
    assert members[0].rejected("replayed") == 2
    assert handled[session_owner] >= 5


async def test_a_dead_member_leaves_its_partition_failing_fast(tmp_path: Path) -> None:
    identity = AgentIdentity.generate()
    client_identity = AgentIdentity.generate()
    members: list[Member] = []
    with NatsServerProcess() as server:
        try:
            for index in range(P):
                members.append(
                    await start_member(server.url, tmp_path, identity, index, client_identity.did)
                )
            for member in members:
                await member.next_event("ready")
            members[1].process.kill()
            await members[1].process.wait()
            outcomes: dict[bool, list[str]] = {True: [], False: []}
            async with (
                NatsTransport(server.url, name="client") as transport,
                MeshNode(client_identity, transport, config=NodeConfig(mesh=MESH)) as client,
            ):
                for aware in (True, False):
                    client.partitions.set(identity.did, P if aware else 1)
                    for i in range(16):
                        try:
                            await client.request(identity.did, ECHO_TYPE, b"%d" % i, timeout=1)
                            outcomes[aware].append("ok")
                        except NoResponders:
                            outcomes[aware].append("no_responders")
                        except RequestTimeout:
                            outcomes[aware].append("timeout")
            (stats,) = await stop(members[:1])
        finally:
            for member in members:
                if member.process.returncode is None:
                    member.process.kill()
                    await member.process.wait()
    # A sender that routes by partition learns at once that the owner is gone; one
    # that relies on forwarding waits out its timeout (the forwarding member cannot
    # see that nobody took the frame: docs/scaleout.md).
    assert set(outcomes[True]) == {"ok", "no_responders"}, outcomes
    assert set(outcomes[False]) == {"ok", "timeout"}, outcomes
    assert stats["handled"] == sum(seen.count("ok") for seen in outcomes.values())
    assert stats["rejected"] == {}
