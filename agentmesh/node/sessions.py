"""The IATP handshake carried over the transport (responder and initiator side)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

import msgpack

from agentmesh.errors import HandshakeRefused
from agentmesh.node.interceptors import Verdict
from agentmesh.node.wire import (
    WireFormatError,
    decode_reply,
    decode_step,
    encode_accept,
    encode_ok,
    encode_refusal,
    encode_step,
)
from iatp.clock import Clock
from iatp.errors import HandshakeError
from iatp.handshake import (
    HandshakeInitiator,
    HandshakeLimits,
    HandshakeResponder,
    PeerOffer,
    SessionKeys,
)
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache

logger = logging.getLogger(__name__)

OfferCheck = Callable[[PeerOffer], Awaitable[Verdict]]
Report = Callable[[str, str, str | None, str], None]  # (kind, code, peer, detail)


class HandshakeService:
    """Answers handshakes for one identity and opens them to peers.

    Established sessions are kept per peer DID (the newest wins).
    """

    def __init__(
        self,
        identity: AgentIdentity,
        *,
        clock: Clock,
        limits: HandshakeLimits,
        max_pending: int,
        capabilities: Sequence[str],
        check_offer: OfferCheck,
        report: Report,
    ) -> None:
        self._identity = identity
        self._clock = clock
        self._limits = limits
        self._max_pending = max_pending
        self._capabilities = tuple(capabilities)
        self._check_offer = check_offer
        self._report = report
        self._seen_hellos = ReplayCache(max_entries=100_000, clock_skew_ms=limits.clock_skew_ms)
        self._pending: OrderedDict[bytes, tuple[HandshakeResponder, int]] = OrderedDict()
        self.sessions: dict[str, SessionKeys] = {}

    # -- responder -------------------------------------------------------------------------

    async def answer(self, data: bytes) -> bytes:
        """Handle one handshake request; returns the reply bytes (never raises)."""
        try:
            step, message = decode_step(data)
        except WireFormatError as exc:
            return self._refuse("handshake_failed", str(exc), None)
        if step == "hello":
            return await self._answer_hello(message)
        if step == "confirm":
            return self._answer_confirm(message)
        return self._refuse("handshake_failed", f"unknown step {step[:32]!r}", None)

    async def _answer_hello(self, message: bytes) -> bytes:
        responder = HandshakeResponder(
            self._identity, clock=self._clock, seen_hellos=self._seen_hellos, limits=self._limits
        )
        try:
            offer = responder.receive_hello(message)
        except HandshakeError as exc:
            return self._refuse(exc.code, str(exc), None)
        try:
            verdict = await self._check_offer(offer)
        except Exception as exc:  # a failing hook must refuse, never accept
            logger.exception("handshake hook failed")
            verdict = Verdict.deny("hook_error", type(exc).__name__)
        if not verdict.allowed:
            return self._refuse(verdict.code, verdict.reason, offer.did)
        self._prune()
        if len(self._pending) >= self._max_pending:
            return self._refuse("busy", "too many handshakes in progress", offer.did)
        accept = responder.accept(capabilities=self._capabilities)
        deadline = self._clock.now_ms() + self._limits.max_age_ms
        self._pending[offer.session_id] = (responder, deadline)
        return encode_accept(accept)

    def _answer_confirm(self, message: bytes) -> bytes:
        self._prune()
        session_id = _session_id_of(message)
        entry = self._pending.pop(session_id, None) if session_id else None
        if entry is None:
            return self._refuse("handshake_failed", "no pending handshake for this confirm", None)
        responder = entry[0]
        try:
            keys = responder.confirm(message)
        except HandshakeError as exc:
            return self._refuse(exc.code, str(exc), None)
        self.sessions[keys.peer.did] = keys
        self._report("handshake", "established", keys.peer.did, "as responder")
        return encode_ok()

    def _prune(self) -> None:
        now = self._clock.now_ms()
        for session_id in [s for s, (_, deadline) in self._pending.items() if deadline < now]:
            del self._pending[session_id]

    def _refuse(self, code: str, reason: str, peer: str | None) -> bytes:
        self._report("handshake", code, peer, reason)
        return encode_refusal(code, reason)

    # -- initiator -------------------------------------------------------------------------

    def start(self, peer: str) -> HandshakeInitiator:
        return HandshakeInitiator(
            self._identity,
            peer,
            clock=self._clock,
            capabilities=self._capabilities,
            limits=self._limits,
        )

    async def complete(
        self,
        initiator: HandshakeInitiator,
        peer: str,
        send: Callable[[bytes], Awaitable[bytes]],
    ) -> SessionKeys:
        """Run the three messages through ``send`` (a request to the peer's handshake subject).

        Raises:
            HandshakeRefused: the peer refused (``remote_code`` says why).
            HandshakeError: the peer's answer is forged, spliced or malformed.
        """
        kind, accept, reason = _parse_reply(await send(encode_step("hello", initiator.hello())))
        if kind != "accept":
            raise HandshakeRefused(
                f"{peer} refused the handshake: {reason}", remote_code=str(accept)
            )
        assert isinstance(accept, bytes)
        confirm, keys = initiator.finish(accept)
        kind, code, reason = _parse_reply(await send(encode_step("confirm", confirm)))
        if kind != "ok":
            raise HandshakeRefused(f"{peer} refused the confirm: {reason}", remote_code=str(code))
        self.sessions[peer] = keys
        self._report("handshake", "established", peer, "as initiator")
        return keys


def _parse_reply(data: bytes) -> tuple[str, bytes | str, str]:
    try:
        return decode_reply(data)
    except WireFormatError as exc:
        raise HandshakeError(f"malformed handshake reply: {exc}") from None


def _session_id_of(message: bytes) -> bytes | None:
    """Peek the session id of a CONFIRM to find its pending responder (verified later)."""
    try:
        body, _ = msgpack.unpackb(message, raw=False, max_ext_len=0)
        fields = msgpack.unpackb(body, raw=False, max_ext_len=0)
        session_id = fields[1]
    except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException, RecursionError):
        return None
    return session_id if isinstance(session_id, bytes) else None
