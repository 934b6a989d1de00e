"""The NATS transport: nats-py against a real ``nats-server`` (2.9+) with JetStream.

This module, :mod:`~agentmesh.transport.nats_jetstream` and
:mod:`~agentmesh.transport.nats_errors` are the only ones allowed to import
``nats`` (an import-linter contract). Everything nats-py raises is translated at
this boundary into :mod:`agentmesh.errors`.

Reconnects are nats-py's: while the server is away the transport is
``RECONNECTING`` (publishes are buffered up to ``reconnect_buffer_size``,
subscriptions are replayed on reconnect). When nats-py gives up, the transport is
``CLOSED`` and every call raises :class:`~agentmesh.errors.ConnectionLost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext, api
from nats.nuid import NUID

from agentmesh.errors import (
    ConnectionLost,
    KeyValueError,
    NotConnected,
    PayloadTooLarge,
    StreamError,
)
from agentmesh.transport.base import Message, MessageHandler, Subscription, TransportState
from agentmesh.transport.nats_errors import translated_errors
from agentmesh.transport.nats_jetstream import NatsKeyValue, NatsStream, Unsubscribable
from agentmesh.transport.subjects import (
    normalize_headers,
    validate_name,
    validate_queue,
    validate_subject,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD = 1024 * 1024
MAX_KV_HISTORY = 64


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """Connection options for :class:`NatsTransport` (seconds for every duration).

    Attributes:
        connect_timeout: Per-server TCP/handshake timeout.
        reconnect_time_wait: Pause between reconnect attempts to the same server.
        max_reconnect_attempts: Attempts per server before giving up; -1 never gives up.
        ping_interval: Client PINGs to detect a dead connection.
        max_outstanding_pings: Unanswered PINGs before the connection counts as stale.
        reconnect_buffer_size: Bytes of publishes buffered while reconnecting.
        drain_timeout: How long ``aclose`` lets handlers finish queued messages.
        jetstream_timeout: Default timeout of JetStream API calls.
        storage: Where new KV buckets and streams keep data on the server.
        user: User name, for servers with user/password auth.
        password: Password for ``user``.
        token: Token, for servers with token auth.
        creds_file: A ``.creds`` file (JWT + nkey seed), for accounts/operator mode.
        tls: A client TLS context.
        inbox_prefix: Prefix of reply subjects (accounts may restrict it).
    """

    connect_timeout: float = 2.0
    reconnect_time_wait: float = 0.5
    max_reconnect_attempts: int = 120
    ping_interval: float = 20.0
    max_outstanding_pings: int = 2
    reconnect_buffer_size: int = 8 * 1024 * 1024
    drain_timeout: float = 5.0
    jetstream_timeout: float = 5.0
    storage: Literal["file", "memory"] = "file"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    tls: ssl.SSLContext | None = None
    inbox_prefix: str = "_INBOX"


class _NatsSubscription:
    """A core subscription; ``unsubscribe`` is idempotent and safe from its own handler."""

    def __init__(self, subject: str, queue: str | None, handler: MessageHandler) -> None:
        self._subject = subject
        self._queue = queue
        self._handler = handler
        self._active = True
        self._sub: NatsSubscription | None = None
        self._handler_task: asyncio.Task[Any] | None = None
        self._pending_unsubscribe: asyncio.Task[None] | None = None

    @property
    def subject(self) -> str:
        return self._subject

    @property
    def queue(self) -> str | None:
        return self._queue

    def bind(self, sub: NatsSubscription) -> None:
        self._sub = sub

    async def on_message(self, msg: Msg) -> None:
        if not self._active:
            return
        self._handler_task = asyncio.current_task()
        message = Message(msg.subject, msg.data, msg.reply or None, dict(msg.headers or {}))
        try:
            await self._handler(message)
        except Exception:
            # A failing handler must not end the subscription; the node wraps
            # handlers to audit failures.
            logger.exception("handler for subject %s raised", self._subject)

    async def unsubscribe(self) -> None:
        """Stop delivery; messages not yet handled are dropped. Idempotent."""
        if not self._active:
            return
        self._active = False
        if self._sub is None:
            return
        if self._handler_task is not None and self._handler_task is asyncio.current_task():
            # nats-py would cancel the task running this very handler: do it later.
            self._pending_unsubscribe = asyncio.get_running_loop().create_task(
                self._send_unsubscribe()
            )
            return
        await self._send_unsubscribe()

    async def _send_unsubscribe(self) -> None:
        assert self._sub is not None
        with (
            contextlib.suppress(
                nats.errors.BadSubscriptionError,
                nats.errors.ConnectionClosedError,
                nats.errors.ConnectionDrainingError,
            ),
            translated_errors(),
        ):
            await self._sub.unsubscribe()


class NatsTransport:
    """A connection to NATS; implements :class:`~agentmesh.transport.base.Transport`.

    Args:
        servers: One URL or a list (``nats://host:port``); nats-py picks and fails over.
        name: The client name the server shows in monitoring.
        config: Connection options; defaults suit a local server.
    """

    def __init__(
        self,
        servers: list[str] | str,
        *,
        name: str = "agentmesh",
        config: NatsConfig | None = None,
    ) -> None:
        self._servers = [servers] if isinstance(servers, str) else list(servers)
        if not self._servers:
            raise ValueError("at least one server URL is needed")
        self._name = name
        self._config = config if config is not None else NatsConfig()
        self._state = TransportState.NEW
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._closing = False
        self._lost = False
        self._closed_event: asyncio.Event | None = None
        self._on_close: dict[int, Callable[[], None]] = {}
        self._next_close_token = 0
        self._owned: set[Unsubscribable] = set()
        self._nuid = NUID()

    # -- state -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> NatsConfig:
        return self._config

    @property
    def state(self) -> TransportState:
        return self._state

    @property
    def is_connected(self) -> bool:
        return (
            self._state is TransportState.CONNECTED
            and self._nc is not None
            and self._nc.is_connected
        )

    @property
    def max_payload(self) -> int:
        """The server's limit (from its INFO; kept while reconnecting), 1 MiB before."""
        if self._nc is not None and self._nc.max_payload > 0:
            return self._nc.max_payload
        return DEFAULT_MAX_PAYLOAD

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (for the JetStream handles).

        Raises:
            NotConnected: Not connected.
        """
        self.check_open()
        assert self._js is not None
        return self._js

    def check_open(self, *, while_closing: bool = False) -> None:
        """Raises: NotConnected (or ConnectionLost) unless connected or reconnecting."""
        if self._state is TransportState.CLOSED and self._lost:
            raise ConnectionLost(f"transport {self._name!r} lost its server and gave up")
        if self._state not in (TransportState.CONNECTED, TransportState.RECONNECTING):
            raise NotConnected(f"transport {self._name!r} is {self._state.value}")
        if self._closing and not while_closing:
            raise NotConnected(f"transport {self._name!r} is closing")

    def _client(self, *, while_closing: bool = False) -> NatsClient:
        self.check_open(while_closing=while_closing)
        assert self._nc is not None
        return self._nc

    def on_close(self, callback: Callable[[], None]) -> int:
        """Run ``callback`` when the transport closes (ends iterators)."""
        self._next_close_token += 1
        self._on_close[self._next_close_token] = callback
        return self._next_close_token

    def discard(self, token: int) -> None:
        self._on_close.pop(token, None)

    def adopt(self, subscription: Unsubscribable) -> None:
        """Unsubscribe ``subscription`` when the transport closes, before draining."""
        self._owned.add(subscription)

    def release(self, subscription: Unsubscribable) -> None:
        self._owned.discard(subscription)

    def _fire_close_callbacks(self) -> None:
        callbacks = list(self._on_close.values())
        self._on_close.clear()
        for callback in callbacks:
            callback()

    # -- nats-py callbacks ---------------------------------------------------------

    async def _on_disconnected(self) -> None:
        # nats-py also calls back while a first connect() fails: only track live ones.
        if self._closing or self._state in (TransportState.NEW, TransportState.CLOSED):
            return
        self._state = TransportState.RECONNECTING
        logger.warning("transport %s disconnected from NATS; reconnecting", self._name)

    async def _on_reconnected(self) -> None:
        if self._closing:
            return
        self._state = TransportState.CONNECTED
        url = self._nc.connected_url if self._nc is not None else None
        logger.info("transport %s reconnected to %s", self._name, url.netloc if url else "?")

    async def _on_error(self, error: Exception) -> None:
        if self._state is not TransportState.CONNECTED and isinstance(error, OSError):
            logger.debug("transport %s reconnect attempt failed: %s", self._name, error)
        else:
            logger.warning("transport %s NATS error: %r", self._name, error)

    async def _on_closed(self) -> None:
        if self._closing or self._state is TransportState.NEW:
            return
        self._lost = True
        self._state = TransportState.CLOSED
        logger.error("transport %s lost NATS: reconnect attempts exhausted", self._name)
        self._fire_close_callbacks()

    # -- lifecycle ---------------------------------------------------------------

    def _connect_options(self) -> dict[str, Any]:
        # nats-py annotates several durations as int but uses them as float seconds.
        config = self._config
        options: dict[str, Any] = {
            "servers": self._servers,
            "name": self._name,
            "connect_timeout": config.connect_timeout,
            "reconnect_time_wait": config.reconnect_time_wait,
            "max_reconnect_attempts": config.max_reconnect_attempts,
            "ping_interval": config.ping_interval,
            "max_outstanding_pings": config.max_outstanding_pings,
            "pending_size": config.reconnect_buffer_size,
            "drain_timeout": config.drain_timeout,
            "inbox_prefix": config.inbox_prefix,
            "allow_reconnect": True,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "error_cb": self._on_error,
            "closed_cb": self._on_closed,
        }
        for key in ("user", "password", "token", "tls"):
            value = getattr(config, key)
            if value is not None:
                options[key] = value
        if config.creds_file is not None:
            options["user_credentials"] = config.creds_file
        return options

    async def connect(self, *, timeout: float = 5.0) -> None:
        """Connect to one of the servers. Idempotent while connected.

        Raises:
            NotConnected: No server answered within ``timeout``, or the transport
                was closed (closing is final).
        """
        if self._state in (TransportState.CONNECTED, TransportState.RECONNECTING):
            return
        if self._state is TransportState.CLOSED or self._closing:
            raise NotConnected(f"transport {self._name!r} is closed")
        nc = NatsClient()
        try:
            await _bounded(nc.connect(**self._connect_options()), timeout)
        except (nats.errors.Error, OSError, TimeoutError) as error:
            with contextlib.suppress(Exception):
                await _bounded(nc.close(), 2.0)
            raise NotConnected(f"could not connect to {self._servers}: {error!r}") from error
        self._nc = nc
        self._js = nc.jetstream(timeout=self._config.jetstream_timeout)
        self._state = TransportState.CONNECTED
        logger.info("transport %s connected to NATS", self._name)

    async def aclose(self) -> None:
        """Drain subscriptions (handlers finish queued messages), then close. Idempotent."""
        if self._state is TransportState.CLOSED or self._state is TransportState.NEW:
            self._state = TransportState.CLOSED
            return
        if self._closing:
            assert self._closed_event is not None
            await self._closed_event.wait()
            return
        self._closing = True
        self._closed_event = asyncio.Event()
        try:
            self._fire_close_callbacks()
            nc = self._nc
            owned, self._owned = list(self._owned), set()
            for subscription in owned:
                with contextlib.suppress(nats.errors.Error, ValueError):
                    await subscription.unsubscribe()
            if nc is not None and not nc.is_closed:
                try:
                    await nc.drain()
                except (nats.errors.Error, OSError, TimeoutError) as error:
                    logger.debug("transport %s drain failed (%r); closing", self._name, error)
                    await nc.close()
        finally:
            self._state = TransportState.CLOSED
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

    # -- core messaging --------------------------------------------------------------

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.max_payload:
            raise PayloadTooLarge(
                f"payload of {len(data)} bytes exceeds max_payload {self.max_payload}"
            )

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a message (buffered by nats-py while reconnecting).

        Allowed while :meth:`aclose` drains, so handlers can still reply.

        Raises:
            InvalidSubject: ``subject`` or ``reply`` is malformed or has wildcards.
            PayloadTooLarge: ``data`` is above the server's max_payload.
            TransportError: A header is malformed.
            NotConnected: Not connected, or the reconnect buffer is full.
            ConnectionLost: The server went away and reconnecting failed.
        """
        validate_subject(subject, allow_wildcards=False)
        if reply is not None:
            validate_subject(reply, allow_wildcards=False)
        nc = self._client(while_closing=True)
        self._check_size(data)
        normalized = normalize_headers(headers)
        with translated_errors():
            await nc.publish(subject, bytes(data), reply=reply or "", headers=normalized or None)

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str | None = None
    ) -> Subscription:
        """Register ``handler``; returns once the server has the interest.

        Raises:
            InvalidSubject: ``subject`` or ``queue`` is malformed.
            RequestTimeout: The server did not confirm in time (nothing stays subscribed).
            NotConnected: Not connected.
            ConnectionLost: The server went away and reconnecting failed.
        """
        validate_subject(subject, allow_wildcards=True)
        if queue is not None:
            validate_queue(queue)
        nc = self._client()
        subscription = _NatsSubscription(subject, queue, handler)
        with translated_errors():
            sub = await nc.subscribe(subject, queue=queue or "", cb=subscription.on_message)
        subscription.bind(sub)
        try:
            # nats-py trap: flushing right away can put the PING before the SUB.
            await asyncio.sleep(0)
            with translated_errors():
                await nc.flush(timeout=math.ceil(self._config.jetstream_timeout))
        except BaseException:
            await subscription.unsubscribe()
            raise
        return subscription

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Publish with a reply inbox and wait for the first reply.

        Raises:
            NoResponders: Nobody subscribes to ``subject`` (the server says so at once).
            RequestTimeout: No reply within ``timeout`` seconds.
            InvalidSubject: ``subject`` is malformed or has wildcards.
            PayloadTooLarge: ``data`` is above max_payload.
            NotConnected: Not connected.
            ConnectionLost: The server went away and reconnecting failed.
        """
        validate_subject(subject, allow_wildcards=False)
        nc = self._client()
        self._check_size(data)
        normalized = normalize_headers(headers)
        with translated_errors():
            msg = await nc.request(
                subject, bytes(data), timeout=timeout, headers=normalized or None
            )
        return Message(msg.subject, msg.data, msg.reply or None, dict(msg.headers or {}))

    def new_inbox(self) -> str:
        """A unique reply subject under the configured inbox prefix."""
        return f"{self._config.inbox_prefix}.{self._nuid.next().decode()}"

    async def flush(self, *, timeout: float = 2.0) -> None:
        """Round-trip to the server: everything sent so far has reached it.

        ``timeout`` is rounded up to whole seconds (nats-py's granularity).

        Raises:
            RequestTimeout: No PONG within ``timeout``.
            NotConnected: Not connected.
            ConnectionLost: The server went away and reconnecting failed.
        """
        nc = self._client()
        with translated_errors():
            await nc.flush(timeout=max(1, math.ceil(timeout)))

    # -- JetStream --------------------------------------------------------------------

    def _storage(self) -> api.StorageType:
        return api.StorageType.MEMORY if self._config.storage == "memory" else api.StorageType.FILE

    async def key_value(
        self, bucket: str, *, history: int = 1, ttl: float | None = None
    ) -> NatsKeyValue:
        """Create-or-bind the bucket (an existing bucket keeps its configuration).

        Raises:
            InvalidSubject: ``bucket`` is not ``[A-Za-z0-9_-]+``.
            KeyValueError: ``history`` outside 1..64, a non-positive ``ttl``, or the
                server refused the bucket.
            NotConnected: Not connected.
        """
        validate_name(bucket, what="bucket name")
        if not 1 <= history <= MAX_KV_HISTORY:
            raise KeyValueError(f"history must be within 1..{MAX_KV_HISTORY}")
        if ttl is not None and ttl <= 0:
            raise KeyValueError("ttl must be positive")
        js = self.js
        with translated_errors():
            try:
                kv = await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                kv = await js.create_key_value(
                    bucket=bucket, history=history, ttl=ttl, storage=self._storage()
                )
        return NatsKeyValue(kv, bucket, self)

    async def stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age: float | None = None,
        duplicate_window: float = 120.0,
    ) -> NatsStream:
        """Create-or-bind the stream (an existing stream keeps its configuration).

        ``duplicate_window`` is capped at ``max_age``, as the server requires.

        Raises:
            InvalidSubject: ``name`` or a subject is malformed.
            StreamError: No subjects, they overlap another stream's, or the server
                refused the stream.
            NotConnected: Not connected.
        """
        validate_name(name, what="stream name")
        for subject in subjects:
            validate_subject(subject, allow_wildcards=True)
        if not subjects:
            raise StreamError(f"stream {name!r} needs at least one subject")
        if max_age is not None and max_age <= 0:
            raise StreamError("max_age must be positive")
        window = duplicate_window if max_age is None else min(duplicate_window, max_age)
        js = self.js
        with translated_errors():
            try:
                info = await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                info = await js.add_stream(
                    api.StreamConfig(
                        name=name,
                        subjects=list(subjects),
                        max_age=max_age,
                        duplicate_window=window,
                        storage=self._storage(),
                    )
                )
        return NatsStream(name, list(info.config.subjects or subjects), self)


async def _bounded(work: Coroutine[Any, Any, object], timeout: float) -> None:
    """Run ``work`` for at most ``timeout`` seconds, then cancel it for sure.

    Not ``asyncio.wait_for``: on Python 3.11 a cancellation that races with an inner
    ``wait_for`` timeout can be swallowed (CPython gh-86296), and nats-py's connect
    loop then retries instead of stopping, so ``wait_for`` waited for it forever
    (seen as a CLI hanging on an unreachable server). Here the task is cancelled
    again until it really ends.

    Raises:
        TimeoutError: ``work`` did not finish in time.
    """
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task in done:
        task.result()
        return
    for _ in range(20):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if task in done:
            break
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: the caller gets the timeout below
    raise TimeoutError(f"gave up after {timeout:g}s")
