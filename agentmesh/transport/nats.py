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
import re
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Self, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue as NatsKV
from nats.nuid import NUID

from agentmesh.errors import (
    AccessRevoked,
    AuthenticationFailed,
    ConnectionLost,
    KeyValueError,
    NoResponders,
    NotConnected,
    PayloadTooLarge,
    PermissionDenied,
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
from agentmesh.transport.nats_errors import translated_errors
from agentmesh.transport.nats_jetstream import NatsKeyValue, NatsStream
from agentmesh.transport.nats_resume import Unsubscribable
from agentmesh.transport.subjects import (
    normalize_headers,
    server_urls,
    validate_name,
    validate_queue,
    validate_subject,
)

logger = logging.getLogger(__name__)
_Opened = TypeVar("_Opened")

DEFAULT_MAX_PAYLOAD = 1024 * 1024
MAX_KV_HISTORY = 64
MAX_REPLICAS = 5  # JetStream's own limit
DEFAULT_CLUSTER_REPLICAS = 3
_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.I)
_AUTH_FAILURES_BEFORE_GIVING_UP = 2


@dataclass(frozen=True, slots=True)
class NkeyAuth:
    """Prove an nkey to the server (its nonce challenge) and, in operator mode, a user JWT.

    In a secured mesh the nkey is the agent's own Ed25519 key (the one behind its
    ``did:key``), so the broker and the peers check the same identity. Build it
    with :func:`agentmesh.broker.credentials.agent_nats_config`.

    Attributes:
        seed: The nkey seed (``SU...``); kept in memory only, never written out.
        user_jwt: The user JWT the mesh authority issued for this key (public).
    """

    seed: str = field(repr=False)
    user_jwt: str | None = None


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
        nkey: nkey (and user JWT) authentication, for a secured mesh.
        replicas: JetStream replicas of the buckets and streams this transport
            creates (1..5). ``None`` picks from the server it connects to: 3 on a
            cluster of three or more servers (the cluster's size if smaller), 1 on a
            single server. An existing bucket or stream keeps its own.
        open_timeout: On a cluster, how long opening a bucket or stream waits for
            a JetStream leader (an election after a server died takes seconds).
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
    nkey: NkeyAuth | None = None
    replicas: int | None = None
    open_timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.replicas is not None and not 1 <= self.replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be within 1..{MAX_REPLICAS}, not {self.replicas}")


@dataclass(frozen=True, slots=True)
class _Violation:
    at: float
    operation: str  # "publish" or "subscription"
    subject: str  # lower case: nats-py lower-cases the server's error text


_VALID_SUBJECTS_KEPT = 4096
"""How many validated publish subjects a transport remembers (then it validates each)."""

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
"""The headers of a message that has none: shared, read-only."""


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
        headers = msg.headers
        message = Message(
            msg.subject, msg.data, msg.reply or None, dict(headers) if headers else _NO_HEADERS
        )
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
        # Suppressed before translation: a closed or draining connection has no
        # subscriptions left to end (e.g. the broker revoked us).
        with (
            translated_errors(),
            contextlib.suppress(
                nats.errors.BadSubscriptionError,
                nats.errors.ConnectionClosedError,
                nats.errors.ConnectionDrainingError,
            ),
        ):
            await self._sub.unsubscribe()


class NatsTransport:
    """A connection to NATS; implements :class:`~agentmesh.transport.base.Transport`.

    Args:
        servers: One URL, a list, or URLs of one cluster comma-separated
            (``nats://h:4222,nats://h:4223``); the client picks one and fails over.
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
        self._servers = server_urls(servers) if isinstance(servers, str) else list(servers)
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
        self._on_reconnect: dict[int, Callable[[], None]] = {}
        self._next_close_token = 0
        self._owned: set[Unsubscribable] = set()
        self._nuid = NUID()
        self._violations: deque[_Violation] = deque(maxlen=256)
        self.permission_violations = 0
        self._auth_failures = 0
        self._auth_refused: asyncio.Event | None = None
        self._revoked = False
        # Publish subjects that passed validate_subject (a node sends to a few
        # inboxes over and over): a set lookup instead of a regex scan each time.
        self._valid_subjects: set[str] = set()

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
        """Raises: NotConnected (ConnectionLost, AccessRevoked) unless connected or reconnecting."""
        if self._state is TransportState.CLOSED and self._revoked:
            raise AccessRevoked(
                f"transport {self._name!r}: the broker revoked this identity's access"
            )
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

    def on_reconnect(self, callback: Callable[[], None]) -> int:
        """Run ``callback`` after each reconnect (ordered consumers start again)."""
        self._next_close_token += 1
        self._on_reconnect[self._next_close_token] = callback
        return self._next_close_token

    def discard_reconnect(self, token: int) -> None:
        self._on_reconnect.pop(token, None)

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
        self._auth_failures = 0
        self._state = TransportState.CONNECTED
        url = self._nc.connected_url if self._nc is not None else None
        logger.info("transport %s reconnected to %s", self._name, url.netloc if url else "?")
        for callback in list(self._on_reconnect.values()):
            callback()

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.AuthorizationError) or (
            "authorization violation" in str(error).lower()
        ):
            self._on_auth_refused()
            return
        found = _VIOLATION.search(str(error))
        if found is not None:
            self.permission_violations += 1
            operation, subject = found.group(1).lower(), found.group(2).lower()
            self._violations.append(_Violation(time.monotonic(), operation, subject))
            logger.warning("transport %s: broker refused %s to %s", self._name, operation, subject)
            return
        if isinstance(error, nats.errors.UnexpectedEOF):
            # The server went away: _on_disconnected logs it, one line per disconnect.
            logger.debug("transport %s lost the server: %r", self._name, error)
        elif self._state is not TransportState.CONNECTED and isinstance(error, OSError):
            logger.debug("transport %s reconnect attempt failed: %s", self._name, error)
        else:
            logger.warning("transport %s NATS error: %r", self._name, error)

    def _on_auth_refused(self) -> None:
        self._auth_failures += 1
        if self._state is TransportState.NEW:
            if self._auth_refused is not None:
                self._auth_refused.set()
            return
        logger.warning("transport %s: the broker refused our credentials", self._name)
        if self._auth_failures >= _AUTH_FAILURES_BEFORE_GIVING_UP and self._nc is not None:
            # Our credentials no longer open the broker (revoked or expired while we
            # were away): fail closed instead of retrying for minutes.
            self._revoked = True
            asyncio.get_running_loop().create_task(self._nc.close())

    def denied_since(self, started: float, subject: str | None = None) -> PermissionDenied | None:
        """The broker's refusal of ``subject`` (or of anything) since ``started``, if any."""
        wanted = None if subject is None else subject.lower()
        for violation in reversed(self._violations):
            if violation.at < started:
                break
            if wanted is None or violation.subject == wanted:
                return PermissionDenied(
                    f"the broker refused {violation.operation} to {violation.subject!r} "
                    "for this identity (see docs/broker.md for the subject map)",
                    subject=violation.subject,
                    operation=violation.operation,
                )
        return None

    async def _on_closed(self) -> None:
        if self._closing or self._state is TransportState.NEW:
            return
        self._lost = True
        last = self._nc.last_error if self._nc is not None else None
        if last is not None and "revoked" in str(last).lower():
            self._revoked = True
        self._state = TransportState.CLOSED
        if self._revoked:
            logger.error("transport %s: the broker revoked this identity", self._name)
        else:
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
        if config.nkey is not None:
            options["nkeys_seed_str"] = config.nkey.seed
            user_jwt = config.nkey.user_jwt
            if user_jwt is not None:
                options["user_jwt_cb"] = lambda: user_jwt.encode()
        return options

    async def connect(self, *, timeout: float = 5.0) -> None:
        """Connect to one of the servers. Idempotent while connected.

        Raises:
            AuthenticationFailed: The server refused the credentials.
            NotConnected: No server answered within ``timeout``, or the transport
                was closed (closing is final).
        """
        if self._state in (TransportState.CONNECTED, TransportState.RECONNECTING):
            return
        if self._state is TransportState.CLOSED or self._closing:
            raise NotConnected(f"transport {self._name!r} is closed")
        nc = NatsClient()
        self._auth_refused = asyncio.Event()
        try:
            await _bounded(nc.connect(**self._connect_options()), timeout, self._auth_refused)
        except (nats.errors.Error, OSError, TimeoutError) as error:
            with contextlib.suppress(Exception):
                await _bounded(nc.close(), 2.0)
            if self._auth_failures:
                raise AuthenticationFailed(
                    f"{self._servers} refused the credentials of transport {self._name!r}: "
                    "check the user JWT ('agentmesh mesh add-agent') and the identity"
                ) from error
            raise NotConnected(f"could not connect to {self._servers}: {error!r}") from error
        finally:
            self._auth_refused = None
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
        if subject not in self._valid_subjects:
            validate_subject(subject, allow_wildcards=False)
            if len(self._valid_subjects) < _VALID_SUBJECTS_KEPT:
                self._valid_subjects.add(subject)
        if reply is not None:
            validate_subject(reply, allow_wildcards=False)  # reply subjects are one-off
        nc = self._nc
        if nc is None or self._state is not TransportState.CONNECTED:
            nc = self._client(while_closing=True)  # raises unless reconnecting
        self._check_size(data)
        normalized = normalize_headers(headers) if headers else None
        with translated_errors():
            await nc.publish(subject, bytes(data), reply=reply or "", headers=normalized or None)

    async def subscribe(
        self, subject: str, handler: MessageHandler, *, queue: str | None = None
    ) -> Subscription:
        """Register ``handler``; returns once the server has the interest.

        Raises:
            InvalidSubject: ``subject`` or ``queue`` is malformed.
            PermissionDenied: The broker refused this identity the subscription.
            RequestTimeout: The server did not confirm in time (nothing stays subscribed).
            NotConnected: Not connected.
            ConnectionLost: The server went away and reconnecting failed.
        """
        validate_subject(subject, allow_wildcards=True)
        if queue is not None:
            validate_queue(queue)
        nc = self._client()
        subscription = _NatsSubscription(subject, queue, handler)
        started = time.monotonic()
        with translated_errors():
            sub = await nc.subscribe(subject, queue=queue or "", cb=subscription.on_message)
        subscription.bind(sub)
        try:
            # nats-py trap: flushing right away can put the PING before the SUB.
            await asyncio.sleep(0)
            with translated_errors():
                await nc.flush(timeout=math.ceil(self._config.jetstream_timeout))
            # The server answers a refused SUB before the PONG of that flush.
            denied = self.denied_since(started, subject)
            if denied is not None:
                raise denied
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
            PermissionDenied: The broker refused this identity the publish (seen when
                no reply came).
            InvalidSubject: ``subject`` is malformed or has wildcards.
            PayloadTooLarge: ``data`` is above max_payload.
            NotConnected: Not connected.
            ConnectionLost: The server went away and reconnecting failed.
        """
        validate_subject(subject, allow_wildcards=False)
        nc = self._client()
        self._check_size(data)
        normalized = normalize_headers(headers)
        started = time.monotonic()
        try:
            with translated_errors():
                msg = await nc.request(
                    subject, bytes(data), timeout=timeout, headers=normalized or None
                )
        except RequestTimeout:
            denied = self.denied_since(started, subject)
            if denied is not None:
                raise denied from None
            raise
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
        # nats-py trap: a PING sent right away can overtake writes still buffered.
        await asyncio.sleep(0)
        with translated_errors():
            await nc.flush(timeout=max(1, math.ceil(timeout)))

    # -- JetStream --------------------------------------------------------------------

    def _storage(self) -> api.StorageType:
        return api.StorageType.MEMORY if self._config.storage == "memory" else api.StorageType.FILE

    @property
    def server_url(self) -> str | None:
        """``nats://host:port`` of the server this transport is connected to now."""
        connected = self._nc.connected_url if self._nc is not None else None
        if connected is None:
            return None
        return f"{connected.scheme}://{connected.hostname}:{connected.port}"

    @property
    def cluster_size(self) -> int:
        """Servers of the connected server's cluster (1 when it is not clustered)."""
        info: dict[str, Any] = getattr(self._client(), "_server_info", None) or {}
        if not info.get("cluster"):
            return 1
        urls = set(info.get("connect_urls") or ())
        urls.add(f"{info.get('host')}:{info.get('port')}")
        return len(urls)

    @property
    def replicas(self) -> int:
        """Replicas of the buckets and streams this transport creates (see NatsConfig)."""
        if self._config.replicas is not None:
            return self._config.replicas
        return min(DEFAULT_CLUSTER_REPLICAS, self.cluster_size)

    async def key_value(
        self,
        bucket: str,
        *,
        history: int = 1,
        ttl: float | None = None,
        limits: StoreLimits | None = None,
    ) -> NatsKeyValue:
        """Create-or-bind the bucket (an existing bucket keeps its configuration).

        Raises:
            InvalidSubject: ``bucket`` is not ``[A-Za-z0-9_-]+``.
            KeyValueError: ``history`` outside 1..64, a non-positive ``ttl``, or the
                server refused the bucket.
            PermissionDenied: The bucket does not exist and this identity may not
                create it (the mesh authority provisions it).
            NotConnected: Not connected.
        """
        validate_name(bucket, what="bucket name")
        if not 1 <= history <= MAX_KV_HISTORY:
            raise KeyValueError(f"history must be within 1..{MAX_KV_HISTORY}")
        if ttl is not None and ttl <= 0:
            raise KeyValueError("ttl must be positive")
        js = self.js

        async def open_once() -> NatsKV:
            try:
                return await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                await js.add_stream(
                    _bucket_config(bucket, history, ttl, limits, self._storage(), self.replicas)
                )
                return await js.key_value(bucket)

        kv = await self._open(f"bucket {bucket!r}", open_once)
        return NatsKeyValue(kv, bucket, self)

    async def _open(self, what: str, open_once: Callable[[], Awaitable[_Opened]]) -> _Opened:
        """Open a bucket or stream; on a cluster, wait out a leader election.

        After a server dies, the streams it led answer nothing until the others
        elect a new leader (seconds), and a cluster that just started may answer
        503 "JetStream not enabled for account" until the account's JetStream is
        up on every server: on a cluster, opening is retried until
        ``NatsConfig.open_timeout``. A permission refusal ends the wait at once.
        """
        started = time.monotonic()
        while True:
            try:
                with translated_errors():
                    return await open_once()
            except StreamError as error:
                starting = isinstance(error.__cause__, nats.js.errors.ServiceUnavailableError)
                waited = time.monotonic() - started
                if not starting or self.cluster_size == 1 or waited >= self._config.open_timeout:
                    raise
                logger.info("transport %s: JetStream not up for %s yet; retrying", self._name, what)
                await asyncio.sleep(0.25)
            except (RequestTimeout, NoResponders) as error:
                failure = self._not_provisioned(what, started)
                if isinstance(failure, PermissionDenied):
                    raise failure from None
                waited = time.monotonic() - started
                if self.cluster_size == 1 or waited >= self._config.open_timeout:
                    if isinstance(error, NoResponders):
                        raise  # nothing answers for JetStream (a server without it)
                    raise failure from None
                logger.info("transport %s: %s has no leader yet; retrying", self._name, what)
                await asyncio.sleep(0.25)

    def _not_provisioned(self, what: str, started: float) -> RequestTimeout | PermissionDenied:
        denied = self.denied_since(started)
        if denied is None:
            return RequestTimeout(f"JetStream did not answer about {what}")
        return PermissionDenied(
            f"{what} is missing or unreadable, and this identity may not create it: the mesh "
            f"authority provisions it ('agentmesh mesh provision'); broker said: {denied}",
            subject=denied.subject,
            operation=denied.operation,
        )

    async def stream(
        self,
        name: str,
        subjects: list[str],
        *,
        max_age: float | None = None,
        duplicate_window: float = 120.0,
        limits: StoreLimits | None = None,
    ) -> NatsStream:
        """Create-or-bind the stream (an existing stream keeps its configuration).

        ``duplicate_window`` is capped at ``max_age``, as the server requires.

        Raises:
            InvalidSubject: ``name`` or a subject is malformed.
            StreamError: No subjects, they overlap another stream's, or the server
                refused the stream.
            PermissionDenied: The stream does not exist and this identity may not
                create it (the mesh authority provisions it).
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

        async def open_once() -> api.StreamInfo:
            try:
                return await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                return await js.add_stream(
                    _stream_config(
                        name, subjects, max_age, window, limits, self._storage(), self.replicas
                    )
                )

        info = await self._open(f"stream {name!r}", open_once)
        return NatsStream(name, list(info.config.subjects or subjects), self)


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _bucket_config(
    bucket: str,
    history: int,
    ttl: float | None,
    limits: StoreLimits | None,
    storage: api.StorageType,
    replicas: int = 1,
) -> api.StreamConfig:
    """The KV stream nats-py would create, plus our limits (write-once, size, purge)."""
    limits = limits or StoreLimits()
    window = 120.0 if ttl is None else min(120.0, ttl)
    return api.StreamConfig(
        name=f"KV_{bucket}",
        subjects=[f"$KV.{bucket}.>"],
        allow_direct=True,
        # A purge of one key is a roll-up message: refused on write-once buckets.
        allow_rollup_hdrs=not limits.write_once,
        deny_delete=True,
        deny_purge=limits.deny_purge or limits.write_once,
        discard=api.DiscardPolicy.NEW,
        discard_new_per_subject=limits.write_once,
        duplicate_window=window,
        max_age=ttl,
        max_bytes=_limit(limits.max_bytes),
        max_msg_size=_limit(limits.max_value_size),
        max_msgs_per_subject=1 if limits.write_once else history,
        storage=storage,
        num_replicas=replicas,
    )


def _stream_config(
    name: str,
    subjects: list[str],
    max_age: float | None,
    window: float,
    limits: StoreLimits | None,
    storage: api.StorageType,
    replicas: int = 1,
) -> api.StreamConfig:
    limits = limits or StoreLimits()
    quota = limits.per_subject_quota
    return api.StreamConfig(
        name=name,
        subjects=list(subjects),
        max_age=max_age,
        duplicate_window=window,
        storage=storage,
        max_bytes=_limit(limits.max_bytes),
        max_msg_size=_limit(limits.max_value_size),
        max_msgs_per_subject=_limit(quota),
        discard=api.DiscardPolicy.NEW,
        discard_new_per_subject=quota is not None,
        deny_purge=limits.deny_purge,
        deny_delete=limits.deny_purge,
        num_replicas=replicas,
    )


async def _bounded(
    work: Coroutine[Any, Any, object], timeout: float, abort: asyncio.Event | None = None
) -> None:
    """Run ``work`` for at most ``timeout`` seconds (or until ``abort`` is set), then cancel it.

    Not ``asyncio.wait_for``: on Python 3.11 a cancellation that races with an inner
    ``wait_for`` timeout can be swallowed (CPython gh-86296), and nats-py's connect
    loop then retries instead of stopping, so ``wait_for`` waited for it forever
    (seen as a CLI hanging on an unreachable server). Here the task is cancelled
    again until it really ends.

    Raises:
        TimeoutError: ``work`` did not finish in time, or ``abort`` was set first.
    """
    task = asyncio.ensure_future(work)
    waits: set[asyncio.Future[Any]] = {task}
    aborted: asyncio.Task[bool] | None = None
    if abort is not None:
        aborted = asyncio.ensure_future(abort.wait())
        waits.add(aborted)
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if aborted is not None:
            aborted.cancel()
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
    raise TimeoutError(
        "aborted" if abort is not None and abort.is_set() else f"gave up after {timeout:g}s"
    )
