"""JetStream KV buckets, streams and durable consumers behind the transport protocols.

Used by :class:`~agentmesh.transport.nats.NatsTransport`; every nats-py call runs
inside :func:`~agentmesh.transport.nats_errors.translated_errors` and under the
caller's ``timeout``. Iterators (KV ``watch``, stream ``read``) are ordered push
consumers feeding an ``asyncio.Queue``; they end when the caller stops iterating
or the transport closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Protocol, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue as NatsKV

from agentmesh.errors import (
    KeyExists,
    KeyNotFound,
    PayloadTooLarge,
    PermissionDenied,
    RequestTimeout,
    StreamError,
)
from agentmesh.transport.base import KVEntry, KVOperation, PublishAck, StreamMessage
from agentmesh.transport.nats_errors import translated_errors
from agentmesh.transport.nats_resume import ResumingSubscription, Unsubscribable
from agentmesh.transport.subjects import (
    tokens_match,
    validate_kv_key,
    validate_name,
    validate_subject,
)

MSG_ID_HEADER = "Nats-Msg-Id"
_KV_OPERATION_HEADER = "KV-Operation"
_KV_DELETE_OPERATIONS = frozenset({"DEL", "PURGE"})
_ITERATOR_INACTIVE_THRESHOLD = 300.0  # server-side cleanup if a client vanishes
# An ordered consumer whose server died (on a cluster it may live on another server
# than the client's) is re-created after two missed heartbeats: 2 s, not nats-py's 10.
_IDLE_HEARTBEAT = 1.0

_T = TypeVar("_T")


class JetStreamOwner(Protocol):
    """What the JetStream handles need from the transport that created them."""

    @property
    def js(self) -> JetStreamContext: ...

    @property
    def max_payload(self) -> int: ...

    def check_open(self) -> None: ...

    def on_close(self, callback: Callable[[], None]) -> int: ...

    def discard(self, token: int) -> None: ...

    def adopt(self, subscription: Unsubscribable) -> None:
        """Unsubscribe ``subscription`` when the transport closes, before draining."""
        ...

    def release(self, subscription: Unsubscribable) -> None: ...

    def on_reconnect(self, callback: Callable[[], None]) -> int:
        """Run ``callback`` after each reconnect (ordered consumers start again)."""
        ...

    def discard_reconnect(self, token: int) -> None: ...

    def denied_since(self, started: float, subject: str | None = None) -> PermissionDenied | None:
        """The broker's refusal (of ``subject``, or of anything) since ``started``, if any."""
        ...


async def _call(
    owner: JetStreamOwner,
    awaitable: Awaitable[_T],
    timeout: float,
    *,
    on_key_exists: bool = False,
    expected_revision: int | None = None,
) -> _T:
    """Await a nats-py call under ``timeout``; a timeout the broker caused is PermissionDenied.

    A JetStream write or API call the broker refuses never gets an answer: the
    server only tells the connection, asynchronously, that it refused the publish.
    """
    started = time.monotonic()
    try:
        with translated_errors(on_key_exists=on_key_exists, expected_revision=expected_revision):
            return await asyncio.wait_for(awaitable, timeout)
    except RequestTimeout:
        denied = owner.denied_since(started)
        if denied is not None:
            raise denied from None
        raise


def _check_size(data: bytes, limit: int) -> None:
    if len(data) > limit:
        raise PayloadTooLarge(f"payload of {len(data)} bytes exceeds max_payload {limit}")


def _from_seq(start_seq: int) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq
    )


def _msg_id(msg: Msg) -> str | None:
    return msg.headers.get(MSG_ID_HEADER) if msg.headers else None


class NatsKeyValue:
    """A JetStream KV bucket; implements :class:`~agentmesh.transport.base.KeyValue`."""

    def __init__(self, kv: NatsKV, bucket: str, owner: JetStreamOwner) -> None:
        self._kv = kv
        self._bucket = bucket
        self._stream = f"KV_{bucket}"
        self._prefix = f"$KV.{bucket}."
        self._owner = owner

    @property
    def bucket(self) -> str:
        return self._bucket

    def _precheck(self, key: str) -> None:
        validate_kv_key(key)
        self._owner.check_open()

    async def get(self, key: str, *, timeout: float = 2.0) -> KVEntry:
        """The current value of ``key``.

        Raises:
            KeyNotFound: The key was never written, is deleted or expired.
            InvalidSubject: The key is malformed.
            RequestTimeout: No answer within ``timeout``.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        entry = await _call(self._owner, self._kv.get(key), timeout)
        if entry.revision is None:  # pragma: no cover - the server always sets it
            raise KeyNotFound(f"{self._bucket}/{key} has no revision")
        return KVEntry(self._bucket, key, entry.value or b"", entry.revision)

    async def put(self, key: str, value: bytes, *, timeout: float = 2.0) -> int:
        """Unconditional write; returns the new revision.

        Raises:
            PayloadTooLarge: ``value`` is above max_payload.
            InvalidSubject: The key is malformed.
            RequestTimeout: No answer within ``timeout``.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        _check_size(value, self._owner.max_payload)
        return await _call(self._owner, self._kv.put(key, bytes(value)), timeout)

    async def create(self, key: str, value: bytes, *, timeout: float = 2.0) -> int:
        """Write only if ``key`` does not exist (deleted or expired keys count as absent).

        Raises:
            KeyExists: The key has a live value.
            PayloadTooLarge: ``value`` is above max_payload.
            InvalidSubject: The key is malformed.
            RequestTimeout: No answer within ``timeout``.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        _check_size(value, self._owner.max_payload)
        return await _call(
            self._owner, self._kv.create(key, bytes(value)), timeout, on_key_exists=True
        )

    async def update(
        self, key: str, value: bytes, *, last_revision: int, timeout: float = 2.0
    ) -> int:
        """Compare-and-set: write only if the key's newest revision is ``last_revision``.

        Raises:
            RevisionMismatch: The key is at another revision (``expected`` is set).
            PayloadTooLarge: ``value`` is above max_payload.
            InvalidSubject: The key is malformed.
            RequestTimeout: No answer within ``timeout``.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        _check_size(value, self._owner.max_payload)
        return await _call(
            self._owner,
            self._kv.update(key, bytes(value), last=last_revision),
            timeout,
            expected_revision=last_revision,
        )

    async def delete(self, key: str, *, timeout: float = 2.0) -> None:
        """Write a tombstone (a DELETE entry with its own revision).

        Raises:
            InvalidSubject: The key is malformed.
            RequestTimeout: No answer within ``timeout``.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        await _call(self._owner, self._kv.delete(key), timeout)

    async def history(self, key: str, *, timeout: float = 2.0) -> list[KVEntry]:
        """The stored revisions of ``key``, oldest first (deletes included).

        Raises:
            InvalidSubject: The key is malformed.
            RequestTimeout: No answer within ``timeout``.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        try:
            entries = await _call(self._owner, self._kv.history(key), timeout)
        except KeyNotFound:
            return []
        out = []
        for entry in entries:
            deleted = entry.operation in _KV_DELETE_OPERATIONS
            operation = KVOperation.DELETE if deleted else KVOperation.PUT
            revision = entry.revision or 0
            out.append(KVEntry(self._bucket, key, entry.value or b"", revision, operation))
        return out

    async def incarnation(self, *, timeout: float = 2.0) -> str | None:
        """The bucket stream's creation time (a new one after a delete), ``None`` if gone.

        Raises:
            RequestTimeout: No answer within ``timeout``.
            NotConnected: The transport is not connected.
        """
        self._owner.check_open()
        try:
            info = await _call(self._owner, self._owner.js.stream_info(self._stream), timeout)
        except StreamError as exc:
            if "not found" in str(exc).lower():
                return None
            raise
        return str(info.created)

    async def keys(self, *, timeout: float = 2.0) -> list[str]:
        """Live keys, sorted.

        Raises:
            RequestTimeout: No answer within ``timeout``.
            NotConnected: The transport is not connected.
        """
        self._owner.check_open()
        with translated_errors():
            return await _call(self._owner, self._list_keys(), timeout)

    async def _list_keys(self) -> list[str]:
        """The last message of every key, counted by the server, minus deleted keys.

        Not nats-py's ``keys()``: it decides the listing is complete from the
        client's delivered count next to the server's pending count, so messages
        already sent but not yet processed make it return too few keys (seen as a
        saga replica that found no unfinished saga). Here the number to read is the
        server's own: delivered so far plus pending, at the consumer's creation.
        """
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_message(msg: Msg) -> None:
            queue.put_nowait(msg)

        subscription = await self._owner.js.subscribe(
            self._prefix + ">",
            stream=self._stream,
            cb=on_message,
            ordered_consumer=True,
            idle_heartbeat=_IDLE_HEARTBEAT,
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            headers_only=True,
            inactive_threshold=_ITERATOR_INACTIVE_THRESHOLD,
        )
        try:
            info = await subscription.consumer_info()
            delivered = info.delivered.consumer_seq if info.delivered is not None else 0
            expected = (delivered or 0) + (info.num_pending or 0)
            live: set[str] = set()
            for _ in range(expected):
                msg = await queue.get()
                key = msg.subject[len(self._prefix) :]
                operation = msg.headers.get(_KV_OPERATION_HEADER) if msg.headers else None
                if operation in _KV_DELETE_OPERATIONS:
                    live.discard(key)
                else:
                    live.add(key)
            return sorted(live)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def watch(
        self, pattern: str = ">", *, on_ready: Callable[[], None] | None = None
    ) -> AsyncGenerator[KVEntry, None]:
        """Live values of keys matching ``pattern`` (revision order), then every change.

        Deletes older than the watch are not replayed; later ones arrive as
        ``KVOperation.DELETE`` entries. Ends when the transport closes.

        Raises:
            InvalidSubject: The pattern is malformed.
            NotConnected: The transport is not connected.
        """
        validate_kv_key(pattern, allow_wildcards=True)
        self._owner.check_open()
        js = self._owner.js
        # Every tombstone at or below this revision predates the watch: skipping
        # them makes the snapshot "live values only" without racing the server.
        info = await _call(self._owner, js.stream_info(self._stream), 5.0)
        boundary = info.state.last_seq
        queue: asyncio.Queue[KVEntry | None] = asyncio.Queue()
        prefix_len = len(self._prefix)

        async def on_message(msg: Msg) -> None:
            seq = msg.metadata.sequence.stream
            if not resuming.fresh(seq):
                return
            operation = msg.headers.get(_KV_OPERATION_HEADER) if msg.headers else None
            key = msg.subject[prefix_len:]
            pending = msg.metadata.num_pending or 0
            if operation in _KV_DELETE_OPERATIONS:
                if seq > boundary:
                    queue.put_nowait(
                        KVEntry(self._bucket, key, b"", seq, KVOperation.DELETE, pending)
                    )
            else:
                queue.put_nowait(KVEntry(self._bucket, key, msg.data, seq, pending=pending))

        async def subscribe(start_seq: int | None) -> Unsubscribable:
            # First the live values, then (after a reconnect) everything after the last seen.
            policy = (
                {"deliver_policy": api.DeliverPolicy.LAST_PER_SUBJECT}
                if start_seq is None
                else {"config": _from_seq(start_seq)}
            )
            with translated_errors():
                return await js.subscribe(
                    self._prefix + pattern,
                    stream=self._stream,
                    cb=on_message,
                    ordered_consumer=True,
                    idle_heartbeat=_IDLE_HEARTBEAT,
                    inactive_threshold=_ITERATOR_INACTIVE_THRESHOLD,
                    **policy,
                )

        resuming = ResumingSubscription(self._owner, subscribe, name=f"watch of {self._bucket}")
        await resuming.start()
        token = self._owner.on_close(lambda: queue.put_nowait(None))
        if on_ready is not None:
            on_ready()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            self._owner.discard(token)
            await resuming.close()


class NatsDurableConsumer:
    """A durable JetStream pull consumer; implements ``DurableConsumer``."""

    def __init__(
        self,
        stream: str,
        name: str,
        subscription: JetStreamContext.PullSubscription,
        owner: JetStreamOwner,
    ) -> None:
        self._stream = stream
        self._name = name
        self._subscription = subscription
        self._owner = owner
        self._fetched: dict[int, Msg] = {}

    @property
    def name(self) -> str:
        return self._name

    async def fetch(self, batch: int = 1, *, timeout: float = 1.0) -> list[StreamMessage]:
        """Up to ``batch`` messages; an empty list when none arrive within ``timeout``.

        Raises:
            ValueError: ``batch`` is below 1.
            NotConnected: The transport is not connected.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._owner.check_open()
        with translated_errors():
            try:
                msgs = await self._subscription.fetch(batch, timeout=max(timeout, 0.01))
            except TimeoutError:  # nats-py's fetch timeouts subclass the builtin one
                return []
        out: list[StreamMessage] = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            self._fetched[seq] = msg
            out.append(StreamMessage(self._stream, seq, msg.subject, msg.data, _msg_id(msg)))
        return out

    async def ack(self, message: StreamMessage, *, timeout: float = 2.0) -> None:
        """Acknowledge a message this object fetched; waits for the server to confirm.

        Raises:
            StreamError: This object did not fetch it, or it was acked already.
            RequestTimeout: No confirmation within ``timeout``.
            NotConnected: The transport is not connected.
        """
        self._owner.check_open()
        msg = self._fetched.get(message.seq) if message.stream == self._stream else None
        if msg is None:
            raise StreamError(
                f"{message.stream}#{message.seq} is not pending on consumer {self._name!r}"
            )
        with translated_errors():
            await msg.ack_sync(timeout=timeout)
        del self._fetched[message.seq]


class NatsStream:
    """A JetStream stream; implements :class:`~agentmesh.transport.base.Stream`."""

    def __init__(self, name: str, subjects: list[str], owner: JetStreamOwner) -> None:
        self._name = name
        self._subject_tokens = [s.split(".") for s in subjects]
        self._owner = owner

    @property
    def name(self) -> str:
        return self._name

    async def append(
        self, subject: str, data: bytes, *, msg_id: str | None = None, timeout: float = 2.0
    ) -> PublishAck:
        """Store ``data`` under ``subject``; a repeated ``msg_id`` is not stored twice.

        Raises:
            InvalidSubject: ``subject`` is malformed or has wildcards.
            StreamError: The stream does not capture ``subject``.
            PayloadTooLarge: ``data`` is above max_payload.
            RequestTimeout: No acknowledgement within ``timeout``.
            NotConnected: The transport is not connected.
        """
        validate_subject(subject, allow_wildcards=False)
        self._owner.check_open()
        tokens = subject.split(".")
        if not any(tokens_match(p, tokens) for p in self._subject_tokens):
            raise StreamError(f"stream {self._name!r} does not capture subject {subject!r}")
        _check_size(data, self._owner.max_payload)
        headers = None if msg_id is None else {MSG_ID_HEADER: msg_id}
        try:
            ack = await _call(
                self._owner,
                self._owner.js.publish(
                    subject, bytes(data), timeout=timeout, stream=self._name, headers=headers
                ),
                timeout + 0.5,
            )
        except KeyExists as exc:  # the subject's quota (max messages per subject) is full
            raise StreamError(
                f"subject {subject!r} of stream {self._name!r} is at its quota"
            ) from exc
        return PublishAck(ack.stream, ack.seq, duplicate=bool(ack.duplicate))

    async def last_seq(self, *, timeout: float = 2.0) -> int:
        """Sequence of the newest stored message (0 when empty).

        Raises:
            RequestTimeout: No answer within ``timeout``.
            NotConnected: The transport is not connected.
        """
        self._owner.check_open()
        info = await _call(self._owner, self._owner.js.stream_info(self._name), timeout)
        return info.state.last_seq

    async def first_seq(self, *, timeout: float = 2.0) -> int:
        """Sequence of the oldest stored message (``last_seq + 1`` when none is stored).

        Raises:
            RequestTimeout: No answer within ``timeout``.
            NotConnected: The transport is not connected.
        """
        self._owner.check_open()
        state = (await _call(self._owner, self._owner.js.stream_info(self._name), timeout)).state
        return state.last_seq + 1 if not state.messages else state.first_seq

    async def read(
        self, *, start_seq: int = 1, subject: str | None = None
    ) -> AsyncGenerator[StreamMessage, None]:
        """Stored messages from ``start_seq`` on, then live appends, in order.

        Raises:
            ValueError: ``start_seq`` is below 1.
            InvalidSubject: ``subject`` is malformed.
            NotConnected: The transport is not connected.
        """
        if start_seq < 1:
            raise ValueError("start_seq must be at least 1")
        if subject is not None:
            validate_subject(subject, allow_wildcards=True)
        self._owner.check_open()
        queue: asyncio.Queue[StreamMessage | None] = asyncio.Queue()

        async def on_message(msg: Msg) -> None:
            seq = msg.metadata.sequence.stream
            if resuming.fresh(seq):
                queue.put_nowait(
                    StreamMessage(self._name, seq, msg.subject, msg.data, _msg_id(msg))
                )

        async def subscribe(resume_seq: int | None) -> Unsubscribable:
            with translated_errors():
                return await self._owner.js.subscribe(
                    subject or "",  # empty: no filter, every subject of the stream
                    stream=self._name,
                    cb=on_message,
                    config=_from_seq(start_seq if resume_seq is None else resume_seq),
                    ordered_consumer=True,
                    idle_heartbeat=_IDLE_HEARTBEAT,
                    inactive_threshold=_ITERATOR_INACTIVE_THRESHOLD,
                )

        resuming = ResumingSubscription(self._owner, subscribe, name=f"reader of {self._name}")
        await resuming.start()
        token = self._owner.on_close(lambda: queue.put_nowait(None))
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            self._owner.discard(token)
            await resuming.close()

    async def consumer(
        self, durable: str, *, subject: str | None = None, ack_wait: float = 30.0
    ) -> NatsDurableConsumer:
        """Create-or-bind the durable pull consumer ``durable``.

        Raises:
            InvalidSubject: ``durable`` or ``subject`` is malformed.
            StreamError: ``durable`` exists with another subject filter.
            NotConnected: The transport is not connected.
        """
        validate_name(durable, what="consumer name")
        if subject is not None:
            validate_subject(subject, allow_wildcards=True)
        self._owner.check_open()
        js = self._owner.js
        with translated_errors():
            try:
                info = await js.consumer_info(self._name, durable)
            except nats.js.errors.NotFoundError:
                await js.add_consumer(
                    self._name,
                    api.ConsumerConfig(
                        name=durable,
                        durable_name=durable,
                        deliver_policy=api.DeliverPolicy.ALL,
                        ack_policy=api.AckPolicy.EXPLICIT,
                        ack_wait=ack_wait,
                        filter_subject=subject,
                    ),
                )
            else:
                existing: str | None = info.config.filter_subject or None
                if existing != subject:
                    raise StreamError(
                        f"consumer {durable!r} exists with filter {existing!r}, not {subject!r}"
                    )
            subscription = await js.pull_subscribe_bind(durable=durable, stream=self._name)
        # Pull subscriptions must be unsubscribed, not drained: nats-py's drain waits
        # for their pending queue, which fetch() never marks done.
        self._owner.adopt(subscription)
        return NatsDurableConsumer(self._name, durable, subscription, self._owner)
