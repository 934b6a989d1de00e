"""The transport seam: what the mesh needs from a message bus.

Two implementations ship: :class:`~agentmesh.transport.memory.InMemoryTransport`
(the embedded default, one process) and
:class:`~agentmesh.transport.nats.NatsTransport` (nats-py against a real
``nats-server`` with JetStream). Both follow NATS semantics, and one contract
test suite (``tests/agentmesh/transport``) runs against both.

Subjects are dot-separated tokens. ``*`` matches exactly one token, ``>`` matches
one or more trailing tokens and may only be the last token. Subscriptions with a
``queue`` name share the messages of their subject: each message goes to exactly
one member of each queue group (and to every plain subscriber).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, runtime_checkable


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Server-side limits of a KV bucket or stream, set when it is created.

    An existing bucket or stream keeps the limits it was created with, so the
    mesh authority provisions them once (``agentmesh mesh provision``) and every
    node binds to them.

    Attributes:
        max_bytes: Total stored bytes; when full, new writes are refused (nothing
            old is evicted). Enforced by nats-server only.
        max_value_size: Largest single value or message.
        write_once: KV only: a key keeps its first value for good; overwrites,
            deletes and purges of it are refused (``KeyExists``).
        per_subject_quota: Streams only: at most this many messages per subject;
            further appends to a full subject are refused, other subjects are not
            affected (so one writer cannot crowd out another).
        deny_purge: Refuse API purges of the whole store.
    """

    max_bytes: int | None = None
    max_value_size: int | None = None
    write_once: bool = False
    per_subject_quota: int | None = None
    deny_purge: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """One core message as delivered to a subscriber."""

    subject: str
    data: bytes
    reply: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


MessageHandler = Callable[[Message], Awaitable[None]]


@runtime_checkable
class Subscription(Protocol):
    """A live subscription; ``unsubscribe`` is idempotent."""

    @property
    def subject(self) -> str: ...

    async def unsubscribe(self) -> None: ...


class KVOperation(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class KVEntry:
    """A key's value at one revision. Deletions arrive with ``operation=DELETE``.

    ``pending`` (watches only): how many later changes the store still had to
    deliver to this watch when it sent this one (JetStream's consumer
    ``num_pending``): the watcher's lag behind the bucket. Not part of equality.
    """

    bucket: str
    key: str
    value: bytes
    revision: int
    operation: KVOperation = KVOperation.PUT
    pending: int = field(default=0, compare=False)


@runtime_checkable
class KeyValue(Protocol):
    """A key-value bucket with per-bucket monotonic revisions and compare-and-set.

    Keys are NATS-subject-safe tokens separated by dots (``[A-Za-z0-9_=.-]``).
    """

    @property
    def bucket(self) -> str: ...

    async def get(self, key: str, *, timeout: float = 2.0) -> KVEntry:
        """Raises: KeyNotFound (also for a deleted key)."""
        ...

    async def put(self, key: str, value: bytes, *, timeout: float = 2.0) -> int:
        """Unconditional write; returns the new revision."""
        ...

    async def create(self, key: str, value: bytes, *, timeout: float = 2.0) -> int:
        """Write only if the key does not exist (or is deleted). Raises: KeyExists."""
        ...

    async def update(
        self, key: str, value: bytes, *, last_revision: int, timeout: float = 2.0
    ) -> int:
        """Compare-and-set. Raises: RevisionMismatch when the key moved on."""
        ...

    async def delete(self, key: str, *, timeout: float = 2.0) -> None: ...

    async def keys(self, *, timeout: float = 2.0) -> list[str]:
        """Live (non-deleted) keys, sorted."""
        ...

    async def history(self, key: str, *, timeout: float = 2.0) -> list[KVEntry]:
        """The stored revisions of ``key``, oldest first (deletes included; as many
        as the bucket's ``history`` keeps). Empty when the key was never written."""
        ...

    async def incarnation(self, *, timeout: float = 2.0) -> str | None:
        """A token of the bucket's current incarnation on the server, ``None`` if it is gone.

        Someone may delete a bucket and someone else recreate it: a watch on the
        old incarnation then waits forever, so watchers compare tokens."""
        ...

    def watch(
        self, pattern: str = ">", *, on_ready: Callable[[], None] | None = None
    ) -> AsyncGenerator[KVEntry, None]:
        """Current values of matching keys first, then every later change.

        The snapshot holds live values only (in revision order); later deletes
        arrive as ``KVOperation.DELETE`` entries. The generator starts when first
        iterated, ends when the transport closes, and never misses a change
        between the snapshot and the live updates. Every revision the bucket
        still holds is delivered: in a bucket with ``history=1`` (one value per
        key), a watch that lags behind a burst of writes to one key may get only
        the newest of them, never an older value after a newer one; use a history
        that covers the bursts when every intermediate value matters. Close it (``aclose()``, e.g.
        with ``contextlib.aclosing``) to release the server-side consumer.
        ``on_ready`` is called once the watch is established (on a server: its
        consumer exists), before the first entry: every write after that call is
        seen, which a caller that starts the watch in a task can wait for.
        """
        ...


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """A message stored in a stream, with its 1-based sequence number."""

    stream: str
    seq: int
    subject: str
    data: bytes
    msg_id: str | None = None


@dataclass(frozen=True, slots=True)
class PublishAck:
    stream: str
    seq: int
    duplicate: bool = False


@runtime_checkable
class Stream(Protocol):
    """An append-only log over a set of subjects (a JetStream stream).

    ``append`` with a ``msg_id`` already seen inside the de-duplication window
    stores nothing and returns the original sequence with ``duplicate=True``.
    """

    @property
    def name(self) -> str: ...

    async def append(
        self, subject: str, data: bytes, *, msg_id: str | None = None, timeout: float = 2.0
    ) -> PublishAck: ...

    async def last_seq(self, *, timeout: float = 2.0) -> int:
        """Sequence of the newest stored message (0 when empty)."""
        ...

    async def first_seq(self, *, timeout: float = 2.0) -> int:
        """Sequence of the oldest stored message (``last_seq + 1`` when none is stored)."""
        ...

    def read(
        self, *, start_seq: int = 1, subject: str | None = None
    ) -> AsyncGenerator[StreamMessage, None]:
        """Ordered read from ``start_seq`` of everything stored now, then live appends.

        ``subject`` (wildcards allowed) filters. The generator starts when first
        iterated and ends when the transport closes; close it (``aclose()``) to
        release the server-side consumer.
        """
        ...

    async def consumer(
        self, durable: str, *, subject: str | None = None, ack_wait: float = 30.0
    ) -> DurableConsumer:
        """A named, persistent position in the stream (a durable pull consumer).

        Create-or-bind: an existing durable keeps its position (and its original
        ``ack_wait``); binding it with a different ``subject`` filter raises
        StreamError. A fetched message not acked within ``ack_wait`` seconds is
        delivered again.
        """
        ...


@runtime_checkable
class DurableConsumer(Protocol):
    """At-least-once delivery with explicit acks; position survives reconnects.

    A fetched message that is not acked within ``ack_wait`` is delivered again.
    """

    @property
    def name(self) -> str: ...

    async def fetch(self, batch: int = 1, *, timeout: float = 1.0) -> list[StreamMessage]:
        """Up to ``batch`` messages; an empty list when none arrive before ``timeout``."""
        ...

    async def ack(self, message: StreamMessage, *, timeout: float = 2.0) -> None:
        """Acknowledge a message fetched by this consumer object.

        Raises: StreamError when this object did not fetch it (or acked it already).
        """
        ...


class TransportState(enum.Enum):
    """Lifecycle of a transport. ``CLOSED`` is final: a closed transport stays closed."""

    NEW = "new"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@runtime_checkable
class Transport(Protocol):
    """The message bus the mesh runs on. An async context manager.

    Every method raises :class:`~agentmesh.errors.NotConnected` outside of the
    connected state; nats-py errors are translated to
    :mod:`agentmesh.errors` at the boundary.
    """

    @property
    def max_payload(self) -> int: ...

    @property
    def is_connected(self) -> bool: ...

    @property
    def state(self) -> TransportState: ...

    async def connect(self, *, timeout: float = 5.0) -> None: ...

    async def aclose(self) -> None:
        """Idempotent: drains subscriptions, then closes."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None: ...

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str | None = None
    ) -> Subscription:
        """Register ``handler``; when this returns, the server knows the interest.

        Handlers of one subscription run one message at a time, in order.
        """
        ...

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Raises: RequestTimeout, NoResponders."""
        ...

    def new_inbox(self) -> str: ...

    async def flush(self, *, timeout: float = 2.0) -> None: ...

    async def key_value(
        self,
        bucket: str,
        *,
        history: int = 1,
        ttl: float | None = None,
        limits: StoreLimits | None = None,
    ) -> KeyValue:
        """Create-or-bind the bucket (``limits`` apply only when it is created)."""
        ...

    async def stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age: float | None = None,
        duplicate_window: float = 120.0,
        limits: StoreLimits | None = None,
    ) -> Stream:
        """Create-or-bind the stream (``limits`` apply only when it is created)."""
        ...
