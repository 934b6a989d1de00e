"""The IATP handshake carried over the transport (responder and initiator side).

Established sessions live in a :class:`~iatp.session_table.SessionTable`: by peer
and session id, so concurrent handshakes and rekeys never strand a frame that is
already on its way (iatp.md 15.1).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import msgpack

from agentmesh.errors import HandshakeRefused
from agentmesh.node.interceptors import Verdict
from agentmesh.node.partitions import Partition, session_id_source
from agentmesh.node.wire import (
    WireFormatError,
    check_signed,
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
from iatp.session_frame import OpenedSessionFrame, SessionFrame
from iatp.session_table import SessionLimits, SessionTable

logger = logging.getLogger(__name__)

OfferCheck = Callable[[PeerOffer], Awaitable[Verdict]]
Report = Callable[[str, str, str | None, str], None]  # (kind, code, peer, detail)


@dataclass(frozen=True, slots=True)
class Answer:
    """A handshake reply that proved itself: accepted (with CONFIRM and keys), ok, or refused."""

    kind: str
    code: str = ""
    reason: str = ""
    confirm: bytes = b""
    keys: SessionKeys | None = None


# Sends one handshake step and returns the first reply ``accept`` turned into an
# Answer (``accept`` raises for junk, which is then ignored and the wait goes on).
Request = Callable[[bytes, Callable[[bytes], Answer]], Awaitable[Answer]]


class HandshakeService:
    """Answers handshakes for one identity, opens them to peers, and holds the sessions.

    Sessions are held by peer and id in ``table`` (see :mod:`iatp.session_table`):
    every live one opens frames, superseded ones for a grace window, and
    :meth:`for_sending` picks the one to send under and says when to rekey.
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
        session_limits: SessionLimits | None = None,
        partition: Partition | None = None,
    ) -> None:
        self._identity = identity
        # A member of a scaled-out identity holds only the sessions whose id it
        # owns (docs/scaleout.md): their frames are routed to it by that id.
        self._partition = partition
        self._clock = clock
        self._limits = limits
        self._max_pending = max_pending
        self._capabilities = tuple(capabilities)
        self._check_offer = check_offer
        self._report = report
        self._seen_hellos = ReplayCache(max_entries=100_000, clock_skew_ms=limits.clock_skew_ms)
        self._pending: OrderedDict[bytes, tuple[HandshakeResponder, int]] = OrderedDict()
        self.table = SessionTable(session_limits)
        # Peers this node ever held a session with: a send to one of them whose
        # sessions all ended rekeys instead of raising NoSession.
        self._known: set[str] = set()
        self._last_hello: dict[str, int] = {}

    @property
    def sessions(self) -> Mapping[str, SessionKeys]:
        """Peer DID -> the session a message to that peer goes under now (a snapshot)."""
        return self.table.sending_view(now_ms=self._clock.now_ms())

    def knows(self, peer: str) -> bool:
        """Whether a session was ever established with ``peer`` (so it can be rekeyed)."""
        return peer in self._known

    def open(self, frame: SessionFrame) -> OpenedSessionFrame:
        """Open a session frame under the session it names.

        Raises:
            UnknownSession, SessionExpired, InvalidSessionMAC.
        """
        return self.table.open(frame, now_ms=self._clock.now_ms())

    def for_sending(self, peer: str) -> tuple[SessionKeys | None, bool]:
        """The session to send one frame to ``peer`` under (counted), and whether to rekey.

        ``(None, True)``: no usable session (none, or all ended): handshake first.
        """
        now = self._clock.now_ms()
        held = self.table.for_sending(peer, now_ms=now)
        if held is None:
            return None, True
        held.sent += 1
        return held.keys, held.rekey_due(now, self.table.limits)

    def reply_session(self, peer: str, session_id: bytes | None) -> SessionKeys | None:
        """The session a request came in under, for its reply (counted); None if gone."""
        held = None if session_id is None else self.table.get(peer, session_id)
        if held is None:
            return None
        held.sent += 1
        return held.keys

    def _hold(self, keys: SessionKeys, *, established: bool) -> None:
        self.table.add(keys, now_ms=self._clock.now_ms(), established=established)
        if established:
            self._known.add(keys.peer.did)

    # -- responder -------------------------------------------------------------------------

    async def answer(self, data: bytes) -> bytes:
        """Handle one handshake request; returns the reply bytes (never raises)."""
        try:
            step, message = decode_step(data)
        except WireFormatError as exc:
            return self._refuse("handshake_failed", str(exc), None, b"")
        if step == "hello":
            return await self._answer_hello(message)
        if step == "confirm":
            return self._answer_confirm(message)
        return self._refuse("handshake_failed", f"unknown step {step[:32]!r}", None, b"")

    async def _answer_hello(self, message: bytes) -> bytes:
        responder = HandshakeResponder(
            self._identity, clock=self._clock, seen_hellos=self._seen_hellos, limits=self._limits
        )
        try:
            offer = responder.receive_hello(message)
        except HandshakeError as exc:
            return self._refuse(exc.code, str(exc), None, _session_id_of(message) or b"")
        if self._partition is not None and not self._partition.owns(offer.session_id):
            reason = f"another member of this identity owns this session id ({self._partition})"
            return self._refuse("wrong_partition", reason, offer.did, offer.session_id)
        try:
            verdict = await self._check_offer(offer)
        except Exception as exc:  # a failing hook must refuse, never accept
            logger.exception("handshake hook failed")
            verdict = Verdict.deny("hook_error", type(exc).__name__)
        sid = offer.session_id
        if not verdict.allowed:
            return self._refuse(verdict.code, verdict.reason, offer.did, sid)
        if self.table.get(offer.did, sid) is not None:
            # Sessions are found by (peer, id): an id may not name two of them.
            return self._refuse("handshake_failed", "session id already in use", offer.did, sid)
        self._prune()
        if len(self._pending) >= self._max_pending:
            return self._refuse("busy", "too many handshakes in progress", offer.did, sid)
        accept = responder.accept(capabilities=self._capabilities)
        deadline = self._clock.now_ms() + self._limits.max_age_ms
        self._pending[offer.session_id] = (responder, deadline)
        return encode_accept(accept)

    def _answer_confirm(self, message: bytes) -> bytes:
        self._prune()
        session_id = _session_id_of(message)
        entry = self._pending.pop(session_id, None) if session_id else None
        if entry is None:
            reason = "no pending handshake for this confirm"
            return self._refuse("handshake_failed", reason, None, session_id or b"")
        responder = entry[0]
        try:
            keys = responder.confirm(message)
        except HandshakeError as exc:
            assert session_id is not None
            return self._refuse(exc.code, str(exc), None, session_id)
        self._hold(keys, established=True)
        self._report("handshake", "established", keys.peer.did, "as responder")
        return encode_ok(self._identity, keys.session_id)

    def _prune(self) -> None:
        now = self._clock.now_ms()
        for session_id in [s for s, (_, deadline) in self._pending.items() if deadline < now]:
            del self._pending[session_id]

    def _refuse(self, code: str, reason: str, peer: str | None, session_id: bytes) -> bytes:
        self._report("handshake", code, peer, reason)
        return encode_refusal(self._identity, session_id, code, reason)

    # -- initiator -------------------------------------------------------------------------

    def start(self, peer: str) -> HandshakeInitiator:
        # HELLO times strictly increase per peer: a later handshake makes a newer
        # session even within one millisecond (sessions are ordered by them).
        issued_at = max(self._clock.now_ms(), self._last_hello.get(peer, 0) + 1)
        self._last_hello[peer] = issued_at
        partition = self._partition
        return HandshakeInitiator(
            self._identity,
            peer,
            clock=self._clock,
            capabilities=self._capabilities,
            limits=self._limits,
            issued_at_ms=issued_at,
            random_bytes=os.urandom if partition is None else session_id_source(partition),
        )

    async def complete(
        self, initiator: HandshakeInitiator, peer: str, request: Request
    ) -> SessionKeys:
        """Run the three messages through ``request`` (to the peer's handshake subject).

        Only answers that prove themselves count: an ACCEPT the initiator verifies
        for this HELLO, or an ``ok`` / ``refused`` signed by the peer for this
        session. Anything else on the reply subject is junk: reported
        (``handshake_junk_reply``) and ignored, and the wait goes on.

        The keys are held (to open frames, not yet to send under) as soon as the
        ACCEPT verifies: the responder holds the session once it takes the CONFIRM
        and may send under it before the ``ok`` arrives here. A signed refusal of
        the CONFIRM forgets them; a lost ``ok`` does not (the responder may hold
        the session), they then expire.

        Raises:
            HandshakeRefused: the peer refused (``remote_code`` says why), signed.
            RequestTimeout, NoResponders: no valid answer.
        """
        sid = initiator.session_id

        def hello_answer(data: bytes) -> Answer:
            answer = self._checked(data, peer, sid)
            if answer.kind == "accept":
                try:
                    confirm, keys = initiator.finish(answer.confirm)
                except HandshakeError as exc:
                    self._junk(peer, str(exc))
                return Answer("accept", confirm=confirm, keys=keys)
            return answer

        def confirm_answer(data: bytes) -> Answer:
            answer = self._checked(data, peer, sid)
            if answer.kind == "accept":
                self._junk(peer, "an accept where the confirm's answer was due")
            return answer

        answer = await request(encode_step("hello", initiator.hello()), hello_answer)
        if answer.kind != "accept" or answer.keys is None:
            raise HandshakeRefused(
                f"{peer} refused the handshake: {answer.reason}", remote_code=answer.code
            )
        keys = answer.keys
        self._hold(keys, established=False)
        answer = await request(encode_step("confirm", answer.confirm), confirm_answer)
        if answer.kind != "ok":
            self.table.discard(peer, sid)
            raise HandshakeRefused(
                f"{peer} refused the confirm: {answer.reason}", remote_code=answer.code
            )
        if self.table.establish(peer, sid) is None:  # dropped meanwhile (per-peer cap)
            self._hold(keys, established=True)
        self._known.add(peer)
        self._report("handshake", "established", peer, "as initiator")
        return keys

    def _checked(self, data: bytes, peer: str, sid: bytes) -> Answer:
        """Parse a reply and check the signature of an ``ok`` or ``refused``; junk raises.

        An ``accept`` comes back with the ACCEPT message in ``confirm`` (unchecked:
        the initiator verifies it).
        """
        try:
            kind, value, reason, signature = decode_reply(data)
            if kind == "accept":
                assert isinstance(value, bytes)
                return Answer("accept", confirm=value)
            code = value if isinstance(value, str) else ""
            check_signed(peer, sid, kind, code, reason, signature)
        except WireFormatError as exc:
            self._junk(peer, str(exc))
        return Answer(kind, code, reason)

    def _junk(self, peer: str, detail: str) -> NoReturn:
        self._report("handshake", "handshake_junk_reply", peer, detail)
        raise HandshakeError(f"ignored a handshake reply: {detail}")


def _session_id_of(message: bytes) -> bytes | None:
    """Peek the session id of a HELLO or CONFIRM (verified later, or never: it only
    selects a pending responder, or the session a refusal is bound to)."""
    try:
        body, _ = msgpack.unpackb(message, raw=False, max_ext_len=0)
        fields = msgpack.unpackb(body, raw=False, max_ext_len=0)
        session_id = fields[1]
    except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException, RecursionError):
        return None
    return session_id if isinstance(session_id, bytes) else None
