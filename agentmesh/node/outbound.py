"""The sending half of :class:`~agentmesh.node.node.MeshNode`: seal, send, publish, request.

Outbound path::

    envelope -> outbound interceptors -> seal (Ed25519 signature, or the session's
    MAC with ``via_session=True``) -> transport
    request: -> every message on its reply subject -> verify (signature or MAC)
    -> validity -> sender and correlation id -> replay cache; junk is rejected
    and audited, and the request waits on for a valid reply (ReplyInbox)

Kept apart from the inbound pipeline so each file holds one direction; the
state both share (identity, transport, config, counters, audit, sessions,
interceptors, replay cache) is set up by ``MeshNode.__init__``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol, TypeVar

from agentmesh import telemetry
from agentmesh.audit import AuditEvent, AuditSink
from agentmesh.errors import AgentMeshError, InterceptorDenied, NoSession, RemoteError
from agentmesh.node.addressing import MeshAddressing
from agentmesh.node.config import NodeConfig
from agentmesh.node.counters import NodeCounters
from agentmesh.node.interceptors import InboundMessage, Interceptor, Stage
from agentmesh.node.sessions import HandshakeService
from agentmesh.node.wire import ERROR_TYPE, WireFormatError, decode_error
from agentmesh.transport.base import Message, Transport
from iatp.clock import Clock
from iatp.envelope import (
    AuthenticatedFrame,
    Envelope,
    check_validity,
    decode_payload,
    new_envelope,
    parse_frame,
    seal_envelope,
    verify_frame,
)
from iatp.errors import EnvelopeError, SenderMismatch
from iatp.handshake import SessionKeys
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache
from iatp.sealed import open_sealed_frame, parse_sealed_frame, seal_frame_to
from iatp.session_frame import parse_session_frame, seal_session_frame, verify_session_frame

if TYPE_CHECKING:
    from agentmesh.node.partitions import PeerPartitions
    from agentmesh.node.replies import ReplyInbox
    from agentmesh.node.routes import PeerRoutes

T = TypeVar("T")


def refusal_of(exc: BaseException) -> tuple[str, str]:
    """The (code, reason) a span records for a failed send or request."""
    if isinstance(exc, RemoteError):
        return exc.remote_code, str(exc)
    if isinstance(exc, InterceptorDenied):
        return exc.denial_code, str(exc)
    if isinstance(exc, AgentMeshError):
        return exc.code, str(exc)
    return "error", type(exc).__name__


class RequestGuard(Protocol):
    """Wraps every :meth:`NodeSender.request` (circuit breakers: ``agentmesh.resilience``).

    ``call`` runs ``send`` (the request) or refuses without running it (raising
    ``CircuitOpen``), and sees how it ended.
    """

    async def call(self, peer: str, send: Callable[[], Awaitable[T]]) -> T: ...


def _kind(session: SessionKeys | None, sealed: bool) -> str:
    """The subject kind a message to a peer goes to (a ``sent_by`` label)."""
    return "session" if session is not None else "sealed" if sealed else "inbox"


class NodeSender:
    """Outbound messaging, rejection counting and audit for a node (a MeshNode base)."""

    breakers: RequestGuard | None = None
    """Per-peer circuit breakers around :meth:`request` (None: off, one None check)."""

    identity: AgentIdentity
    transport: Transport
    config: NodeConfig
    clock: Clock
    audit: AuditSink
    addressing: MeshAddressing
    counters: NodeCounters
    sessions: HandshakeService
    _interceptors: list[tuple[Stage, int, Interceptor]]
    _replay: ReplayCache
    _replies: ReplyInbox | None
    routes: PeerRoutes
    partitions: PeerPartitions

    @property
    def did(self) -> str:
        return self.identity.did

    def _require_running(self) -> None:
        raise NotImplementedError

    async def _session_for(self, peer: str) -> SessionKeys:
        """The session for one frame to ``peer`` (MeshNode: rekeys as needed)."""
        raise NotImplementedError

    def _remember(self, envelope: Envelope, now_ms: int) -> None:
        """Replay check of an authenticated envelope.

        Raises:
            IssuedBeforeStart: issued before this run started (NodeConfig.restart_fence_ms).
            ReplayedEnvelope: seen before in this run.
        """
        self._replay.remember(
            envelope.sender,
            envelope.id,
            envelope.expires_at_ms,
            now_ms=now_ms,
            clock_skew_ms=self.config.limits.clock_skew_ms,
            issued_at_ms=envelope.issued_at_ms,
        )

    # -- sending -----------------------------------------------------------------------------

    async def _seal(
        self,
        recipient: str,
        message_type: str,
        body: bytes,
        *,
        correlation_id: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        session: SessionKeys | None = None,
        intercept: bool = True,
    ) -> tuple[Envelope, bytes]:
        route = self.routes.get(recipient)
        if route is not None and route.headers:
            headers = {**(headers or {}), **route.headers}
        active = telemetry.tracer
        if active is not None:
            headers = telemetry.with_trace_context(headers, active)
        envelope = new_envelope(
            sender=self.did,
            type=message_type,
            recipient=recipient,
            body=body,
            now_ms=self.clock.now_ms(),
            lifetime_ms=self.config.message_lifetime_ms,
            correlation_id=correlation_id,
            headers=headers,
        )
        for _, _, interceptor in self._interceptors if intercept else ():
            verdict = await interceptor.check_outbound(envelope)
            if not verdict.allowed:
                self.counters.reject(verdict.code)
                self._audit_event(
                    "outbound_denied", verdict.code, recipient, verdict.reason, envelope.id
                )
                raise InterceptorDenied(
                    f"outbound {message_type} to {recipient} refused: {verdict.reason}",
                    denial_code=verdict.code,
                )
        if session is None:
            frame = seal_envelope(envelope, self.identity)
        else:
            frame = seal_session_frame(envelope, session)
        self.counters.sent += 1
        return envelope, frame

    async def send(
        self,
        peer: str,
        message_type: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        via_session: bool = False,
        sealed: bool = False,
    ) -> bytes:
        """One-way signed message to ``peer``'s inbox; returns the envelope id.

        ``via_session=True`` sends it in the handshake session's encrypted frame
        instead of signed; ``sealed=True`` signs it and encrypts it to ``peer``
        (see :meth:`request`).

        Raises:
            NodeStateError, InterceptorDenied, TransportError, NoSession.
        """
        self._require_running()
        if telemetry.tracer is None:
            return await self._send(peer, message_type, body, headers, via_session, sealed)
        return await self._traced(
            f"iatp.send {message_type}",
            "producer",
            peer,
            self._send(peer, message_type, body, headers, via_session, sealed),
        )

    async def _send(
        self,
        peer: str,
        message_type: str,
        body: bytes,
        headers: Mapping[str, str] | None,
        via_session: bool,
        sealed: bool,
    ) -> bytes:
        session, subject = await self._route(peer, via_session, sealed)
        envelope, frame = await self._seal(
            peer, message_type, body, headers=headers, session=session
        )
        if self.partitions and peer not in self.routes:  # a scaled-out peer: to the owner
            subject = self.partitions.subject(
                peer, subject, session.session_id if session else envelope.id
            )
        self.counters.sent_by[_kind(session, sealed)] += 1
        await self.transport.publish(subject, seal_frame_to(peer, frame) if sealed else frame)
        return envelope.id

    async def _traced(
        self, name: str, kind: telemetry.SpanKind, peer: str, work: Awaitable[T]
    ) -> T:
        """``work`` inside a client/producer span when tracing is on (else just ``work``)."""
        active = telemetry.tracer
        if active is None:
            return await work
        attributes = {"agentmesh.node": self.did, "agentmesh.peer": peer}
        with active.span(name, kind=kind, attributes=attributes) as span:
            try:
                return await work
            except Exception as exc:
                span.refuse(*refusal_of(exc))
                raise

    async def _route(
        self, peer: str, via_session: bool, sealed: bool = False
    ) -> tuple[SessionKeys | None, str]:
        """The session (if asked for) and the subject of a message to ``peer``."""
        if via_session and sealed:
            raise ValueError("a session frame is encrypted already: use one of via_session, sealed")
        route = self.routes.get(peer)
        if route is not None:
            if via_session:
                raise NoSession(
                    f"{peer} is reached through a federation link: sessions do not cross it, "
                    "send signed (the default) or sealed=True"
                )
            return None, route.sealed_inbox if sealed else route.inbox
        if sealed:
            return None, self.addressing.sealed_inbox(peer)
        if not via_session:
            return None, self.addressing.inbox(peer)
        return await self._session_for(peer), self.addressing.session_inbox(peer)

    async def publish(
        self,
        topic: str,
        message_type: str,
        body: bytes,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """Signed broadcast on ``topic``; returns the envelope id."""
        self._require_running()
        recipient = self.addressing.topic_recipient(topic)
        if telemetry.tracer is None:
            return await self._publish(recipient, topic, message_type, body, headers)
        return await self._traced(
            f"iatp.publish {message_type}",
            "producer",
            recipient,
            self._publish(recipient, topic, message_type, body, headers),
        )

    async def _publish(
        self,
        recipient: str,
        topic: str,
        message_type: str,
        body: bytes,
        headers: Mapping[str, str] | None,
    ) -> bytes:
        envelope, frame = await self._seal(recipient, message_type, body, headers=headers)
        self.counters.sent_by["topic"] += 1
        await self.transport.publish(self.addressing.topic(topic), frame)
        return envelope.id

    async def request(
        self,
        peer: str,
        message_type: str,
        body: bytes,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        via_session: bool = False,
        sealed: bool = False,
    ) -> InboundMessage:
        """Signed request to ``peer``; returns its verified, signed reply.

        Signed frames are readable by anyone who can read the subject. Two ways
        keep a request and its reply confidential:

        * ``via_session=True``: both travel encrypted and authenticated under the
          session from :meth:`handshake` (XChaCha20-Poly1305; about 50 µs less
          crypto per round trip than signatures). The AEAD convinces only the two
          parties: use signatures for anything that must be evidence for a third
          party (trust receipts, audit, saga state).
          The session is renewed (a new handshake) before it reaches its age or
          message limit (``NodeConfig.session_limits``).
        * ``sealed=True``: both stay signed and are encrypted to the other party's
          DID (an ephemeral X25519 key per frame, iatp.md §16): no session needed,
          and the signature is still evidence for whoever can read the message.

        Only a reply from ``peer`` that passes every check (signature or session
        MAC, correlation id, validity, replay) ends the wait: anything else on the
        reply subject is rejected, counted and audited by its code, and the request
        keeps waiting until ``timeout``.

        Raises:
            NoSession: ``via_session`` without a handshake with ``peer`` first.
            RequestTimeout, NoResponders: no valid answer.
            RemoteError: the peer answered with a typed error (``remote_code``).
            InterceptorDenied: a local hook refused to send.
            CircuitOpen: with ``node.breakers`` set, the circuit to ``peer`` (or one
                further down its call chain) is open: failed fast.
        """
        self._require_running()
        guard = self.breakers
        if guard is None:
            work = self._request(peer, message_type, body, timeout, headers, via_session, sealed)
        else:
            work = guard.call(
                peer,
                lambda: self._request(
                    peer, message_type, body, timeout, headers, via_session, sealed
                ),
            )
        if telemetry.tracer is None:
            return await work
        return await self._traced(f"iatp.request {message_type}", "client", peer, work)

    async def _request(
        self,
        peer: str,
        message_type: str,
        body: bytes,
        timeout: float | None,
        headers: Mapping[str, str] | None,
        via_session: bool,
        sealed: bool,
    ) -> InboundMessage:
        session, subject = await self._route(peer, via_session, sealed)
        envelope, frame = await self._seal(
            peer, message_type, body, headers=headers, session=session
        )
        assert self._replies is not None
        if self.partitions and peer not in self.routes:  # a scaled-out peer: to the owner
            subject = self.partitions.subject(
                peer, subject, session.session_id if session else envelope.id
            )
        self.counters.sent_by[_kind(session, sealed)] += 1
        answer = await self._replies.request(
            subject,
            seal_frame_to(peer, frame) if sealed else frame,
            lambda reply: self._open_reply(reply, peer, envelope.id, session, sealed),
            timeout=timeout if timeout is not None else self.config.timeouts.request,
        )
        if answer.type == ERROR_TYPE:
            try:
                code, text = decode_error(answer.body)
            except WireFormatError:
                code, text = "malformed_error", "the peer's error reply is malformed"
            raise RemoteError(f"{peer} answered {code}: {text}", remote_code=code, reason=text)
        return answer

    def _open_reply(
        self,
        reply: Message,
        peer: str,
        request_id: bytes,
        session: SessionKeys | None,
        sealed: bool = False,
    ) -> InboundMessage:
        self.counters.received_by["reply"] += 1
        try:
            frame: AuthenticatedFrame
            if session is None:
                data = reply.data
                if sealed:  # a sealed request's reply must come sealed to us
                    data = open_sealed_frame(
                        parse_sealed_frame(data, self.config.limits), self.identity
                    )
                frame = parse_frame(data, self.config.limits)
                verify_frame(frame)
            else:
                frame = verify_session_frame(
                    parse_session_frame(reply.data, self.config.limits), session
                )
            envelope = decode_payload(frame, self.config.limits)
            now = self.clock.now_ms()
            check_validity(envelope, now_ms=now, audience=self.did, limits=self.config.limits)
            if envelope.sender != peer or envelope.correlation_id != request_id:
                raise SenderMismatch(
                    "reply is not from the requested peer or not for this request",
                    envelope_id=envelope.id,
                    sender=envelope.sender,
                )
            self._remember(envelope, now)
        except EnvelopeError as exc:
            self._reject(exc, reply.subject)
            raise
        self.counters.accepted += 1
        return InboundMessage(
            envelope,
            reply.subject,
            is_request=False,
            authenticated_by="signature" if session is None else "session",
            sealed=sealed,
        )

    # -- rejections and audit ----------------------------------------------------------------

    def _reject(self, error: EnvelopeError, subject: str) -> None:
        self.counters.reject(error.code)
        self._audit_event(
            "rejected", error.code, error.sender, str(error), error.envelope_id, subject
        )

    def _audit_event(
        self,
        kind: str,
        code: str,
        peer: str | None,
        detail: str,
        envelope_id: bytes | None = None,
        subject: str | None = None,
    ) -> None:
        if kind == "handshake" and code != "established":
            self.counters.reject(code)
        self.audit.append(
            AuditEvent(
                at_ms=self.clock.now_ms(),
                node=self.did,
                kind=kind,
                code=code,
                peer=peer,
                envelope_id=envelope_id.hex() if envelope_id else None,
                subject=subject,
                detail=detail[:300],
            )
        )
