"""Hook points where the registry, trust, policy and saga layers plug into a node.

An :class:`Interceptor` sees every verified inbound message, every outbound
message, every handshake offer and every handler outcome. It answers with an
explicit :class:`Verdict` (never ``None``): :data:`ALLOW`, or a refusal with a
stable ``code``. Interceptors run in :class:`Stage` order, then registration order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from iatp.envelope import Envelope
from iatp.handshake import PeerOffer


class Stage(enum.IntEnum):
    """Order of the inbound checks after signature, validity and replay."""

    REVOCATION = 10
    POLICY = 20
    TRUST = 30
    SAGA = 40


class Direction(enum.Enum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class Outcome(enum.Enum):
    """How a handled message ended; the trust layer turns this into evidence."""

    SUCCESS = "success"
    FAILURE = "failure"
    REJECTED = "rejected"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    code: str = "allowed"
    reason: str = ""

    @classmethod
    def deny(cls, code: str, reason: str) -> Verdict:
        return cls(False, code, reason)


ALLOW = Verdict(True)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message that passed signature, validity and replay checks."""

    envelope: Envelope
    subject: str
    is_request: bool
    authenticated_by: str = "signature"
    """``"signature"`` (Ed25519, verifiable by anyone) or ``"session"`` (a handshake
    session's AEAD: convinces only this node). Evidence, audit and saga state must
    come from signed messages only."""
    sealed: bool = False
    """The signed envelope came encrypted to this node (iatp.md §16): its reply is too."""
    session_id: bytes | None = None
    """The handshake session a session-authenticated message came under (its reply goes
    under the same one, iatp.md §15)."""

    @property
    def is_signed(self) -> bool:
        return self.authenticated_by == "signature"

    @property
    def sender(self) -> str:
        return self.envelope.sender

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def body(self) -> bytes:
        return self.envelope.body


@runtime_checkable
class Interceptor(Protocol):
    async def check_inbound(self, message: InboundMessage) -> Verdict: ...

    async def check_outbound(self, envelope: Envelope) -> Verdict: ...

    async def check_handshake(self, offer: PeerOffer) -> Verdict: ...

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None: ...


class PassThroughInterceptor:
    """Allows everything; subclass and override only the hooks you need."""

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        return ALLOW

    async def check_outbound(self, envelope: Envelope) -> Verdict:
        return ALLOW

    async def check_handshake(self, offer: PeerOffer) -> Verdict:
        return ALLOW

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        return None
