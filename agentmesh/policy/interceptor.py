"""The node's policy interceptor: the governor on every inbound and outbound message.

Install at :attr:`~agentmesh.node.interceptors.Stage.POLICY`::

    node.add_interceptor(PolicyInterceptor(governor), stage=Stage.POLICY)

Inbound: the sender's current ring must hold the message type as a capability,
then the policy decides (``kind=message, direction=inbound, peer=sender``), then
the sender's rate limit and budget. Outbound: the policy decides for the
recipient (``direction=outbound``). Replies and error replies (which carry a
``correlation_id``) answer a request that was already authorized inbound, so
they skip the policy but never go to a quarantined agent. A refusal becomes a
:class:`Verdict` with the denial's code and a reason naming the rule and ring;
the node audits it.
"""

from __future__ import annotations

from types import MappingProxyType

from agentmesh.node.interceptors import ALLOW, InboundMessage, Outcome, Verdict
from agentmesh.policy.decision import DecisionRequest
from agentmesh.policy.errors import PolicyDenied
from agentmesh.policy.governor import Governor
from iatp.envelope import Envelope
from iatp.handshake import PeerOffer

TOPIC_PREFIX = "topic:"


def _verdict(denied: PolicyDenied) -> Verdict:
    return Verdict.deny(denied.code, f"{denied.reason} [rule={denied.rule} ring={denied.ring}]")


class PolicyInterceptor:
    """Applies a :class:`Governor` to messages (and refuses quarantined handshakes)."""

    def __init__(self, governor: Governor) -> None:
        self.governor = governor

    def _blocked(self, did: str) -> bool:
        return self.governor.blocked is not None and self.governor.blocked(did)

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        envelope = message.envelope
        request = DecisionRequest(
            envelope.type,
            kind="message",
            direction="inbound",
            peer=envelope.sender,
            resource=envelope.header("resource"),
            args=MappingProxyType(dict(envelope.headers)),
            context=MappingProxyType({"subject": message.subject, "request": message.is_request}),
        )
        try:
            self.governor.authorize(request, record=False)
        except PolicyDenied as denied:
            return _verdict(denied)
        return ALLOW

    async def check_outbound(self, envelope: Envelope) -> Verdict:
        recipient = envelope.recipient
        peer = None if recipient.startswith(TOPIC_PREFIX) else recipient
        if envelope.correlation_id is not None:
            if peer is not None and self._blocked(peer):
                return Verdict.deny("quarantined", f"recipient {peer} is quarantined")
            return ALLOW
        request = DecisionRequest(
            envelope.type,
            kind="message",
            direction="outbound",
            peer=peer,
            resource=envelope.header("resource") or (recipient if peer is None else None),
            args=MappingProxyType(dict(envelope.headers)),
        )
        try:
            self.governor.authorize(request, check_ring=False, meter=False, record=False)
        except PolicyDenied as denied:
            return _verdict(denied)
        return ALLOW

    async def check_handshake(self, offer: PeerOffer) -> Verdict:
        if self._blocked(offer.did):
            return Verdict.deny("quarantined", f"peer {offer.did} is quarantined")
        return ALLOW

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        return None


__all__ = ["PolicyInterceptor"]
