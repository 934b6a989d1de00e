"""A node's view of its federation: agreements in force and what partners shipped.

:class:`FederationView` mirrors the mesh's federation bucket
(:mod:`agentmesh.federation.store`) and verifies every value before using it:

* agreements must name this organization's authority as a party and carry both
  signatures; a revocation notice signed by either party ends the agreement id
  for good (a replayed agreement stays refused);
* a partner's status list must be signed by that partner and newer than the one
  held (an old list cannot un-revoke);
* a partner card must be signed by its agent, carry a membership credential
  issued by that partner for that agent, and be exported by the partner in the
  agreement; cards of this organization's own agents are never taken from a
  partner (an organization cannot claim another's agents);
* a partner quarantine must be signed by the partner authority about one of the
  partner's own agents.

Everything refused is counted (``refused``) and audited with its code.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from agentmesh.audit import AuditEvent, AuditSink, MemoryAuditSink
from agentmesh.directory.watcher import WatchedBucket
from agentmesh.federation.agreement import (
    FederationAgreement,
    Party,
    decode_agreement,
    decode_revocation,
)
from agentmesh.federation.errors import (
    AgreementError,
    AgreementRevoked,
    FederationError,
    InvalidMembership,
    MembershipRevoked,
    StatusListError,
    UntrustedOrganization,
)
from agentmesh.federation.membership import Membership, verify_membership
from agentmesh.federation.status import StatusList, decode_status_list
from agentmesh.federation.store import decode_partner_card, federation_bucket
from agentmesh.lifecycle import Lifecycle
from agentmesh.transport.base import KVEntry, KVOperation, Transport
from iatp.clock import Clock, SystemClock
from iatp.did import DID_KEY_PREFIX
from iatp.errors import AgentMeshError
from registry.card import AgentCard, decode_card
from registry.revocation import (
    BLOCKING_KINDS,
    RevocationAuthorities,
    RevocationEntry,
    verify_revocation,
)
from registry.revocation import (
    decode_revocation as decode_order,
)

logger = logging.getLogger(__name__)
MAX_MEMBERSHIP_CACHE = 10_000


@dataclass(frozen=True, slots=True)
class Partnership:
    """An agreement in force with one partner, from this organization's side."""

    agreement: FederationAgreement
    mine: Party
    theirs: Party


@dataclass(frozen=True, slots=True)
class PartnerAgent:
    """A partner agent this organization can see: its card and verified membership."""

    card: AgentCard
    membership: Membership
    token: str


class FederationView(Lifecycle):
    """Agreements, partners' status lists, cards and quarantines, verified.

    Args:
        transport: the mesh's transport.
        mesh: the mesh (bucket namespace).
        organization: this organization's authority DID.
        org: this organization's name in agreements (its mesh name).
        is_local: whether a DID is one of this organization's agents.
        clock, audit: time source and audit sink.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        mesh: str,
        organization: str,
        org: str,
        is_local: Callable[[str], bool] = lambda did: False,
        clock: Clock | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.mesh = mesh
        self.organization = organization
        self.org = org
        self.is_local = is_local
        self.clock = clock or SystemClock()
        self.audit = audit if audit is not None else MemoryAuditSink()  # an empty sink is falsy
        self.refused: Counter[str] = Counter()
        self._agreements: dict[str, FederationAgreement] = {}
        self._revocations: dict[str, bytes] = {}
        self._revoked: set[str] = set()
        self._status: dict[str, StatusList] = {}
        self._raw_cards: dict[str, bytes] = {}
        self._raw_quarantines: dict[str, bytes] = {}
        self._cards: dict[str, PartnerAgent] = {}
        self._quarantined: dict[str, RevocationEntry] = {}
        self._memberships: dict[str, Membership] = {}
        self._members: dict[str, tuple[Membership, str]] = {}
        self._reported: set[tuple[str, str, int]] = set()
        self._shipped: dict[str, str] = {}
        self._listeners: list[Callable[[], None]] = []
        self._bucket = WatchedBucket(transport, federation_bucket(mesh), self._on_entry)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, *, timeout: float = 5.0) -> None:
        await self._bucket.start(timeout=timeout)

    async def aclose(self) -> None:
        await self._bucket.aclose()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (no arguments) after anything in the view changed."""
        self._listeners.append(callback)

    # -- ingest -------------------------------------------------------------------------

    def _refuse(self, code: str, key: str, detail: str) -> None:
        self.refused[code] += 1
        logger.warning("federation bucket %s refused (%s): %s", key, code, detail)
        self.audit.append(
            AuditEvent(
                at_ms=self.clock.now_ms(),
                node=self.organization,
                kind="federation_refused",
                code=code,
                subject=key,
                detail=detail,
            )
        )

    def _refuse_once(self, code: str, key: str, detail: str, value: bytes) -> None:
        """Refuse a stored value that is re-checked on every change, once per value and code."""
        mark = (key, code, hash(value))
        if mark not in self._reported:
            self._reported.add(mark)
            self._refuse(code, key, detail)

    def _on_entry(self, entry: KVEntry) -> None:
        if entry.operation is not KVOperation.PUT:
            return  # values are replaced, never removed: a delete changes nothing
        kind, _, rest = entry.key.partition(".")
        try:
            if kind == "agreement":
                self._take_agreement(entry.value)
            elif kind == "revocation":
                self._revocations[rest] = entry.value
            elif kind == "status":
                self._take_status(entry.value)
            elif kind == "card":
                self._raw_cards[rest] = entry.value
            elif kind == "quarantine":
                self._raw_quarantines[rest] = entry.value
            else:
                raise FederationError(f"unknown federation key {entry.key!r}")
        except AgentMeshError as exc:
            self._refuse(exc.code, entry.key, str(exc))
            return
        self._rebuild()

    def _take_agreement(self, data: bytes) -> None:
        agreement = decode_agreement(data)
        agreement.check_signatures()
        if agreement.party_of_authority(self.organization) is None:
            raise AgreementError(f"agreement {agreement.id} is not one of this organization's")
        if agreement.party(self.org).authority != self.organization:
            raise AgreementError(f"agreement {agreement.id} gives {self.org} another authority")
        held = self._agreements.get(agreement.id)
        if held is not None and held.version > agreement.version:
            raise AgreementError(
                f"agreement {agreement.id} v{agreement.version} is older than v{held.version}"
            )
        self._agreements[agreement.id] = agreement

    def _take_status(self, data: bytes) -> None:
        status = decode_status_list(data)
        held = self._status.get(status.organization)
        if held is not None and held.version > status.version:
            raise StatusListError(
                f"status list v{status.version} of {status.organization} is older than "
                f"v{held.version} (rollback refused)"
            )
        self._status[status.organization] = status

    def _rebuild(self) -> None:
        """Recompute revocations, cards and quarantines from the raw values."""
        for agreement_id, data in list(self._revocations.items()):
            agreement = self._agreements.get(agreement_id)
            if agreement is None or agreement_id in self._revoked:
                continue
            try:
                decode_revocation(data, agreement)
            except AgreementError as exc:
                del self._revocations[agreement_id]
                self._refuse(exc.code, f"revocation.{agreement_id}", str(exc))
                continue
            self._revoked.add(agreement_id)
        cards: dict[str, PartnerAgent] = {}
        for key, data in self._raw_cards.items():
            try:
                agent = self._verify_card(data)
            except AgentMeshError as exc:
                if exc.code != "card_expired":
                    self._refuse_once(exc.code, f"card.{key}", str(exc), data)
                continue
            org_key = agent.membership.organization.removeprefix(DID_KEY_PREFIX)
            if key == f"{org_key}.{agent.card.did.removeprefix(DID_KEY_PREFIX)}":
                cards[agent.card.did] = agent
            else:
                self._refuse_once("membership_invalid", f"card.{key}", "under another key", data)
        self._cards = cards
        quarantined: dict[str, RevocationEntry] = {}
        for key, data in self._raw_quarantines.items():
            try:
                entry = self._verify_quarantine(data)
            except AgentMeshError as exc:
                self._refuse_once(exc.code, f"quarantine.{key}", str(exc), data)
                continue
            held = quarantined.get(entry.subject)
            if held is None or entry.order > held.order:
                quarantined[entry.subject] = entry
        self._quarantined = quarantined
        for callback in self._listeners:
            try:
                callback()
            except Exception:
                logger.exception("federation view listener failed")

    def _verify_card(self, data: bytes) -> PartnerAgent:
        record = decode_partner_card(data)
        card = decode_card(record.card, now_ms=self.clock.now_ms())
        self.parse_membership(record.membership, card.did)  # issued by a partner, for this agent
        if not self.is_local(card.did):
            self._shipped[card.did] = record.membership  # kept even once revoked: it blocks
        membership = self.verify_membership(record.membership, card.did)
        partnership = self.partnership(membership.organization)
        assert partnership is not None  # verify_membership checked it
        if partnership.theirs.export_for(card.did) is None:
            raise FederationError(f"{partnership.theirs.org} does not export {card.did}")
        return PartnerAgent(card, membership, record.membership)

    def _verify_quarantine(self, data: bytes) -> RevocationEntry:
        entry = decode_order(data)
        agent = self._cards.get(entry.subject)
        organization = agent.membership.organization if agent is not None else entry.issuer
        if organization != entry.issuer or self.partnership(entry.issuer) is None:
            raise FederationError("a quarantine by a partner applies only to its own agents")
        members = frozenset({entry.subject}) if not self.is_local(entry.subject) else frozenset()
        verify_revocation(entry, RevocationAuthorities(organizations={entry.issuer: members}))
        return entry

    # -- queries ------------------------------------------------------------------------

    def partnerships(self) -> list[Partnership]:
        """Agreements in force now (signed, valid, not revoked), one per partner."""
        now = self.clock.now_ms()
        out: list[Partnership] = []
        for agreement in self._agreements.values():
            if agreement.id in self._revoked:
                continue
            try:
                agreement.check_window(now)  # signatures were checked when it was taken in
            except AgreementError:
                continue
            out.append(Partnership(agreement, agreement.party(self.org), agreement.other(self.org)))
        return out

    def partnership(self, organization: str) -> Partnership | None:
        """The agreement in force with the organization whose authority is ``organization``."""
        for partnership in self.partnerships():
            if partnership.theirs.authority == organization:
                return partnership
        return None

    def is_revoked(self, agreement_id: str) -> bool:
        return agreement_id in self._revoked

    def agreement(self, agreement_id: str) -> FederationAgreement | None:
        return self._agreements.get(agreement_id)

    def agreements(self) -> list[FederationAgreement]:
        """Every verified agreement of this organization, in force or not."""
        return list(self._agreements.values())

    def status_of(self, organization: str) -> StatusList | None:
        return self._status.get(organization)

    def parse_membership(self, token: str, agent: str) -> Membership:
        """The credential's content once its signature, issuer (a partner) and subject hold."""
        membership = self._memberships.get(token)
        if membership is None:
            trusted = {p.theirs.authority: p.theirs.org for p in self.partnerships()}
            membership = verify_membership(
                token, trusted=trusted, agent=agent, now=self.clock.now_ms() / 1000
            )
            if len(self._memberships) >= MAX_MEMBERSHIP_CACHE:
                self._memberships.clear()
                self._members.clear()
            self._memberships[token] = membership
        return membership

    def verify_membership(self, token: str, agent: str) -> Membership:
        """``token`` as ``agent``'s membership of a partner in force, not revoked, not expired.

        Raises:
            UntrustedOrganization: its issuer is no partner in force.
            MembershipRevoked: the issuer's status list revokes it.
            InvalidMembership: malformed, badly signed, another's, expired, no status list,
                or ``agent`` is one of this organization's own agents.
        """
        membership = self.parse_membership(token, agent)
        if membership.agent != agent:
            raise InvalidMembership(f"the credential is {membership.agent}'s, presented by {agent}")
        if self.is_local(agent):
            raise InvalidMembership(f"{agent} is an agent of this organization")
        partnership = self.partnership(membership.organization)
        if partnership is None:
            revoked = any(
                a.id in self._revoked
                for a in self._agreements.values()
                if a.party_of_authority(membership.organization) is not None
            )
            if revoked:
                raise AgreementRevoked(f"the agreement with {membership.organization_name} ended")
            raise UntrustedOrganization(f"no agreement in force with {membership.organization}")
        if self.clock.now_ms() >= membership.expires_at * 1000:
            raise InvalidMembership(f"the membership of {agent} expired")
        status = self._status.get(membership.organization)
        if status is None:
            raise InvalidMembership(
                f"no status list of {partnership.theirs.org} yet: cannot tell whether "
                f"{agent}'s membership is revoked"
            )
        if status.is_revoked(membership.status_index):
            raise MembershipRevoked(f"{partnership.theirs.org} revoked the membership of {agent}")
        self._members[agent] = (membership, token)
        return membership

    def partner_agent(self, did: str) -> PartnerAgent | None:
        return self._cards.get(did)

    def credential_for(self, did: str) -> str | None:
        """The newest membership credential seen for a partner's agent, valid or not."""
        agent = self._cards.get(did)
        if agent is not None:
            return agent.token
        held = self._members.get(did)
        return held[1] if held is not None else self._shipped.get(did)

    def partner_agents_known(self) -> set[str]:
        """Every partner agent this view has a credential for (valid or not)."""
        return set(self._cards) | set(self._members) | set(self._shipped)

    def member(self, did: str) -> tuple[Membership, str] | None:
        """A partner agent's membership and credential, from its card or a verified message."""
        agent = self._cards.get(did)
        if agent is not None:
            return agent.membership, agent.token
        return self._members.get(did)

    def partner_agents(self) -> list[PartnerAgent]:
        return list(self._cards.values())

    def quarantine_of(self, did: str) -> RevocationEntry | None:
        """The partner authority's blocking order about ``did``, if its newest one blocks."""
        entry = self._quarantined.get(did)
        return entry if entry is not None and entry.kind in BLOCKING_KINDS else None

    def is_blocked(self, did: str) -> bool:
        """A partner revoked ``did``'s membership or quarantined it (saga BlockCheck)."""
        if self.quarantine_of(did) is not None:
            return True
        token = self.credential_for(did)
        if token is None:
            return False
        try:
            self.verify_membership(token, did)
        except FederationError:
            return True
        return False

    def __contains__(self, did: object) -> bool:
        """A partner agent with a verified membership (the admission interceptor asks this)."""
        if not isinstance(did, str):
            return False
        return did in self._cards or did in self._members


__all__ = ["FederationView", "PartnerAgent", "Partnership"]
