"""The in-memory append-only stream: JetStream stream semantics without a server.

Sequences start at 1 and never go back, even when ``max_age`` drops old messages.
A ``msg_id`` seen within ``duplicate_window`` seconds is not stored again; the
append returns the original sequence with ``duplicate=True``. Durable consumers
keep their state (next sequence, unacknowledged deliveries and their deadlines)
on the stream, so a new consumer object with the same name, even from another
transport on the same bus, resumes where the previous one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from agentmesh.errors import PayloadTooLarge, StreamError
from agentmesh.transport.base import PublishAck, StoreLimits, StreamMessage
from agentmesh.transport.memory_link import TransportLink
from agentmesh.transport.subjects import (
    tokens_match,
    validate_name,
    validate_subject,
)

MSG_ID_HEADER = "Nats-Msg-Id"
"""The header that carries a message's de-duplication id (as in JetStream)."""


@dataclass(frozen=True, slots=True)
class _Stored:
    message: StreamMessage
    stored_at: float


class ConsumerState:
    """A durable consumer's position, kept on the stream so it outlives handles."""

    def __init__(self, name: str, filter_subject: str | None, ack_wait: float) -> None:
        self.name = name
        self.filter_subject = filter_subject
        self.filter_tokens = None if filter_subject is None else filter_subject.split(".")
        self.ack_wait = ack_wait
        self.next_seq = 1
        self.pending: dict[int, float] = {}  # stream seq -> redelivery deadline


class StreamState:
    """One stream's messages on the bus, shared by every transport bound to it."""

    def __init__(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        max_age: float | None,
        duplicate_window: float,
        monotonic: Callable[[], float],
        limits: StoreLimits | None = None,
    ) -> None:
        self.name = name
        self.limits = limits or StoreLimits()
        self._per_subject: dict[str, int] = {}
        self.subjects = list(subjects)
        self._subject_tokens = [s.split(".") for s in subjects]
        self.max_age = max_age
        self.duplicate_window = duplicate_window
        self._monotonic = monotonic
        self._messages: deque[_Stored] = deque()
        self._last_seq = 0
        self._seen_ids: dict[str, tuple[int, float]] = {}
        self._listeners: dict[int, Callable[[StreamMessage], None]] = {}
        self._next_listener = 0
        self.consumers: dict[str, ConsumerState] = {}

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def captures(self, subject_tokens: Sequence[str]) -> bool:
        return any(tokens_match(p, subject_tokens) for p in self._subject_tokens)

    def _expire(self) -> None:
        now = self._monotonic()
        if self.max_age is not None:
            while self._messages and now - self._messages[0].stored_at >= self.max_age:
                gone = self._messages.popleft().message.subject
                self._per_subject[gone] -= 1
        horizon = now - self.duplicate_window
        while self._seen_ids:  # insertion order is time order: expire from the front
            oldest = next(iter(self._seen_ids))
            if self._seen_ids[oldest][1] > horizon:
                break
            del self._seen_ids[oldest]

    def store(self, subject: str, data: bytes, msg_id: str | None) -> PublishAck:
        """Append (or recognise a duplicate) and wake readers and fetchers."""
        self._expire()
        if msg_id is not None and msg_id in self._seen_ids:
            return PublishAck(self.name, self._seen_ids[msg_id][0], duplicate=True)
        self._check_limits(subject, data)
        self._per_subject[subject] = self._per_subject.get(subject, 0) + 1
        self._last_seq += 1
        now = self._monotonic()
        message = StreamMessage(self.name, self._last_seq, subject, data, msg_id)
        self._messages.append(_Stored(message, now))
        if msg_id is not None:
            self._seen_ids[msg_id] = (self._last_seq, now)
        for listener in list(self._listeners.values()):
            listener(message)
        return PublishAck(self.name, self._last_seq)

    def _check_limits(self, subject: str, data: bytes) -> None:
        size, quota = self.limits.max_value_size, self.limits.per_subject_quota
        if size is not None and len(data) > size:
            raise PayloadTooLarge(f"message of {len(data)} bytes exceeds {self.name}'s {size}")
        if quota is not None and self._per_subject.get(subject, 0) >= quota:
            raise StreamError(f"subject {subject!r} of stream {self.name!r} is at its quota")

    def get(self, seq: int) -> StreamMessage | None:
        self._expire()
        if not self._messages:
            return None
        index = seq - self._messages[0].message.seq
        if 0 <= index < len(self._messages):
            return self._messages[index].message
        return None

    def first_seq(self) -> int:
        self._expire()
        return self._messages[0].message.seq if self._messages else self._last_seq + 1

    def stored_from(self, start_seq: int) -> list[StreamMessage]:
        self._expire()
        if not self._messages:
            return []
        skip = max(0, start_seq - self._messages[0].message.seq)
        return [s.message for s in itertools.islice(self._messages, skip, None)]

    def listen(self, listener: Callable[[StreamMessage], None]) -> int:
        self._next_listener += 1
        self._listeners[self._next_listener] = listener
        return self._next_listener

    def unlisten(self, token: int) -> None:
        self._listeners.pop(token, None)

    def take(self, consumer: ConsumerState, batch: int) -> list[StreamMessage]:
        """Due redeliveries first (oldest sequence first), then new messages."""
        now = self._monotonic()
        out: list[StreamMessage] = []
        for seq in sorted(consumer.pending):
            if len(out) == batch:
                break
            if consumer.pending[seq] > now:
                continue
            message = self.get(seq)
            if message is None:  # aged out while unacknowledged
                del consumer.pending[seq]
                continue
            consumer.pending[seq] = now + consumer.ack_wait
            out.append(message)
        consumer.next_seq = max(consumer.next_seq, self.first_seq())
        while len(out) < batch and consumer.next_seq <= self._last_seq:
            message = self.get(consumer.next_seq)
            consumer.next_seq += 1
            if message is None:
                continue
            if consumer.filter_tokens is None or tokens_match(
                consumer.filter_tokens, message.subject.split(".")
            ):
                consumer.pending[message.seq] = now + consumer.ack_wait
                out.append(message)
        return out

    def seconds_to_next_redelivery(self, consumer: ConsumerState) -> float | None:
        if not consumer.pending:
            return None
        return max(0.0, min(consumer.pending.values()) - self._monotonic())


class InMemoryDurableConsumer:
    """A handle on a durable consumer; implements the ``DurableConsumer`` protocol."""

    def __init__(self, stream: StreamState, state: ConsumerState, link: TransportLink) -> None:
        self._stream = stream
        self._state = state
        self._link = link
        self._fetched: set[int] = set()

    @property
    def name(self) -> str:
        return self._state.name

    async def fetch(self, batch: int = 1, *, timeout: float = 1.0) -> list[StreamMessage]:
        """Up to ``batch`` messages; an empty list when none arrive within ``timeout``.

        Raises:
            ValueError: ``batch`` is below 1.
            NotConnected: The transport is not connected (or closes while waiting).
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self._link.check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wake = asyncio.Event()
        listener = self._stream.listen(lambda _message: wake.set())
        closer = self._link.on_close(wake.set)
        try:
            while True:
                wake.clear()
                messages = self._stream.take(self._state, batch)
                if messages:
                    self._fetched.update(m.seq for m in messages)
                    return messages
                wait = deadline - loop.time()
                if wait <= 0:
                    return []
                redelivery = self._stream.seconds_to_next_redelivery(self._state)
                if redelivery is not None:
                    wait = min(wait, redelivery + 0.001)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait)
                self._link.check_open()
        finally:
            self._stream.unlisten(listener)
            self._link.discard(closer)

    async def ack(self, message: StreamMessage, *, timeout: float = 2.0) -> None:
        """Acknowledge a message this object fetched.

        Raises:
            StreamError: This object did not fetch it, or it was acked already.
            NotConnected: The transport is not connected.
        """
        self._link.check_open()
        if message.stream != self._stream.name or message.seq not in self._fetched:
            raise StreamError(
                f"{message.stream}#{message.seq} is not pending on consumer {self.name!r}"
            )
        self._fetched.discard(message.seq)
        self._state.pending.pop(message.seq, None)


class InMemoryStream:
    """A handle on a stream of an ``InMemoryBus``; implements the ``Stream`` protocol."""

    def __init__(
        self,
        state: StreamState,
        link: TransportLink,
        *,
        max_payload: int,
        route: Callable[[str, bytes, str | None], None],
    ) -> None:
        self._state = state
        self._link = link
        self._max_payload = max_payload
        self._route = route

    @property
    def name(self) -> str:
        return self._state.name

    async def append(
        self, subject: str, data: bytes, *, msg_id: str | None = None, timeout: float = 2.0
    ) -> PublishAck:
        """Store ``data`` under ``subject`` (also delivered to core subscribers).

        Raises:
            InvalidSubject: ``subject`` is malformed or has wildcards.
            StreamError: The stream does not capture ``subject``.
            PayloadTooLarge: ``data`` is above max_payload.
            NotConnected: The transport is not connected.
        """
        validate_subject(subject, allow_wildcards=False)
        self._link.check_open()
        if not self._state.captures(subject.split(".")):
            raise StreamError(f"stream {self.name!r} does not capture subject {subject!r}")
        if len(data) > self._max_payload:
            raise PayloadTooLarge(
                f"payload of {len(data)} bytes exceeds max_payload {self._max_payload}"
            )
        ack = self._state.store(subject, bytes(data), msg_id)
        # JetStream routes every publish to core subscribers, duplicates included.
        self._route(subject, bytes(data), msg_id)
        return ack

    async def last_seq(self, *, timeout: float = 2.0) -> int:
        """Sequence of the newest stored message (0 when empty).

        Raises:
            NotConnected: The transport is not connected.
        """
        self._link.check_open()
        return self._state.last_seq

    async def first_seq(self, *, timeout: float = 2.0) -> int:
        """Sequence of the oldest stored message (``last_seq + 1`` when none is stored).

        Raises:
            NotConnected: The transport is not connected.
        """
        self._link.check_open()
        return self._state.first_seq()

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
        self._link.check_open()
        pattern = None if subject is None else subject.split(".")
        queue: asyncio.Queue[StreamMessage | None] = asyncio.Queue()
        listener = self._state.listen(queue.put_nowait)
        closer = self._link.on_close(lambda: queue.put_nowait(None))
        try:
            for message in self._state.stored_from(start_seq):
                if pattern is None or tokens_match(pattern, message.subject.split(".")):
                    yield message
            while True:
                item = await queue.get()
                if item is None:
                    return
                if item.seq >= start_seq and (
                    pattern is None or tokens_match(pattern, item.subject.split("."))
                ):
                    yield item
        finally:
            self._state.unlisten(listener)
            self._link.discard(closer)

    async def consumer(
        self, durable: str, *, subject: str | None = None, ack_wait: float = 30.0
    ) -> InMemoryDurableConsumer:
        """Create-or-bind the durable consumer ``durable``.

        Raises:
            InvalidSubject: ``durable`` or ``subject`` is malformed.
            StreamError: ``durable`` exists with another subject filter.
            NotConnected: The transport is not connected.
        """
        validate_name(durable, what="consumer name")
        if subject is not None:
            validate_subject(subject, allow_wildcards=True)
        self._link.check_open()
        state = self._state.consumers.get(durable)
        if state is None:
            state = ConsumerState(durable, subject, ack_wait)
            self._state.consumers[durable] = state
        elif state.filter_subject != subject:
            raise StreamError(
                f"consumer {durable!r} exists with filter {state.filter_subject!r}, not {subject!r}"
            )
        return InMemoryDurableConsumer(self._state, state, self._link)
