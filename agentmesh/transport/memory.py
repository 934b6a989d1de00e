"""The embedded transport: NATS semantics inside one process.

An :class:`InMemoryBus` plays the server: it routes messages by subject (with
``*`` and ``>`` wildcards and queue groups), holds KV buckets and streams, and
enforces ``max_payload``. Each :class:`InMemoryTransport` is one client
connection to a bus, so several "nodes" in one process share a bus exactly as
several processes share a ``nats-server``::

    bus = InMemoryBus()
    async with InMemoryTransport(bus, name="alice") as a, InMemoryTransport(bus) as b:
        await b.subscribe("greet.*", handler)
        await a.publish("greet.bob", b"hi")

``InMemoryTransport()`` without a bus gets a private one. Randomness (the queue
group member that gets a message) and the monotonic clock (KV TTLs, stream
``max_age`` and de-duplication, ack deadlines) are injected into the bus, so a
simulation seeded with ``random.Random(seed)`` is reproducible.

Differences from a real server, all deliberate: no slow-consumer limits (queues
are unbounded), and KV buckets are not visible as ``$KV.*`` core subjects.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from agentmesh.errors import (
    KeyValueError,
    NoResponders,
    NotConnected,
    PayloadTooLarge,
    RequestTimeout,
    StreamError,
)
from agentmesh.transport.base import (
    Message,
    MessageHandler,
    StoreLimits,
    Subscription,
    TransportState,
)
from agentmesh.transport.memory_kv import BucketState, InMemoryKeyValue
from agentmesh.transport.memory_link import TransportLink
from agentmesh.transport.memory_stream import MSG_ID_HEADER, InMemoryStream, StreamState
from agentmesh.transport.subjects import (
    normalize_headers,
    subjects_overlap,
    tokens_match,
    validate_name,
    validate_queue,
    validate_subject,
)

logger = logging.getLogger(__name__)

NO_RESPONDERS_HEADER = "Status"

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""1 MiB, the ``nats-server`` default."""

MAX_KV_HISTORY = 64
"""JetStream's limit on revisions kept per key."""

_MATCH_CACHE_SIZE = 4096


@dataclass(eq=False, slots=True)
class _Route:
    pattern: list[str]
    queue: str | None
    deliver: Callable[[Message], None]


_Matches = tuple[tuple[_Route, ...], tuple[tuple[_Route, ...], ...]]


class InMemoryBus:
    """The in-process "server" shared by every :class:`InMemoryTransport` bound to it.

    Args:
        max_payload: Largest accepted payload in bytes (the server's max_payload).
        rng: Picks the member of a queue group that receives a message; pass
            ``random.Random(seed)`` for reproducible runs.
        monotonic: Seconds from an arbitrary origin, for TTLs, ``max_age``,
            de-duplication windows and ack deadlines.
    """

    def __init__(
        self,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_payload < 1:
            raise ValueError("max_payload must be positive")
        self._max_payload = max_payload
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - not crypto
        self._monotonic = monotonic
        self._routes: list[_Route] = []
        self._matches: dict[str, _Matches] = {}
        self._buckets: dict[str, BucketState] = {}
        self._streams: dict[str, StreamState] = {}
        self._client_ids = itertools.count(1)

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @property
    def monotonic(self) -> Callable[[], float]:
        return self._monotonic

    def _next_client_id(self) -> int:
        return next(self._client_ids)

    # -- routing ---------------------------------------------------------------

    def _add_route(self, route: _Route) -> None:
        self._routes.append(route)
        self._matches.clear()

    def _remove_route(self, route: _Route) -> None:
        with contextlib.suppress(ValueError):
            self._routes.remove(route)
            self._matches.clear()

    def _match(self, subject: str) -> _Matches:
        cached = self._matches.get(subject)
        if cached is not None:
            return cached
        tokens = subject.split(".")
        plain: list[_Route] = []
        groups: dict[str, list[_Route]] = {}
        for route in self._routes:
            if tokens_match(route.pattern, tokens):
                if route.queue is None:
                    plain.append(route)
                else:
                    groups.setdefault(route.queue, []).append(route)
        result = (tuple(plain), tuple(tuple(g) for g in groups.values()))
        if len(self._matches) >= _MATCH_CACHE_SIZE:
            self._matches.clear()
        self._matches[subject] = result
        return result

    def _has_interest(self, subject: str) -> bool:
        plain, groups = self._match(subject)
        return bool(plain or groups)

    def _deliver(self, message: Message) -> None:
        """Route to core subscribers only: every plain one, one member per queue group."""
        plain, groups = self._match(message.subject)
        for route in plain:
            route.deliver(message)
        for members in groups:
            self._rng.choice(members).deliver(message)

    def _publish(self, message: Message) -> None:
        """Route ``message`` and store it in the stream that captures its subject."""
        self._deliver(message)
        if self._streams:
            tokens = message.subject.split(".")
            for stream in self._streams.values():
                if stream.captures(tokens):
                    stream.store(message.subject, message.data, message.headers.get(MSG_ID_HEADER))

    # -- JetStream-like state --------------------------------------------------

    def _open_bucket(
        self, name: str, *, history: int, ttl: float | None, limits: StoreLimits | None = None
    ) -> BucketState:
        """Create-or-bind a bucket (an existing bucket keeps its configuration)."""
        existing = self._buckets.get(name)
        if existing is not None:
            return existing
        if not 1 <= history <= MAX_KV_HISTORY:
            raise KeyValueError(f"history must be within 1..{MAX_KV_HISTORY}")
        if ttl is not None and ttl <= 0:
            raise KeyValueError("ttl must be positive")
        bucket = BucketState(
            name, history=history, ttl=ttl, monotonic=self._monotonic, limits=limits
        )
        self._buckets[name] = bucket
        return bucket

    def _open_stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age: float | None,
        duplicate_window: float,
        limits: StoreLimits | None = None,
    ) -> StreamState:
        """Create-or-bind a stream (an existing stream keeps its configuration).

        Raises:
            StreamError: No subjects, or they overlap another stream's subjects.
        """
        existing = self._streams.get(name)
        if existing is not None:
            return existing
        if not subjects:
            raise StreamError(f"stream {name!r} needs at least one subject")
        if max_age is not None and max_age <= 0:
            raise StreamError("max_age must be positive")
        for other in self._streams.values():
            for mine in subjects:
                for theirs in other.subjects:
                    if subjects_overlap(mine, theirs):
                        raise StreamError(
                            f"subjects of stream {name!r} overlap stream {other.name!r}"
                        )
        stream = StreamState(
            name,
            subjects,
            max_age=max_age,
            duplicate_window=duplicate_window
            if max_age is None
            else min(duplicate_window, max_age),
            monotonic=self._monotonic,
            limits=limits,
        )
        self._streams[name] = stream
        return stream


class _MemorySubscription:
    """One subscription: a queue and a task that runs the handler one message at a time."""

    def __init__(
        self,
        transport: InMemoryTransport,
        subject: str,
        queue: str | None,
        handler: MessageHandler,
    ) -> None:
        self._transport = transport
        self._subject = subject
        self._queue_name = queue
        self._handler = handler
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self.route = _Route(subject.split("."), queue, self._inbox.put_nowait)
        self._active = True
        self._draining = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"agentmesh-memory-sub:{subject}"
        )

    @property
    def subject(self) -> str:
        return self._subject

    @property
    def queue(self) -> str | None:
        return self._queue_name

    async def _run(self) -> None:
        while True:
            message = await self._inbox.get()
            if message is None:
                return
            if not self._active and not self._draining:
                return  # unsubscribed from inside a handler: drop the rest
            try:
                await self._handler(message)
            except Exception:
                # A failing handler must not end the subscription (nats-py behaves
                # the same way); the node wraps handlers to audit the failure.
                logger.exception("handler for subject %s raised", self._subject)

    async def unsubscribe(self) -> None:
        """Stop delivery now; messages not yet handled are dropped. Idempotent."""
        if not self._active:
            return
        self._active = False
        self._transport.forget(self)
        if self._task is asyncio.current_task():
            self._inbox.put_nowait(None)  # called from our own handler: end after it
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def drain(self, timeout: float) -> None:
        """Stop new deliveries, finish the queued ones (up to ``timeout``), then stop."""
        if not self._active:
            return
        self._active = False
        self._draining = True
        self._transport.forget(self)
        self._inbox.put_nowait(None)
        if self._task is asyncio.current_task():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            logger.warning("subscription %s did not drain within %.1fs", self._subject, timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class InMemoryTransport:
    """A client connection to an :class:`InMemoryBus`; implements ``Transport``.

    Args:
        bus: The bus to join. Transports given the same bus see each other's
            messages, buckets and streams; ``None`` creates a private bus.
        name: A label for logs and error messages.
        drain_timeout: How long :meth:`aclose` lets handlers finish queued messages.
    """

    def __init__(
        self,
        bus: InMemoryBus | None = None,
        *,
        name: str = "memory",
        drain_timeout: float = 5.0,
    ) -> None:
        self._bus = bus if bus is not None else InMemoryBus()
        self._name = name
        self._drain_timeout = drain_timeout
        self._state = TransportState.NEW
        self._closing = False
        self._closed_event: asyncio.Event | None = None
        self._link = TransportLink(name)
        self._subscriptions: set[_MemorySubscription] = set()
        self._requests: set[asyncio.Future[Message]] = set()
        self._client_id = self._bus._next_client_id()
        self._inbox_ids = itertools.count(1)

    @property
    def bus(self) -> InMemoryBus:
        return self._bus

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> TransportState:
        return self._state

    @property
    def max_payload(self) -> int:
        return self._bus.max_payload

    @property
    def is_connected(self) -> bool:
        return self._state is TransportState.CONNECTED

    def _check_open(self) -> None:
        if self._state is not TransportState.CONNECTED or self._closing:
            raise NotConnected(f"transport {self._name!r} is {self._state.value}")

    def _check_size(self, data: bytes) -> None:
        if len(data) > self._bus.max_payload:
            raise PayloadTooLarge(
                f"payload of {len(data)} bytes exceeds max_payload {self._bus.max_payload}"
            )

    def forget(self, subscription: _MemorySubscription) -> None:
        """Detach ``subscription`` from the bus (called by the subscription itself)."""
        self._bus._remove_route(subscription.route)
        self._subscriptions.discard(subscription)

    async def connect(self, *, timeout: float = 5.0) -> None:
        """Join the bus. Idempotent while connected.

        Raises:
            NotConnected: The transport was closed (closing is final).
        """
        if self._state is TransportState.CLOSED or self._closing:
            raise NotConnected(f"transport {self._name!r} is closed")
        self._link.open()
        self._state = TransportState.CONNECTED

    async def aclose(self) -> None:
        """Drain subscriptions, fail pending requests, end iterators. Idempotent."""
        if self._state is TransportState.CLOSED:
            return
        if self._closing:
            assert self._closed_event is not None
            await self._closed_event.wait()
            return
        self._closing = True
        self._closed_event = asyncio.Event()
        try:
            self._link.close()  # end iterators and refuse KV/stream work first, as NATS does
            subscriptions = list(self._subscriptions)
            for subscription in subscriptions:
                self._bus._remove_route(subscription.route)
            await asyncio.gather(*(s.drain(self._drain_timeout) for s in subscriptions))
            for future in list(self._requests):
                if not future.done():
                    future.set_exception(NotConnected(f"transport {self._name!r} closed"))
        finally:
            self._state = TransportState.CLOSED
            self._link.close()
            self._closed_event.set()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a message to every subscriber of ``subject`` (one per queue group).

        Allowed while :meth:`aclose` drains, so handlers can still reply. As on
        nats-server, a message with a ``reply`` subject that nobody receives gets a
        no-responders status (empty data, header ``Status: 503``) on ``reply``.

        Raises:
            InvalidSubject: ``subject`` or ``reply`` is malformed or has wildcards.
            PayloadTooLarge: ``data`` is above max_payload.
            TransportError: A header is malformed.
            NotConnected: The transport is not connected.
        """
        validate_subject(subject, allow_wildcards=False)
        if reply is not None:
            validate_subject(reply, allow_wildcards=False)
        if self._state is not TransportState.CONNECTED:
            raise NotConnected(f"transport {self._name!r} is {self._state.value}")
        self._check_size(data)
        message = Message(subject, bytes(data), reply, normalize_headers(headers))
        if reply is not None and not self._bus._has_interest(subject):
            self._bus._deliver(Message(reply, b"", None, {NO_RESPONDERS_HEADER: "503"}))
        self._bus._publish(message)

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str | None = None
    ) -> Subscription:
        """Register ``handler`` for ``subject``; effective when this returns.

        Raises:
            InvalidSubject: ``subject`` or ``queue`` is malformed.
            NotConnected: The transport is not connected.
        """
        validate_subject(subject, allow_wildcards=True)
        if queue is not None:
            validate_queue(queue)
        self._check_open()
        subscription = _MemorySubscription(self, subject, queue, handler)
        self._subscriptions.add(subscription)
        self._bus._add_route(subscription.route)
        return subscription

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Publish with a fresh reply inbox and wait for the first reply.

        Raises:
            NoResponders: Nobody subscribes to ``subject`` (raised at once).
            RequestTimeout: No reply within ``timeout`` seconds.
            InvalidSubject: ``subject`` is malformed or has wildcards.
            PayloadTooLarge: ``data`` is above max_payload.
            NotConnected: The transport is not connected, or closed while waiting.
        """
        validate_subject(subject, allow_wildcards=False)
        self._check_open()
        self._check_size(data)
        normalized = normalize_headers(headers)
        if not self._bus._has_interest(subject):
            raise NoResponders(f"no responders on {subject!r}")
        inbox = self.new_inbox()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        def resolve(message: Message) -> None:
            if not future.done():
                future.set_result(message)

        route = _Route(inbox.split("."), None, resolve)
        self._bus._add_route(route)
        self._requests.add(future)
        try:
            self._bus._publish(Message(subject, bytes(data), inbox, normalized))
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestTimeout(f"no reply on {subject!r} within {timeout}s") from None
        finally:
            self._bus._remove_route(route)
            self._requests.discard(future)

    def new_inbox(self) -> str:
        """A subject unique on this bus, for replies."""
        return f"_INBOX.c{self._client_id}i{next(self._inbox_ids)}"

    async def flush(self, *, timeout: float = 2.0) -> None:
        """Let already-routed messages reach their subscription queues.

        Raises:
            NotConnected: The transport is not connected.
        """
        self._check_open()
        await asyncio.sleep(0)

    async def key_value(
        self,
        bucket: str,
        *,
        history: int = 1,
        ttl: float | None = None,
        limits: StoreLimits | None = None,
    ) -> InMemoryKeyValue:
        """Create-or-bind ``bucket`` on the bus (``limits`` apply when it is created).

        Raises:
            InvalidSubject: ``bucket`` is not ``[A-Za-z0-9_-]+``.
            KeyValueError: ``history`` outside 1..64 or a non-positive ``ttl``.
            NotConnected: The transport is not connected.
        """
        validate_name(bucket, what="bucket name")
        self._check_open()
        state = self._bus._open_bucket(bucket, history=history, ttl=ttl, limits=limits)
        return InMemoryKeyValue(state, self._link, max_payload=self._bus.max_payload)

    async def stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age: float | None = None,
        duplicate_window: float = 120.0,
        limits: StoreLimits | None = None,
    ) -> InMemoryStream:
        """Create-or-bind the stream ``name`` capturing ``subjects``.

        An existing stream keeps its configuration. ``duplicate_window`` is capped
        at ``max_age``, as ``nats-server`` requires.

        Raises:
            InvalidSubject: ``name`` or a subject is malformed.
            StreamError: No subjects, or they overlap another stream's.
            NotConnected: The transport is not connected.
        """
        validate_name(name, what="stream name")
        for subject in subjects:
            validate_subject(subject, allow_wildcards=True)
        self._check_open()
        state = self._bus._open_stream(
            name, list(subjects), max_age=max_age, duplicate_window=duplicate_window, limits=limits
        )

        def route(subject: str, data: bytes, msg_id: str | None) -> None:
            headers = {} if msg_id is None else {MSG_ID_HEADER: msg_id}
            self._bus._deliver(Message(subject, data, None, headers))

        return InMemoryStream(state, self._link, max_payload=self._bus.max_payload, route=route)
