"""The handshake sessions one node holds with its peers: found by id, superseded, expired.

The rules are ``docs/iatp.md`` section 15.1; in short:

* A node may hold several sessions with one peer: each side may have initiated
  one (concurrently, or each for its own rekey), and a replaced session must
  still open the frames already on their way. So a session frame is looked up
  by ``(sender, session_id)``, never by sender alone.
* Sessions initiated by the same party are ordered by ``(HELLO issued_at_ms,
  session_id)``, which both sides know. Once a frame authenticates under a
  session, the older sessions of the same initiator with that peer are
  *superseded*: they stay valid for ``grace_ms``, then are forgotten
  (``unknown_session``). The peer has shown that it moved on; frames it sent
  before that still arrive within the grace window.
* A session *expires* ``max_age_ms`` after the receiver first held its keys, or
  after ``max_messages`` frames arrived under it: ``session_expired``.
* A sender uses its newest established session that it initiated, else the
  newest established one the peer initiated, and handshakes again (rekeys)
  once that session is within ``rekey_margin_ms`` of its age limit or
  ``rekey_margin_messages`` of its message limit, sending under it meanwhile.

Pure and synchronous: every call takes ``now_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass

from iatp.errors import SessionExpired, UnknownSession
from iatp.handshake import SessionKeys
from iatp.session_frame import OpenedSessionFrame, SessionFrame, verify_session_frame


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """How long sessions live and when a sender rekeys.

    Attributes:
        max_age_ms: a session expires this long after the receiver first held its keys.
        max_messages: a session expires after this many frames in one direction.
        rekey_margin_ms: a sender handshakes again this long before the age limit
            (None: a twelfth of ``max_age_ms``, 5 min of the default hour).
        rekey_margin_messages: ... and this many frames before the message limit
            (None: a tenth of ``max_messages``).
        grace_ms: a superseded session still opens frames for this long.
        max_per_peer: sessions held per peer; beyond it the oldest superseded
            ones (then the oldest of all but each initiator's newest) are dropped.
    """

    max_age_ms: int = 3_600_000
    max_messages: int = 1_000_000
    rekey_margin_ms: int | None = None
    rekey_margin_messages: int | None = None
    grace_ms: int = 30_000
    max_per_peer: int = 16

    def __post_init__(self) -> None:
        if self.max_age_ms <= 0 or self.max_messages <= 0:
            raise ValueError("max_age_ms and max_messages must be positive")
        if self.rekey_margin_ms is not None and not 0 <= self.rekey_margin_ms < self.max_age_ms:
            raise ValueError("rekey_margin_ms must be in [0, max_age_ms)")
        margin = self.rekey_margin_messages
        if margin is not None and not 0 <= margin < self.max_messages:
            raise ValueError("rekey_margin_messages must be in [0, max_messages)")
        if self.grace_ms < 0:
            raise ValueError("grace_ms cannot be negative")
        if self.max_per_peer < 2:
            raise ValueError("max_per_peer must be at least 2 (one per initiator)")

    @property
    def rekey_at_age_ms(self) -> int:
        """The age at which a sender starts a new handshake."""
        margin = self.rekey_margin_ms
        return self.max_age_ms - (self.max_age_ms // 12 if margin is None else margin)

    @property
    def rekey_at_messages(self) -> int:
        """The frames sent at which a sender starts a new handshake."""
        margin = self.rekey_margin_messages
        return self.max_messages - (self.max_messages // 10 if margin is None else margin)


@dataclass(slots=True)
class HeldSession:
    """One session a node holds, with the counters its limits apply to.

    Attributes:
        keys: the handshake's outcome.
        held_since_ms: when this node first held the keys (its age counts from here).
        established: False while an initiator waits for the responder's ``ok``: the
            session already opens frames (the responder may send first) but is not
            sent under.
        sent, received: frames sealed and opened under it.
        superseded_at_ms: when a newer session of the same initiator was first used.
        used: a frame has opened under it (its elders were superseded then).
    """

    keys: SessionKeys
    held_since_ms: int
    established: bool = True
    sent: int = 0
    received: int = 0
    superseded_at_ms: int | None = None
    used: bool = False

    @property
    def order(self) -> tuple[int, bytes]:
        """Position among the sessions of the same initiator (the same on both sides)."""
        return self.keys.issued_at_ms, self.keys.session_id

    def expired(self, now_ms: int, limits: SessionLimits) -> bool:
        """Past the age limit, or ``max_messages`` frames received: frames are refused."""
        return (
            now_ms - self.held_since_ms >= limits.max_age_ms or self.received >= limits.max_messages
        )

    def sendable(self, now_ms: int, limits: SessionLimits) -> bool:
        """Established, inside the age limit and below ``max_messages`` frames sent."""
        return (
            self.established
            and now_ms - self.held_since_ms < limits.max_age_ms
            and self.sent < limits.max_messages
            and not self.gone(now_ms, limits)
        )

    def rekey_due(self, now_ms: int, limits: SessionLimits) -> bool:
        """Within the rekey margin of a limit: time for the sender to handshake again."""
        return (
            now_ms - self.held_since_ms >= limits.rekey_at_age_ms
            or self.sent >= limits.rekey_at_messages
        )

    def gone(self, now_ms: int, limits: SessionLimits) -> bool:
        """Superseded past the grace window, or expired for longer than it."""
        if self.superseded_at_ms is not None and now_ms > self.superseded_at_ms + limits.grace_ms:
            return True
        return now_ms - self.held_since_ms >= limits.max_age_ms + limits.grace_ms


class SessionTable:
    """Every session a node holds, per peer and session id (see the module docstring)."""

    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits or SessionLimits()
        self._peers: dict[str, dict[bytes, HeldSession]] = {}
        self._swept_at_ms: int | None = None

    def __len__(self) -> int:
        return sum(len(sessions) for sessions in self._peers.values())

    def get(self, peer: str, session_id: bytes) -> HeldSession | None:
        sessions = self._peers.get(peer)
        return None if sessions is None else sessions.get(session_id)

    def holds(self, peer: str) -> bool:
        """Whether any session (even an expired one not yet forgotten) is held with ``peer``."""
        return bool(self._peers.get(peer))

    def add(self, keys: SessionKeys, *, now_ms: int, established: bool = True) -> HeldSession:
        """Hold a new session (replacing one with the same peer and id); returns its record."""
        peer = keys.peer.did
        held = HeldSession(keys, now_ms, established)
        self._peers.setdefault(peer, {})[keys.session_id] = held
        self._prune(peer, now_ms, keep=held)
        self._sweep(now_ms)
        return held

    def establish(self, peer: str, session_id: bytes) -> HeldSession | None:
        """The responder confirmed: the initiator may now send under the session."""
        held = self.get(peer, session_id)
        if held is not None:
            held.established = True
        return held

    def discard(self, peer: str, session_id: bytes) -> None:
        """Forget a session (the responder refused its CONFIRM)."""
        sessions = self._peers.get(peer)
        if sessions is not None:
            sessions.pop(session_id, None)
            if not sessions:
                del self._peers[peer]

    def open(self, frame: SessionFrame, *, now_ms: int) -> OpenedSessionFrame:
        """Find the frame's session, check its limits and open the frame.

        Raises:
            UnknownSession: no session ``(frame.sender, frame.session_id)`` held, or
                it was superseded longer than ``grace_ms`` ago.
            SessionExpired: the session is past its age or message limit.
            InvalidSessionMAC: the frame does not authenticate under the session.
        """
        held = self.get(frame.sender, frame.session_id)
        if held is not None and held.gone(now_ms, self.limits):
            self.discard(frame.sender, frame.session_id)
            held = None
        if held is None:
            raise UnknownSession(
                "no handshake session with this sender under this session id; "
                "the sender must handshake again",
                sender=frame.sender,
            )
        if held.expired(now_ms, self.limits):
            raise SessionExpired(
                "the session is past its age or message limit; the sender must handshake again",
                sender=frame.sender,
            )
        opened = verify_session_frame(frame, held.keys)
        held.received += 1
        if not held.used:
            held.used = True
            self._supersede_elders(held, now_ms)
        return opened

    def for_sending(self, peer: str, *, now_ms: int) -> HeldSession | None:
        """The session to send to ``peer`` under (the caller counts ``sent``), if any.

        This node's own newest established, unexpired session first; else the
        peer's newest.
        """
        best: HeldSession | None = None
        best_key: tuple[bool, tuple[int, bytes]] | None = None
        for held in self._peers.get(peer, {}).values():
            if not held.sendable(now_ms, self.limits):
                continue
            key = (held.keys.initiator != peer, held.order)
            if best_key is None or key > best_key:
                best, best_key = held, key
        return best

    def sending_view(self, *, now_ms: int) -> dict[str, SessionKeys]:
        """Peer -> the session :meth:`for_sending` would pick now."""
        view: dict[str, SessionKeys] = {}
        for peer in self._peers:
            held = self.for_sending(peer, now_ms=now_ms)
            if held is not None:
                view[peer] = held.keys
        return view

    def _supersede_elders(self, held: HeldSession, now_ms: int) -> None:
        initiator = held.keys.initiator
        for other in self._peers.get(held.keys.peer.did, {}).values():
            if (
                other is not held
                and other.superseded_at_ms is None
                and other.keys.initiator == initiator
                and other.order < held.order
            ):
                other.superseded_at_ms = now_ms

    def _prune(self, peer: str, now_ms: int, *, keep: HeldSession | None = None) -> None:
        sessions = self._peers.get(peer)
        if sessions is None:
            return
        for session_id in [s for s, h in sessions.items() if h.gone(now_ms, self.limits)]:
            if sessions[session_id] is not keep:
                del sessions[session_id]
        while len(sessions) > self.limits.max_per_peer:
            newest: dict[str, HeldSession] = {}
            for held in sessions.values():
                mine = newest.get(held.keys.initiator)
                if mine is None or held.order > mine.order:
                    newest[held.keys.initiator] = held
            spared = {id(h) for h in newest.values()} | {id(keep)}
            victims = [h for h in sessions.values() if id(h) not in spared]
            if not victims:
                break
            victim = min(
                victims,
                key=lambda h: (h.superseded_at_ms is None, h.superseded_at_ms or 0, h.order),
            )
            del sessions[victim.keys.session_id]
        if not sessions:
            del self._peers[peer]

    def _sweep(self, now_ms: int) -> None:
        """Forget gone sessions of every peer, at most once per grace window."""
        interval = max(self.limits.grace_ms, 1_000)
        if self._swept_at_ms is not None and now_ms - self._swept_at_ms < interval:
            return
        self._swept_at_ms = now_ms
        for peer in list(self._peers):
            self._prune(peer, now_ms)


__all__ = ["HeldSession", "SessionLimits", "SessionTable"]
