"""Which DID hosts an AutoGen agent type, and whether a signer may speak for one.

Every runtime gives each agent type it hosts its own identity (a MeshNode, a DID)
and publishes a signed directory card offering ``capability_for(agent_type)``.
Several runtimes may host the same type (replicas: a primary and standbys).

* :class:`HostResolver` ranks a type's hosts: live cards only, never a blocked
  (quarantined or revoked) DID, only pinned DIDs when the type is pinned; then
  eligible hosts first (no drift alarm, ring at most ``max_ring``), by trust score,
  then by DID so that every runtime ranks alike.
* :class:`SenderBinding` (a node interceptor) refuses an AutoGen message whose
  signed ``ag_sender`` names a type the signing DID does not host
  (``autogen_sender_unbound``), whose headers or body are malformed or whose body
  holds another type than the envelope says (``autogen_malformed``: the policy
  decides on the envelope's type), that is addressed to a type this node does not
  host (``autogen_wrong_recipient``), or that breaks the rules of a team's topics
  (``autogen_team_forged``, :mod:`.team_binding`).
* :class:`EvidenceFilter` passes only the outcomes that are evidence to the trust
  receipts (a team's turns, refusals), not every echo of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping

from agentmesh.directory.directory import Directory
from agentmesh.integrations.autogen.errors import AgentUnreachable, WireError
from agentmesh.integrations.autogen.team_binding import TEAM_FORGED, TeamBinding
from agentmesh.integrations.autogen.wire import (
    DONE_TYPE,
    MESSAGE_PREFIX,
    capability_for,
    parse_routing,
    unpack_body,
)
from agentmesh.node.addressing import TOPIC_RECIPIENT_PREFIX
from agentmesh.node.interceptors import (
    ALLOW,
    InboundMessage,
    Interceptor,
    Outcome,
    PassThroughInterceptor,
    Verdict,
)
from iatp.envelope import Envelope
from iatp.handshake import PeerOffer
from trust.engine import TrustEngine

Blocked = Callable[[str], bool]
POLL_SECONDS = 0.02
UNBOUND_MEMORY_S = 30.0


class HostResolver:
    """Ranks the hosts of agent types from the directory, the kill switch and trust.

    Args:
        directory: a started directory (local reads).
        local: agent type -> DID of the types this runtime hosts itself.
        blocked: ``did -> bool``, true while quarantined or revoked (the kill switch).
        trust: the trust engine for eligibility and ranking (optional).
        max_ring: hosts in a higher ring are not eligible (3 = no ring requirement).
    """

    def __init__(
        self,
        directory: Directory,
        local: Mapping[str, str],
        *,
        blocked: Blocked | None = None,
        trust: TrustEngine | None = None,
        max_ring: int = 3,
    ) -> None:
        self.directory = directory
        self.local = local
        self.blocked = blocked
        self.trust = trust
        self.max_ring = max_ring
        self._pins: dict[str, frozenset[str]] = {}

    def pin(self, agent_type: str, dids: Collection[str]) -> None:
        """Accept only ``dids`` as hosts of ``agent_type`` (routing and sender binding)."""
        self._pins[agent_type] = frozenset(dids)

    def is_blocked(self, did: str) -> bool:
        return self.blocked is not None and self.blocked(did)

    def eligible(self, did: str) -> bool:
        """Not blocked, not sandboxed by a drift alarm, ring at most ``max_ring``.

        An agent on probation (a first failure-rate alarm) stays eligible; its cut
        score ranks it after the unflagged hosts (:meth:`hosts`).
        """
        if self.is_blocked(did):
            return False
        if self.trust is None:
            return True
        return not self.trust.sandboxed(did) and self.trust.ring(did) <= self.max_ring

    def hosts(self, agent_type: str) -> list[str]:
        """Every admissible host of ``agent_type``, best first (may be empty)."""
        own = self.local.get(agent_type)
        if own is not None:
            return [own]
        pinned = self._pins.get(agent_type)
        dids = {
            card.did
            for card in self.directory.find(capability_for(agent_type))
            if (pinned is None or card.did in pinned) and not self.is_blocked(card.did)
        }
        trust = self.trust

        def rank(did: str) -> tuple[bool, float, str]:
            return (not self.eligible(did), -(trust.score(did) if trust else 0.0), did)

        return sorted(dids, key=rank)

    def primary(self, agent_type: str) -> str | None:
        hosts = self.hosts(agent_type)
        return hosts[0] if hosts else None

    async def wait_primary(self, agent_type: str, *, timeout: float, recipient: str) -> str:
        """The best host, waiting up to ``timeout`` for a card to appear.

        Raises:
            AgentUnreachable: no admissible host (``cause="no_host"``).
        """
        deadline = time.monotonic() + timeout
        while True:
            did = self.primary(agent_type)
            if did is not None:
                return did
            if time.monotonic() >= deadline:
                raise AgentUnreachable(
                    f"no live, admissible host of {agent_type!r} in the directory",
                    cause="no_host",
                    recipient=recipient,
                )
            await asyncio.sleep(POLL_SECONDS)

    def binds(self, did: str, agent_type: str) -> bool:
        """Whether ``did`` may speak for ``agent_type`` (hosts it here, or a live card says so)."""
        if self.local.get(agent_type) == did:
            return True
        pinned = self._pins.get(agent_type)
        if pinned is not None and did not in pinned:
            return False
        card = self.directory.lookup(did, follow_rotation=False)
        if card is None:
            return False
        capability = capability_for(agent_type)
        return any(c.name == capability for c in card.capabilities)


class SenderBinding(PassThroughInterceptor):
    """Node hook: AutoGen headers well formed, signer hosts the claimed sender, right recipient.

    Args:
        resolver: the runtime's host resolver.
        hosted: the agent type this node hosts (``None`` for the runtime's own node).
        channel_recipient: the envelope recipient of this runtime's broadcast channel.
        bind_timeout: how long to wait, once per (DID, type), for a card that has not
            reached this directory yet (a host that just started).
        teams: the teams whose topic rules this node enforces (the runtime's).
        local: the DIDs of the runtime's own nodes (a live view).
    """

    def __init__(
        self,
        resolver: HostResolver,
        *,
        hosted: str | None,
        channel_recipient: str,
        bind_timeout: float = 0.5,
        teams: TeamBinding | None = None,
        local: Collection[str] = (),
    ) -> None:
        self.resolver = resolver
        self.hosted = hosted
        self.channel_recipient = channel_recipient
        self.bind_timeout = bind_timeout
        self.teams = teams
        self.local = local
        self._waited: dict[tuple[str, str], float] = {}

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        envelope = message.envelope
        if not envelope.type.startswith(MESSAGE_PREFIX) or envelope.type == DONE_TYPE:
            return ALLOW
        try:
            routing = parse_routing(envelope.headers)
            type_name, _, payload = unpack_body(envelope.body)
        except WireError as exc:
            return Verdict.deny("autogen_malformed", str(exc))
        if MESSAGE_PREFIX + type_name != envelope.type:
            return Verdict.deny(
                "autogen_malformed",
                f"the body holds a {type_name[:100]!r}, the envelope says {envelope.type!r}",
            )
        if routing.kind == "send":
            assert routing.recipient is not None
            if routing.recipient.type != self.hosted:
                return Verdict.deny(
                    "autogen_wrong_recipient",
                    f"{routing.recipient.type!r} is not hosted by this node",
                )
        elif envelope.recipient != self.channel_recipient:
            return Verdict.deny("autogen_malformed", "a publish must go to the runtime channel")
        if routing.sender is not None and not await self._binds(
            envelope.sender, routing.sender.type
        ):
            return Verdict.deny(
                "autogen_sender_unbound",
                f"{envelope.sender} does not host {routing.sender.type!r}",
            )
        if self.teams is not None:
            reason = self.teams.check(
                routing, type_name, payload, signed_here=envelope.sender in self.local
            )
            if reason is not None:
                return Verdict.deny(TEAM_FORGED, reason)
        return ALLOW

    async def _binds(self, did: str, agent_type: str) -> bool:
        if self.resolver.binds(did, agent_type):
            return True
        key = (did, agent_type)
        now = time.monotonic()
        if now - self._waited.get(key, -UNBOUND_MEMORY_S) < UNBOUND_MEMORY_S:
            return False  # waited for this card recently: do not stall the node again
        if len(self._waited) > 4096:
            self._waited.clear()
        self._waited[key] = now
        deadline = now + self.bind_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            if self.resolver.binds(did, agent_type):
                return True
        return False


class EvidenceFilter:
    """Forwards outcomes to a receipt interceptor only when they are evidence.

    Refusals always are. Other outcomes are when the AutoGen message type is in
    ``types`` (``None``: every AutoGen message) and the sender is not one of this
    runtime's own DIDs (``local``).
    """

    def __init__(
        self, inner: Interceptor, *, types: frozenset[str] | None, local: Collection[str]
    ) -> None:
        self.inner = inner
        self.types = types
        self.local = local

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        return await self.inner.check_inbound(message)

    async def check_outbound(self, envelope: Envelope) -> Verdict:
        return await self.inner.check_outbound(envelope)

    async def check_handshake(self, offer: PeerOffer) -> Verdict:
        return await self.inner.check_handshake(offer)

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        if message.sender in self.local:
            return
        if outcome is not Outcome.REJECTED:
            kind = message.type
            if not kind.startswith(MESSAGE_PREFIX):
                return
            if self.types is not None and kind[len(MESSAGE_PREFIX) :] not in self.types:
                return
        await self.inner.record_outcome(message, outcome)


def channel_recipient(channel: str) -> str:
    return TOPIC_RECIPIENT_PREFIX + channel


__all__ = ["EvidenceFilter", "HostResolver", "SenderBinding", "channel_recipient"]
