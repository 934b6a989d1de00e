"""MeshNode: one agent's presence on the mesh.

Inbound path of every frame (see docs/architecture.md)::

    size -> outer frame -> sender key (cached) -> signature (thread pool, batched)
          (session inbox: -> session lookup -> MAC, inline)
    -> payload -> lifetime / skew / expiry / audience -> replay cache
    -> interceptors (revocation, policy, trust, saga) -> handler -> outcome

Each rejection is counted by code and audited; nothing is dropped silently.
A signed ``iatp.error`` reply goes back only to requests that passed the
signature, validity and replay checks (unauthenticated junk gets no answer),
and it always goes: outbound interceptors do not apply to it, so a refused
(say, quarantined) requester learns why instead of timing out.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from agentmesh import telemetry
from agentmesh.audit import AuditSink, MemoryAuditSink
from agentmesh.errors import CircuitOpen, NodeStateError, NoSession
from agentmesh.lifecycle import Lifecycle
from agentmesh.node.addressing import MeshAddressing
from agentmesh.node.config import NodeConfig
from agentmesh.node.counters import NodeCounters
from agentmesh.node.interceptors import (
    ALLOW,
    InboundMessage,
    Interceptor,
    Outcome,
    Stage,
    Verdict,
)
from agentmesh.node.latency import LatencyHistogram
from agentmesh.node.outbound import NodeSender
from agentmesh.node.partitions import PartitionForwarder, PeerPartitions
from agentmesh.node.replies import ReplyInbox
from agentmesh.node.routes import PeerRoutes
from agentmesh.node.sessions import Answer, HandshakeService
from agentmesh.node.verifier import BatchVerifier
from agentmesh.node.wire import ERROR_TYPE, encode_error
from agentmesh.transport.base import Message, Subscription, Transport
from iatp.clock import Clock, SystemClock
from iatp.envelope import (
    AuthenticatedFrame,
    Envelope,
    Frame,
    check_validity,
    decode_payload,
    parse_frame,
)
from iatp.errors import EnvelopeError
from iatp.handshake import PeerOffer, SessionKeys
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache
from iatp.sealed import open_sealed_frame, parse_sealed_frame, seal_frame_to
from iatp.session_frame import OpenedSessionFrame, parse_session_frame

logger = logging.getLogger(__name__)

Handler = Callable[[InboundMessage], Awaitable[bytes | None]]


class NodeState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


# (message, frame, verdict, audience, sealed, arrival time: 0.0 unless timed)
_Queued = tuple[Message, Frame, "asyncio.Future[EnvelopeError | None]", str, bool, float]


class MeshNode(NodeSender, Lifecycle):
    """An agent on the mesh: ``async with MeshNode(identity, transport) as node: ...``.

    Args:
        identity: the agent's key and DID.
        transport: an :class:`~agentmesh.transport.base.Transport`; connected by the
            node if it is not connected yet (and then closed by it too).
        config: see :class:`NodeConfig`.
        clock: wall clock (injected for tests and simulations).
        audit: where audit events go (default: in memory, see ``node.audit``).
    """

    def __init__(
        self,
        identity: AgentIdentity,
        transport: Transport,
        *,
        config: NodeConfig | None = None,
        clock: Clock | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.identity = identity
        self.transport = transport
        self.config = config or NodeConfig()
        self.clock: Clock = clock or SystemClock()
        self.audit: AuditSink = audit if audit is not None else MemoryAuditSink()
        self.addressing = MeshAddressing(self.config.mesh)
        self.routes = PeerRoutes()
        # Peers served by several member processes: frames go to their owner (scale-out).
        self.partitions = PeerPartitions()
        self.counters = NodeCounters()
        # Set by a metrics endpoint: times each signed frame from arrival to verdict.
        self.verify_latency: LatencyHistogram | None = None
        self._state = NodeState.NEW
        self._handlers: dict[str, Handler] = {}
        self._topic_handlers: dict[str, Handler] = {}
        self._interceptors: list[tuple[Stage, int, Interceptor]] = []
        self._replay = ReplayCache(
            max_entries=self.config.replay_capacity, clock_skew_ms=self.config.limits.clock_skew_ms
        )
        self._executor: ThreadPoolExecutor | None = None
        self._verifier: BatchVerifier | None = None
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue(maxsize=self.config.max_inflight)
        self._handler_slots = asyncio.Semaphore(self.config.max_concurrent_handlers)
        self._subscriptions: list[Subscription] = []
        self._replies: ReplyInbox | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._owns_connection = False
        self._stack: contextlib.AsyncExitStack | None = None
        self.sessions = HandshakeService(
            identity,
            clock=self.clock,
            limits=self.config.handshake_limits,
            max_pending=self.config.max_pending_handshakes,
            capabilities=self.config.capabilities,
            check_offer=self._check_handshake,
            report=self._audit_event,
            session_limits=self.config.session_limits,
            partition=self.config.partition,
        )
        # Rekeys in flight (one per peer) and, after a failed background rekey, when
        # the next one may start (ms): sessions are renewed before they end.
        self._rekeys: dict[str, asyncio.Task[SessionKeys | Exception]] = {}
        self._rekey_after: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def state(self) -> NodeState:
        return self._state

    async def start(self) -> None:
        """Connect (if needed), subscribe to the inbox and handshake subjects.

        Raises:
            NodeStateError: the node was already started.
            TransportError: the transport could not connect or subscribe.
        """
        if self._state is not NodeState.NEW:
            raise NodeStateError(f"a node starts once; this one is {self._state.value}")
        self._state = NodeState.STARTING
        if self.config.restart_fence_ms is not None:
            # The replay cache starts empty: it vouches only for what comes after now.
            self._replay.since_ms = self.clock.now_ms() + self.config.restart_fence_ms
        stack = contextlib.AsyncExitStack()
        try:
            if not self.transport.is_connected:
                await self.transport.connect(timeout=self.config.timeouts.connect)
                self._owns_connection = True
            self._executor = ThreadPoolExecutor(
                max_workers=self.config.verify_workers, thread_name_prefix="iatp-verify"
            )
            self._verifier = BatchVerifier(
                self._executor,
                workers=self.config.verify_workers,
                inline_below=self.config.inline_verify_below,
            )
            self._tasks = await stack.enter_async_context(asyncio.TaskGroup())
            self._tasks.create_task(self._consume(), name=f"inbound:{self.did[-8:]}")
            replies = ReplyInbox(self.transport)
            await replies.start()
            self._replies = replies
            self._subscriptions += await self._subscribe_own()
        except BaseException:
            self._state = NodeState.CLOSING
            await self._teardown(stack)
            raise
        self._stack = stack
        self._state = NodeState.RUNNING
        self._audit_event("lifecycle", "joined", None, self.addressing.inbox(self.did))

    async def _subscribe_own(self) -> list[Subscription]:
        """This agent's subjects; a member of a scaled-out identity its partition's too."""
        handlers = {
            "inbox": self._on_inbox,
            "handshake": self._on_handshake,
            "session": self._on_session,
            "sealed": self._on_sealed,
        }
        partition = self.config.partition
        if partition is not None:
            forwarder = PartitionForwarder(
                partition,
                identity=self.identity,
                transport=self.transport,
                addressing=self.addressing,
                limits=self.config.limits,
                local=handlers,
                on_forward=self._count_forward,
            )
            return await forwarder.subscribe()
        did, address = self.did, self.addressing
        subjects = {
            "inbox": address.inbox(did),
            "handshake": address.handshake(did),
            "session": address.session_inbox(did),
            "sealed": address.sealed_inbox(did),
        }
        return [
            await self.transport.subscribe(subjects[kind], handler)
            for kind, handler in handlers.items()
        ]

    def _count_forward(self, kind: str) -> None:
        self.counters.sent_by["forward"] += 1

    async def aclose(self) -> None:
        """Leave the mesh: unsubscribe, finish queued work, stop tasks. Idempotent."""
        if self._state in (NodeState.CLOSING, NodeState.CLOSED, NodeState.NEW):
            self._state = NodeState.CLOSED if self._state is NodeState.NEW else self._state
            return
        self._state = NodeState.CLOSING
        self._audit_event("lifecycle", "left", None, "")
        await self._teardown(self._stack)
        self._state = NodeState.CLOSED

    async def _teardown(self, stack: contextlib.AsyncExitStack | None) -> None:
        replies, self._replies = self._replies, None
        if replies is not None:
            with contextlib.suppress(Exception):
                await replies.aclose()
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._subscriptions.clear()
        if self._tasks is not None:
            for task in list(getattr(self._tasks, "_tasks", ())):
                task.cancel()
        if stack is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await stack.aclose()
        self._tasks = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_connection:
            with contextlib.suppress(Exception):
                await self.transport.aclose()

    def _require_running(self) -> None:
        if self._state is not NodeState.RUNNING:
            raise NodeStateError(f"node is {self._state.value}, not running")

    # -- registration ------------------------------------------------------------------------

    def handle(self, message_type: str, handler: Handler) -> None:
        """Route inbound messages of ``message_type`` (requests or one-way) to ``handler``.

        A request's reply body is the handler's return value (``None`` means empty).
        """
        self._handlers[message_type] = handler

    def on(self, message_type: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`handle`."""

        def register(handler: Handler) -> Handler:
            self.handle(message_type, handler)
            return handler

        return register

    def add_interceptor(self, interceptor: Interceptor, *, stage: Stage = Stage.POLICY) -> None:
        self._interceptors.append((stage, len(self._interceptors), interceptor))
        self._interceptors.sort(key=lambda item: (item[0], item[1]))

    async def subscribe_topic(self, topic: str, handler: Handler) -> None:
        """Receive signed broadcasts on ``topic`` (envelopes addressed to ``topic:NAME``)."""
        self._require_running()
        recipient = self.addressing.topic_recipient(topic)
        self._topic_handlers[recipient] = handler

        async def on_topic(message: Message) -> None:
            self.counters.received_by["topic"] += 1
            await self._intake(message, recipient)

        self._subscriptions.append(
            await self.transport.subscribe(self.addressing.topic(topic), on_topic)
        )

    async def handshake(self, peer: str, *, timeout: float | None = None) -> SessionKeys:
        """Mutual IATP handshake with ``peer``; the session is kept in ``node.sessions``.

        Raises:
            HandshakeRefused, HandshakeError, RequestTimeout, NoResponders.
            NoSession: ``peer`` is reached through a federation link (no sessions there).
        """
        self._require_running()
        if peer in self.routes:
            raise NoSession(f"{peer} is reached through a federation link: no handshake across it")
        wait = timeout if timeout is not None else self.config.timeouts.handshake
        initiator = self.sessions.start(peer)
        subject = self.partitions.subject(
            peer, self.addressing.handshake(peer), initiator.session_id
        )
        replies = self._replies
        assert replies is not None

        async def request(data: bytes, accept: Callable[[bytes], Answer]) -> Answer:
            self.counters.sent_by["handshake"] += 1
            answer = await replies.request(subject, data, lambda m: accept(m.data), timeout=wait)
            self.counters.received_by["handshake"] += 1
            return answer

        keys = await self.sessions.complete(initiator, peer, request)
        self.counters.handshakes += 1
        return keys

    async def _session_for(self, peer: str) -> SessionKeys:
        """The session for one frame to ``peer``; rekeys before it ends (iatp.md 15.1).

        Near a limit, a new handshake starts in the background and this frame still
        goes under the current session; with no usable session left (all ended),
        the frame waits for the new handshake.

        Raises:
            NoSession: there never was a session with ``peer``.
            HandshakeRefused, RequestTimeout, NoResponders: the rekey failed.
        """
        keys, due = self.sessions.for_sending(peer)
        if keys is not None:
            if due and self.clock.now_ms() >= self._rekey_after.get(peer, 0):
                self._rekey(peer)
            return keys
        if not self.sessions.knows(peer):
            raise NoSession(f"no handshake session with {peer}: await node.handshake(peer) first")
        outcome = await asyncio.shield(self._rekey(peer))
        if isinstance(outcome, Exception):
            raise outcome
        keys, _ = self.sessions.for_sending(peer)
        if keys is None:
            raise NoSession(f"the new session with {peer} ended before it was used")
        return keys

    def _rekey(self, peer: str) -> asyncio.Task[SessionKeys | Exception]:
        """The handshake renewing the session with ``peer`` (started unless one runs)."""
        task = self._rekeys.get(peer)
        if task is None:
            assert self._tasks is not None
            task = self._tasks.create_task(self._run_rekey(peer), name=f"rekey:{peer[-8:]}")
            self._rekeys[peer] = task
        return task

    async def _run_rekey(self, peer: str) -> SessionKeys | Exception:
        try:
            keys = await self.handshake(peer)
        except Exception as exc:  # returned, not raised: the node's task group must go on
            self._rekey_after[peer] = self.clock.now_ms() + 1_000
            self._audit_event("session", "rekey_failed", peer, f"{type(exc).__name__}: {exc}")
            return exc
        finally:
            self._rekeys.pop(peer, None)
        self._rekey_after.pop(peer, None)
        return keys

    # -- inbound -----------------------------------------------------------------------------

    async def _on_inbox(self, message: Message) -> None:
        self.counters.received_by["inbox"] += 1
        await self._intake(message, self.did)

    async def _on_handshake(self, message: Message) -> None:
        self.counters.received_by["handshake"] += 1
        reply = await self.sessions.answer(message.data)
        if message.reply:
            self.counters.sent_by["handshake"] += 1
            await self.transport.publish(message.reply, reply)

    async def _on_session(self, message: Message) -> None:
        """A session frame: opened inline (the AEAD costs a few µs), then admitted."""
        self.counters.received += 1
        self.counters.received_by["session"] += 1
        try:
            frame = parse_session_frame(message.data, self.config.limits)
            opened = self.sessions.open(frame)
        except EnvelopeError as exc:
            self._reject(exc, message.subject)
            return
        await self._admit(message, opened, self.did, "session")

    async def _on_sealed(self, message: Message) -> None:
        """A signed frame encrypted to this node: opened, then the signed path."""
        self.counters.received_by["sealed"] += 1
        try:
            sealed = parse_sealed_frame(message.data, self.config.limits)
            inner = open_sealed_frame(sealed, self.identity)
        except EnvelopeError as exc:
            self.counters.received += 1
            self._reject(exc, message.subject)
            return
        await self._intake(replace(message, data=inner), self.did, sealed=True)

    async def _intake(self, message: Message, audience: str, *, sealed: bool = False) -> None:
        arrived = time.perf_counter() if self.verify_latency is not None else 0.0
        self.counters.received += 1
        try:
            frame = parse_frame(message.data, self.config.limits)
        except EnvelopeError as exc:
            self._reject(exc, message.subject)
            return
        assert self._verifier is not None
        verdict = self._verifier.verify(frame)
        await self._queue.put((message, frame, verdict, audience, sealed, arrived))

    async def _consume(self) -> None:
        while True:
            message, frame, verified, audience, sealed, arrived = await self._queue.get()
            error = await verified
            timing = self.verify_latency
            if timing is not None and arrived:
                timing.observe(time.perf_counter() - arrived)
            if error is not None:
                self._reject(error, message.subject)
                continue
            await self._admit(message, frame, audience, "signature", sealed=sealed)

    async def _admit(
        self,
        message: Message,
        frame: AuthenticatedFrame,
        audience: str,
        authenticated_by: str,
        *,
        sealed: bool = False,
    ) -> None:
        """Payload, validity, replay and interceptors for an authenticated frame; dispatch."""
        try:
            envelope = decode_payload(frame, self.config.limits)
            now = self.clock.now_ms()
            check_validity(envelope, now_ms=now, audience=audience, limits=self.config.limits)
            if self.config.partition is not None and audience == self.did:
                self._check_partition(envelope, frame)
            self._remember(envelope, now)
        except EnvelopeError as exc:
            self._reject(exc, message.subject)
            return
        inbound = InboundMessage(
            envelope,
            message.subject,
            is_request=message.reply is not None,
            authenticated_by=authenticated_by,
            sealed=sealed,
            session_id=frame.session_id if isinstance(frame, OpenedSessionFrame) else None,
        )
        active = telemetry.tracer
        handoff: dict[str, str] | None = None
        if active is None:
            # No interceptors (a bare node): no coroutine to build and await.
            verdict = await self._check_inbound(inbound) if self._interceptors else ALLOW
        else:
            with active.span(
                f"iatp.receive {envelope.type}",
                kind="server" if inbound.is_request else "consumer",
                attributes=self._span_attributes(inbound),
                carrier=telemetry.trace_headers(envelope.headers),
            ) as span:
                verdict = await self._check_inbound(inbound)
                if not verdict.allowed:
                    span.refuse(verdict.code, verdict.reason)
                handoff = span.headers()
        if not verdict.allowed:
            self.counters.reject(verdict.code)
            self._audit_event(
                "rejected",
                verdict.code,
                envelope.sender,
                verdict.reason,
                envelope.id,
                message.subject,
            )
            await self._reply_error(message, inbound, verdict.code, verdict.reason)
            await self._record_outcome(inbound, Outcome.REJECTED)
            return
        self.counters.accepted += 1
        await self._handler_slots.acquire()
        assert self._tasks is not None
        self._tasks.create_task(self._dispatch(message, inbound, handoff))

    def _check_partition(self, envelope: Envelope, frame: AuthenticatedFrame) -> None:
        """A member admits only what it owns, before the replay cache (docs/scaleout.md).

        Raises:
            WrongPartition: another member owns the frame's partition key.
        """
        partition = self.config.partition
        assert partition is not None
        key = frame.session_id if isinstance(frame, OpenedSessionFrame) else envelope.id
        partition.check(key, envelope_id=envelope.id, sender=envelope.sender)

    def _span_attributes(self, inbound: InboundMessage) -> dict[str, telemetry.AttributeValue]:
        return {
            "agentmesh.node": self.did,
            "agentmesh.sender": inbound.sender,
            "iatp.type": inbound.type,
            "iatp.envelope_id": inbound.envelope.id.hex(),
            "iatp.authenticated_by": inbound.authenticated_by,
            "messaging.destination.name": inbound.subject,
        }

    async def _check_inbound(self, inbound: InboundMessage) -> Verdict:
        for _, _, interceptor in self._interceptors:
            try:
                verdict = await interceptor.check_inbound(inbound)
            except Exception as exc:  # fail closed: a broken hook denies
                logger.exception("inbound interceptor failed")
                return Verdict.deny("interceptor_error", type(exc).__name__)
            if not verdict.allowed:
                return verdict
        return ALLOW

    async def _check_handshake(self, offer: PeerOffer) -> Verdict:
        for _, _, interceptor in self._interceptors:
            verdict = await interceptor.check_handshake(offer)
            if not verdict.allowed:
                return verdict
        return ALLOW

    async def _record_outcome(self, inbound: InboundMessage, outcome: Outcome) -> None:
        for _, _, interceptor in self._interceptors:
            try:
                await interceptor.record_outcome(inbound, outcome)
            except Exception:
                logger.exception("outcome hook failed")

    async def _dispatch(
        self, message: Message, inbound: InboundMessage, trace: dict[str, str] | None = None
    ) -> None:
        active = telemetry.tracer
        if trace is None or active is None:
            await self._run_handler(message, inbound)
            return
        with active.span(
            f"iatp.handle {inbound.type}",
            attributes={"agentmesh.node": self.did, "agentmesh.sender": inbound.sender},
            carrier=trace,
        ) as span:
            error = await self._run_handler(message, inbound)
            if error is not None:
                span.refuse(*error)

    async def _run_handler(
        self, message: Message, inbound: InboundMessage
    ) -> tuple[str, str] | None:
        """Run the handler and reply; returns the refusal (code, reason) it answered, if any."""
        try:
            handler = self._handlers.get(inbound.type)
            if handler is None and inbound.envelope.recipient in self._topic_handlers:
                handler = self._topic_handlers[inbound.envelope.recipient]
            if handler is None:
                self.counters.reject("no_handler")
                self._audit_event(
                    "rejected",
                    "no_handler",
                    inbound.sender,
                    f"no handler for {inbound.type!r}",
                    inbound.envelope.id,
                    message.subject,
                )
                await self._reply_error(
                    message, inbound, "no_handler", f"no handler for {inbound.type!r}"
                )
                return "no_handler", f"no handler for {inbound.type!r}"
            try:
                result = await handler(inbound)
            except Exception as exc:
                self.counters.handler_errors += 1
                logger.warning("handler for %s raised %s", inbound.type, type(exc).__name__)
                # A dependency's open circuit is a typed refusal (where the chain is
                # broken), not a bug of this agent: see agentmesh.resilience.
                code, reason = (
                    (exc.code, exc.reply_reason)
                    if isinstance(exc, CircuitOpen)
                    else ("handler_error", type(exc).__name__)
                )
                self._audit_event(
                    "handler_error",
                    code,
                    inbound.sender,
                    reason,
                    inbound.envelope.id,
                    message.subject,
                )
                await self._reply_error(message, inbound, code, reason)
                await self._record_outcome(inbound, Outcome.FAILURE)
                return code, reason
            self.counters.handled += 1
            if message.reply:
                _, frame = await self._seal(
                    inbound.sender,
                    inbound.type + ".reply",
                    result or b"",
                    correlation_id=inbound.envelope.id,
                    session=self._reply_session(inbound),
                )
                self.counters.sent_by["reply"] += 1
                await self.transport.publish(message.reply, self._reply_frame(inbound, frame))
            if self._interceptors:
                await self._record_outcome(inbound, Outcome.SUCCESS)
        except Exception as exc:
            logger.exception("dispatch failed")
            return "dispatch_failed", type(exc).__name__
        finally:
            self._handler_slots.release()
        return None

    async def _reply_error(
        self, message: Message, inbound: InboundMessage, code: str, reason: str
    ) -> None:
        if not message.reply:
            return
        try:
            _, frame = await self._seal(
                inbound.sender,
                ERROR_TYPE,
                encode_error(code, reason),
                correlation_id=inbound.envelope.id,
                session=self._reply_session(inbound),
                # An error reply only tells an authenticated requester why it was
                # refused; outbound hooks (a quarantine, say) must not silence it.
                intercept=False,
            )
            self.counters.sent_by["reply"] += 1
            await self.transport.publish(message.reply, self._reply_frame(inbound, frame))
        except Exception:
            logger.exception("could not send an error reply")

    @staticmethod
    def _reply_frame(inbound: InboundMessage, frame: bytes) -> bytes:
        """A sealed request gets a sealed reply (as confidential as the request)."""
        return seal_frame_to(inbound.sender, frame) if inbound.sealed else frame

    def _reply_session(self, inbound: InboundMessage) -> SessionKeys | None:
        """Replies travel the way their request came: signed, or under the same session."""
        if inbound.authenticated_by != "session":
            return None
        return self.sessions.reply_session(inbound.sender, inbound.session_id)
