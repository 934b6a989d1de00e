"""Scale-out: one agent identity served by P member processes, one partition each.

Replay protection is a per-process cache (:class:`~iatp.replay.ReplayCache`). A
plain NATS queue group in front of k processes of one identity would break it: a
captured envelope replayed into the group lands on a member that never saw it.
So the identity's traffic is *partitioned*, not load-balanced (docs/scaleout.md):

* every frame has a **partition key**: the envelope id for signed and sealed
  frames, the session id for session frames and handshake steps;
* its **owner** is ``partition_of(key, P)`` (BLAKE2b of the key, mod ``P``);
* member ``i`` of ``P`` serves ``{mesh}.agent.{key}.{kind}.{P}.{i}`` and admits
  only frames it owns: anything else is refused as ``wrong_partition``
  (counted, audited), *before* the replay cache, so a replay always meets the
  one cache that remembers its id;
* a sender that knows ``P`` (:class:`PeerPartitions`) publishes straight to the
  owner's subject; a sender that does not uses the plain subjects, which the
  members share as a queue group and hand to the owner (:class:`PartitionForwarder`:
  one extra hop, no trust decision: the owner checks everything);
* a session lives in the one member that owns its session id: a member answers
  only HELLOs it owns and picks the ids of the sessions it opens so that it owns
  them (:func:`session_id_source`), so a session frame always reaches the keys.

Pure helpers plus the forwarder; :class:`~agentmesh.node.node.MeshNode` wires
them (``NodeConfig.partition``, ``node.partitions``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

import msgpack

from agentmesh.node.addressing import MeshAddressing
from agentmesh.transport.base import Message, Subscription, Transport
from iatp.envelope import EnvelopeLimits, parse_frame
from iatp.errors import EnvelopeError
from iatp.handshake import SESSION_ID_BYTES
from iatp.identity import AgentIdentity
from iatp.sealed import open_sealed_frame, parse_sealed_frame
from iatp.session_frame import parse_session_frame

MAX_PARTITIONS: Final = 1024
_PERSON: Final = b"agentmesh/part"
KINDS: Final = ("inbox", "sealed", "session", "handshake")
"""The per-agent subjects that are partitioned (topics and control subjects are not)."""


class WrongPartition(EnvelopeError):
    """The frame's partition key belongs to another member of this identity."""

    code = "wrong_partition"


@dataclass(frozen=True, slots=True)
class Partition:
    """This process is member ``index`` of ``count`` serving one identity.

    Raises:
        ValueError: ``count`` outside 1..MAX_PARTITIONS or ``index`` outside 0..count-1.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_PARTITIONS:
            raise ValueError(f"partition count must be 1..{MAX_PARTITIONS}, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition index must be 0..{self.count - 1}, not {self.index}")

    @classmethod
    def parse(cls, text: str) -> Partition:
        """``"I/P"`` (member I of P, I counted from 0).

        Raises:
            ValueError: not of that form, or out of range.
        """
        index, sep, count = text.partition("/")
        if not sep or not index.isdigit() or not count.isdigit():
            raise ValueError(f"{text!r} is not I/P (member I of P, I from 0)")
        return cls(int(index), int(count))

    def owns(self, key: bytes) -> bool:
        return partition_of(key, self.count) == self.index

    def check(self, key: bytes, *, envelope_id: bytes | None, sender: str | None) -> None:
        """Refuse a frame whose partition key this member does not own.

        Raises:
            WrongPartition: the key belongs to another member.
        """
        owner = partition_of(key, self.count)
        if owner != self.index:
            raise WrongPartition(
                f"partition {owner} of {self.count} owns this frame; this is member {self.index}",
                envelope_id=envelope_id,
                sender=sender,
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def partition_of(key: bytes, count: int) -> int:
    """The member (0..count-1) that owns partition key ``key`` (an envelope or session id).

    ``int(BLAKE2b-64(key, person="agentmesh/part"), big-endian) mod count``: a
    fixed function every sender and member computes alike.
    """
    if count == 1:
        return 0
    digest = hashlib.blake2b(key, digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "big") % count


def partition_subject(subject: str, count: int, index: int) -> str:
    """``{mesh}.agent.{key}.{kind}`` -> the subject of member ``index`` of ``count``."""
    return f"{subject}.{count}.{index}"


def session_id_source(
    partition: Partition, random_bytes: Callable[[int], bytes] = os.urandom
) -> Callable[[int], bytes]:
    """Randomness for a handshake this member opens: session ids it owns, the rest as is.

    Drawing until the id falls in the partition costs ``count`` draws on average.
    """

    def draw(size: int) -> bytes:
        value = random_bytes(size)
        if size != SESSION_ID_BYTES:
            return value
        while not partition.owns(value):
            value = random_bytes(size)
        return value

    return draw


class PeerPartitions:
    """DID -> how many members serve it; senders route each frame to its owner.

    Peers not listed are one process (or reached through the queue-group subjects,
    which forward): nothing changes for them.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def set(self, did: str, count: int) -> None:
        """``did`` is served by ``count`` members (1 removes it).

        Raises:
            InvalidDID: ``did`` is not an Ed25519 did:key.
            ValueError: ``count`` outside 1..MAX_PARTITIONS.
        """
        MeshAddressing.agent_key(did)
        Partition(0, count)
        if count == 1:
            self._counts.pop(did, None)
        else:
            self._counts[did] = count

    def count(self, did: str) -> int:
        return self._counts.get(did, 1)

    def subject(self, did: str, subject: str, key: bytes) -> str:
        """The owner's subject for a frame to ``did`` with partition key ``key``."""
        count = self._counts.get(did)
        if count is None:
            return subject
        return partition_subject(subject, count, partition_of(key, count))

    def __bool__(self) -> bool:
        return bool(self._counts)

    def __len__(self) -> int:
        return len(self._counts)


# --------------------------------------------------------------------------- partition keys


def envelope_id_of(data: bytes, limits: EnvelopeLimits) -> bytes | None:
    """The id in a signed frame's payload, read *without* verifying (for routing only)."""
    try:
        payload = parse_frame(data, limits).payload
        fields = msgpack.unpackb(payload, raw=False, max_ext_len=0)
    except (EnvelopeError, ValueError, TypeError, msgpack.UnpackException, RecursionError):
        return None
    if isinstance(fields, list) and len(fields) > 1 and isinstance(fields[1], bytes):
        return fields[1]
    return None


def handshake_session_id(data: bytes) -> bytes | None:
    """The session id a handshake step (``[step, signed message]``) names, unverified."""
    try:
        step = msgpack.unpackb(data, raw=False, max_ext_len=0)
        body = msgpack.unpackb(step[1], raw=False, max_ext_len=0)[0]
        session_id = msgpack.unpackb(body, raw=False, max_ext_len=0)[1]
    except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException, RecursionError):
        return None
    return session_id if isinstance(session_id, bytes) else None


# --------------------------------------------------------------------------- forwarding

Handler = Callable[[Message], Awaitable[None]]


class PartitionForwarder:
    """The members' shared plain subjects: each frame goes to the member that owns it.

    Every member subscribes to the identity's plain subjects in one queue group,
    so each frame reaches one member; that member reads the frame's partition key
    (without verifying anything: routing only) and either handles the frame
    itself (it owns it) or republishes it unchanged, reply subject included, to
    the owner's partition subject. A frame whose key cannot be read is handled
    locally, where it is rejected, counted and audited like any malformed frame.
    Sealed frames are opened to read the id (every member holds the key) and
    forwarded still sealed.
    """

    def __init__(
        self,
        partition: Partition,
        *,
        identity: AgentIdentity,
        transport: Transport,
        addressing: MeshAddressing,
        limits: EnvelopeLimits,
        local: Mapping[str, Handler],
        on_forward: Callable[[str], None],
    ) -> None:
        self.partition = partition
        self._identity = identity
        self._transport = transport
        self._addressing = addressing
        self._limits = limits
        self._local = dict(local)
        self._on_forward = on_forward

    @property
    def queue(self) -> str:
        """The queue group of the members of this identity (one per partition count)."""
        return f"members-{self.partition.count}"

    def subjects(self) -> dict[str, str]:
        """kind -> the plain subject of this identity."""
        did = self._identity.did
        address = self._addressing
        return {
            "inbox": address.inbox(did),
            "sealed": address.sealed_inbox(did),
            "session": address.session_inbox(did),
            "handshake": address.handshake(did),
        }

    async def subscribe(self) -> list[Subscription]:
        """The member's own partition subjects (direct) and the shared plain ones."""
        subscriptions: list[Subscription] = []
        p = self.partition
        for kind, subject in self.subjects().items():
            handler = self._local[kind]
            subscriptions.append(
                await self._transport.subscribe(
                    partition_subject(subject, p.count, p.index), handler
                )
            )
            subscriptions.append(
                await self._transport.subscribe(
                    subject, self._router(kind, subject, handler), queue=self.queue
                )
            )
        return subscriptions

    def key_of(self, kind: str, data: bytes) -> bytes | None:
        if kind == "inbox":
            return envelope_id_of(data, self._limits)
        if kind == "sealed":
            try:
                inner = open_sealed_frame(parse_sealed_frame(data, self._limits), self._identity)
            except EnvelopeError:
                return None
            return envelope_id_of(inner, self._limits)
        if kind == "session":
            try:
                return parse_session_frame(data, self._limits).session_id
            except EnvelopeError:
                return None
        return handshake_session_id(data)

    def _router(self, kind: str, subject: str, handler: Handler) -> Handler:
        p = self.partition

        async def route(message: Message) -> None:
            key = self.key_of(kind, message.data)
            owner = p.index if key is None else partition_of(key, p.count)
            if owner == p.index:
                await handler(message)
                return
            self._on_forward(kind)
            await self._transport.publish(
                partition_subject(subject, p.count, owner),
                message.data,
                reply=message.reply,
                headers=message.headers or None,
            )

        return route


__all__ = [
    "KINDS",
    "MAX_PARTITIONS",
    "Partition",
    "PartitionForwarder",
    "PeerPartitions",
    "WrongPartition",
    "envelope_id_of",
    "handshake_session_id",
    "partition_of",
    "partition_subject",
    "session_id_source",
]
