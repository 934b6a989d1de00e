"""The federation checks of one node: arrival (the partner calls in) and departure.

Install :class:`FederationGuard` at ``Stage.REVOCATION`` *before* admission. A
message is foreign when it carries a ``membership`` header (the sender's
membership credential, signed inside the envelope) or comes from a known
partner agent. For a foreign message to this node, in order:

1. the credential verifies (PyNaCl, cached): issued by a partner whose agreement
   is in force, for this sender, not expired, not revoked by the issuer's status
   list, and the sender is not one of this organization's own agents;
2. the partner's authority has not quarantined the sender;
3. this organization exports this node to the partner for the operation (the
   message type, or the action of a ``saga.step``);
4. this organization's ceilings for the partner allow it: allowed tools, rate
   (token bucket per partner) and daily budget.

Then the node's own policy runs as for any message, with the foreign agent's ring
capped by the agreement (:class:`FederatedRings`). Partner authorities (their
stewards) may only send ``federation.*`` messages to this organization's authority.

On departure to a partner agent: the agreement is in force, the partner exports
that agent for the operation and allows it, and the agent is not blocked by its
organization. Refusals carry the error's code and are counted and audited by the
node like any refusal.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

from agentmesh.federation.agreement import matches
from agentmesh.federation.errors import (
    CeilingExceeded,
    FederationError,
    InvalidMembership,
    NotExported,
)
from agentmesh.federation.view import FederationView, Partnership
from agentmesh.node.interceptors import ALLOW, InboundMessage, Outcome, Verdict
from agentmesh.policy.ratelimit import TokenBucket
from agentmesh.policy.rings import KERNEL_RING
from agentmesh.saga.errors import StepMessageError
from agentmesh.saga.wire import STEP_TYPE, decode_request
from iatp.envelope import Envelope
from iatp.handshake import PeerOffer

MEMBERSHIP_HEADER = "membership"
STEWARD_PREFIX = "federation."
CHUNK = 1000
MAX_CHUNKS = 8


def credential_headers(token: str) -> dict[str, str]:
    """The envelope headers that carry a membership credential.

    IATP header values are at most 1024 characters, so the credential is cut into
    ``membership``, ``membership.1``, ``membership.2``, ... (at most 8000 characters).

    Raises:
        ValueError: the credential is longer than 8000 characters.
    """
    parts = [token[i : i + CHUNK] for i in range(0, len(token), CHUNK)] or [""]
    if len(parts) > MAX_CHUNKS:
        raise ValueError("a membership credential is at most 8000 characters")
    return {
        (MEMBERSHIP_HEADER if i == 0 else f"{MEMBERSHIP_HEADER}.{i}"): part
        for i, part in enumerate(parts)
    }


def credential_of(envelope: Envelope) -> str | None:
    """The membership credential an envelope carries (joined from its headers), if any."""
    first = envelope.header(MEMBERSHIP_HEADER)
    if first is None:
        return None
    parts = [first]
    for i in range(1, MAX_CHUNKS):
        part = envelope.header(f"{MEMBERSHIP_HEADER}.{i}")
        if part is None:
            break
        parts.append(part)
    return "".join(parts)


def operation_of(message_type: str, body: bytes) -> str:
    """What an agreement's export lists: the message type, or a saga step's action."""
    if message_type != STEP_TYPE:
        return message_type
    try:
        return decode_request(body).action
    except StepMessageError:
        return message_type


def _deny(error: FederationError) -> Verdict:
    return Verdict.deny(error.code, str(error))


class FederationGuard:
    """Arrival and departure checks for cross-organization messages (an interceptor).

    Args:
        view: the started federation view.
        node: this node's DID.
        monotonic: seconds for rate limits (default ``time.monotonic``).
    """

    def __init__(
        self,
        view: FederationView,
        node: str,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = view
        self.node = node
        self._monotonic = monotonic
        self._buckets: dict[str, TokenBucket] = {}
        self._budget: dict[str, tuple[datetime.date, int]] = {}

    # -- arrival --------------------------------------------------------------------

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        envelope = message.envelope
        if envelope.correlation_id is not None:
            return ALLOW  # a reply to this node's own request: checked against that request
        sender = envelope.sender
        partnership = self._steward(sender)
        if partnership is not None:
            return self._steward_verdict(envelope, partnership)
        token = credential_of(envelope)
        if token is None:
            known = self.view.member(sender)
            if known is None:
                return ALLOW  # not a federated message: local checks decide
            token = known[1]
        try:
            membership = self.view.verify_membership(token, sender)
            partnership = self.view.partnership(membership.organization)
            if partnership is None:  # verify_membership found one a moment ago
                raise InvalidMembership("the agreement is no longer in force")
            self._check_quarantine(sender, partnership)
            operation = operation_of(envelope.type, envelope.body)
            self._check_export(partnership, operation)
            self._check_ceilings(partnership, operation)
        except FederationError as error:
            return _deny(error)
        return ALLOW

    def _steward(self, sender: str) -> Partnership | None:
        for partnership in self.view.partnerships():
            if partnership.theirs.authority == sender:
                return partnership
        return None

    def _steward_verdict(self, envelope: Envelope, partnership: Partnership) -> Verdict:
        if self.node == partnership.mine.authority and envelope.type.startswith(STEWARD_PREFIX):
            return ALLOW
        return _deny(
            NotExported(
                f"{partnership.theirs.org}'s authority may only send federation.* to "
                f"{partnership.mine.org}'s authority"
            )
        )

    def _check_quarantine(self, sender: str, partnership: Partnership) -> None:
        order = self.view.quarantine_of(sender)
        if order is not None:
            raise InvalidMembership(
                f"{partnership.theirs.org} {order.kind.value} {sender}: {order.reason}"
            )

    def _check_export(self, partnership: Partnership, operation: str) -> None:
        export = partnership.mine.export_for(self.node)
        if export is None or not export.allows(operation):
            raise NotExported(
                f"{partnership.mine.org} does not export {operation!r} on {self.node} "
                f"to {partnership.theirs.org}"
            )

    def _check_ceilings(self, partnership: Partnership, operation: str) -> None:
        ceilings = partnership.mine.ceilings
        partner = partnership.theirs.org
        if not matches(ceilings.allowed_tools, operation):
            raise CeilingExceeded(f"{operation!r} is not an allowed tool for {partner}")
        now = self._monotonic()
        bucket = self._buckets.get(partner)
        if bucket is None:
            bucket = self._buckets[partner] = TokenBucket(
                ceilings.rate_per_second, ceilings.burst, now
            )
        if bucket.take(now) > 0:
            raise CeilingExceeded(
                f"{partner} is above {ceilings.rate_per_second:g}/s (burst {ceilings.burst})"
            )
        if ceilings.daily_budget is not None:
            now_ms = self.view.clock.now_ms()
            today = datetime.datetime.fromtimestamp(now_ms / 1000, datetime.UTC).date()
            day, used = self._budget.get(partner, (today, 0))
            used = used if day == today else 0
            if used >= ceilings.daily_budget:
                raise CeilingExceeded(f"{partner} used its {ceilings.daily_budget} calls today")
            self._budget[partner] = (today, used + 1)

    # -- departure -------------------------------------------------------------------

    async def check_outbound(self, envelope: Envelope) -> Verdict:
        if envelope.correlation_id is not None:
            return ALLOW
        recipient = envelope.recipient
        token = self.view.credential_for(recipient)
        if token is None:
            return ALLOW  # not a partner agent this node knows: local checks decide
        try:
            membership = self.view.verify_membership(token, recipient)
            partnership = self.view.partnership(membership.organization)
            if partnership is None:
                raise InvalidMembership("the agreement is no longer in force")
            self._check_quarantine(recipient, partnership)
            operation = operation_of(envelope.type, envelope.body)
            export = partnership.theirs.export_for(recipient)
            if export is None or not export.allows(operation):
                raise NotExported(
                    f"{partnership.theirs.org} does not export {operation!r} on "
                    f"{recipient} to {partnership.mine.org}"
                )
            if not matches(partnership.theirs.ceilings.allowed_tools, operation):
                raise CeilingExceeded(
                    f"{partnership.theirs.org} does not allow {operation!r} from "
                    f"{partnership.mine.org}"
                )
        except FederationError as error:
            return _deny(error)
        return ALLOW

    async def check_handshake(self, offer: PeerOffer) -> Verdict:
        if offer.did in self.view:
            return Verdict.deny(
                "federation_error", "handshakes do not cross federation links: send signed"
            )
        return ALLOW

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        return None


class FederatedRings:
    """A ring source: a partner agent's ring is no better than its agreement allows.

    Other agents get the kernel ring here, which restricts nothing (the enforcer
    takes the most restrictive ring of all its sources).
    """

    def __init__(self, view: FederationView) -> None:
        self.view = view

    def ring(self, did: str) -> int:
        known = self.view.member(did)
        if known is None:
            return KERNEL_RING
        partnership = self.view.partnership(known[0].organization)
        if partnership is None:
            return 3
        return partnership.mine.ceilings.max_ring


__all__ = [
    "MEMBERSHIP_HEADER",
    "FederatedRings",
    "FederationGuard",
    "credential_headers",
    "credential_of",
    "operation_of",
]
