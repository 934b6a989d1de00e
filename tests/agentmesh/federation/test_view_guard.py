"""FederationView over an embedded bucket, FederationGuard on real signed envelopes, rings."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from agentmesh.federation import (
    Ceilings,
    Export,
    FederatedRings,
    FederationAgreement,
    FederationGuard,
    NodeFederation,
    issue_membership,
    issue_status_list,
    revoke_agreement,
)
from agentmesh.federation.errors import AgreementRevoked
from agentmesh.federation.guard import credential_headers
from agentmesh.federation.store import (
    PartnerCardRecord,
    agreement_key,
    card_key,
    federation_bucket,
    quarantine_key,
    revocation_key,
    status_key,
)
from agentmesh.node.interceptors import InboundMessage, Verdict
from agentmesh.transport import InMemoryBus, InMemoryTransport
from iatp.clock import ManualClock
from iatp.envelope import Envelope, new_envelope, open_envelope, seal_envelope
from iatp.handshake import PeerOffer
from iatp.identity import AgentIdentity
from registry.card import AgentCard, Capability, sign_card
from registry.revocation import RevocationKind, sign_revocation
from tests.agentmesh.federation.test_agreement import (
    A_AUTH,
    A_LINK,
    A_NODE,
    A_OTHER,
    B_AGENT,
    B_AUTH,
    B_LINK,
    B_OTHER,
    C_AUTH,
    C_LINK,
    ident,
    make_agreement,
    party,
    signed,
)
from tests.agentmesh.transport.waiting import eventually

MESH = "acme"
C_AGENT = ident(b"c")
PAST_S = 1_700_000_000
AGREEMENT = signed(
    make_agreement(
        a_exports=(
            Export(agent=A_NODE.did, operations=("quote.*", "payment.*"), capabilities=("quote",)),
        ),
        a_ceilings=Ceilings(
            max_ring=2, rate_per_second=1.0, burst=3, daily_budget=5, allowed_tools=("quote.*",)
        ),
        b_exports=(Export(agent=B_AGENT.did, operations=("quote.*",), capabilities=("quote",)),),
        b_ceilings=Ceilings(max_ring=3, allowed_tools=("quote.request",)),
    )
)


@dataclass(frozen=True)
class Tokens:
    b_agent: str  # beta's membership of B_AGENT, status index 1
    b_other: str  # beta's membership of B_OTHER (not exported), index 2
    b_agent_by_c: str  # gamma's authority, naming "beta", for B_AGENT
    a_other_by_b: str  # beta's membership of A_OTHER, one of acme's own agents
    c_agent: str  # gamma's membership of C_AGENT
    b_agent_past: str  # B_AGENT, issued at PAST_S for one day


async def _issue_all() -> Tokens:
    async def issue(
        authority: AgentIdentity,
        org: str,
        agent: AgentIdentity,
        index: int,
        now: float | None = None,
        lifetime_s: float = 86_400.0,
    ) -> str:
        return await issue_membership(
            authority, org=org, agent=agent.did, status_index=index, now=now, lifetime_s=lifetime_s
        )

    return Tokens(
        await issue(B_AUTH, "beta", B_AGENT, 1),
        await issue(B_AUTH, "beta", B_OTHER, 2),
        await issue(C_AUTH, "beta", B_AGENT, 1),
        await issue(B_AUTH, "beta", A_OTHER, 3),
        await issue(C_AUTH, "gamma", C_AGENT, 1),
        await issue(B_AUTH, "beta", B_AGENT, 1, now=PAST_S, lifetime_s=86_400),
    )


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return asyncio.run(_issue_all())


def now_ms() -> int:
    return int(time.time() * 1000)


def card_of(agent: AgentIdentity, issued_ms: int | None = None) -> AgentCard:
    return sign_card(
        agent,
        display_name="agent",
        inbox="beta.agent.x.inbox",
        ttl_ms=3_600_000,
        issued_at_ms=now_ms() if issued_ms is None else issued_ms,
        capabilities=(Capability(name="quote"),),
    )


class Locals:
    """acme's directory: A_OTHER is one of its agents."""

    def find(self, capability: str) -> list[AgentCard]:
        return []

    def lookup(self, did: str, *, follow_rotation: bool = True) -> AgentCard | None:
        return card_of(A_OTHER) if did == A_OTHER.did else None


class Harness:
    def __init__(self, transport: InMemoryTransport, clock: ManualClock | None = None) -> None:
        self.transport = transport
        self.fed = NodeFederation(
            transport, A_NODE, mesh=MESH, organization=A_AUTH.did, directory=Locals(), clock=clock
        )
        self.view = self.fed.view
        self.changes = 0
        self.view.add_listener(self._changed)

    def _changed(self) -> None:
        self.changes += 1

    async def put(self, key: str, value: bytes) -> None:
        """Write, and wait until the view took or refused it."""

        def seen() -> int:
            return self.changes + sum(self.view.refused.values())

        before = seen()
        kv = await self.transport.key_value(federation_bucket(MESH))
        await kv.put(key, value)
        await eventually(lambda: seen() > before)

    async def status(self, version: int, revoked: tuple[int, ...] = ()) -> None:
        status = issue_status_list(B_AUTH, version=version, revoked=revoked, now_ms=now_ms())
        await self.put(status_key(B_AUTH.did), status.encode())

    async def card(
        self, agent: AgentIdentity, token: str, *, under: AgentIdentity | None = None
    ) -> None:
        record = PartnerCardRecord(card_of(agent).encode(), token)
        await self.put(card_key(B_AUTH.did, (under or agent).did), record.encode())

    async def standard(self, tokens: Tokens) -> None:
        await self.put(agreement_key(AGREEMENT.id), AGREEMENT.encode())
        await self.status(1)
        await self.card(B_AGENT, tokens.b_agent)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    transport = InMemoryTransport(InMemoryBus(), name="acme")
    await transport.connect()
    harness = Harness(transport)
    try:
        async with harness.fed:
            yield harness
    finally:
        await transport.aclose()


def envelope(
    sender: AgentIdentity,
    kind: str,
    *,
    to: AgentIdentity = A_NODE,
    token: str | None = None,
    reply: bool = False,
) -> Envelope:
    built = new_envelope(
        sender=sender.did,
        type=kind,
        recipient=to.did,
        body=b"{}",
        now_ms=now_ms(),
        headers=credential_headers(token) if token is not None else None,
        correlation_id=b"\x01" * 16 if reply else None,
    )
    opened = open_envelope(
        seal_envelope(built, sender), clock=ManualClock(now_ms()), audience=to.did, replay=None
    )
    return opened


def inbound(
    sender: AgentIdentity, kind: str, token: str | None = None, *, reply: bool = False
) -> InboundMessage:
    return InboundMessage(
        envelope(sender, kind, token=token, reply=reply), "acme.agent.x.inbox", True
    )


def codes(*verdicts: Verdict) -> list[str]:
    return [v.code for v in verdicts]


# -- the view ---------------------------------------------------------------------------


async def test_an_agreement_signed_by_both_is_in_force(h: Harness) -> None:
    assert h.view.partnerships() == []
    await h.put(agreement_key(AGREEMENT.id), AGREEMENT.encode())
    partnership = h.view.partnership(B_AUTH.did)
    assert partnership is not None
    assert (partnership.mine.org, partnership.theirs.org) == ("acme", "beta")
    assert h.view.agreement(AGREEMENT.id) == AGREEMENT
    assert h.view.refused == {}


def foreign(org: str, authority: AgentIdentity, link: AgentIdentity) -> FederationAgreement:
    """An agreement of beta with someone else (org, authority) — acme is no party."""
    agreement = FederationAgreement(
        id="other",
        version=1,
        parties=(party("beta", B_AUTH, B_LINK), party(org, authority, link)),
        not_before_ms=0,
        not_after_ms=2**62,
    )
    return agreement.signed_by(B_AUTH).signed_by(authority)


@pytest.mark.parametrize(
    ("agreement", "refused"),
    [
        (make_agreement().signed_by(A_AUTH), {"agreement_invalid": 1}),
        (make_agreement().signed_by(B_AUTH), {"agreement_invalid": 1}),
        (foreign("gamma", C_AUTH, C_LINK), {"agreement_invalid": 1}),  # not ours
        (foreign("acme", C_AUTH, A_LINK), {"agreement_invalid": 1}),  # someone else as acme
        (signed(make_agreement(not_after_ms=2_000)), {}),  # well signed, expired: not in force
    ],
)
async def test_agreements_that_are_not_ours_or_not_signed_are_not_in_force(
    h: Harness, agreement: FederationAgreement, refused: dict[str, int]
) -> None:
    await h.put(agreement_key(agreement.id), agreement.encode())
    assert h.view.partnerships() == []
    assert h.view.partnership(B_AUTH.did) is None
    assert h.view.refused == refused


async def test_an_older_version_does_not_replace_a_newer_one(h: Harness) -> None:
    v2 = signed(make_agreement(version=2, a_exports=()))
    await h.put(agreement_key("acme-beta"), v2.encode())
    await h.put(agreement_key("acme-beta"), AGREEMENT.encode())
    assert h.view.refused == {"agreement_invalid": 1}
    assert h.view.agreement("acme-beta") == v2


async def test_a_revocation_ends_the_agreement_for_good(h: Harness, tokens: Tokens) -> None:
    await h.standard(tokens)
    forged = revoke_agreement(foreign("gamma", C_AUTH, C_LINK), C_AUTH, reason="x", now_ms=1)
    await h.put(
        revocation_key("acme-beta"),
        forged.model_copy(update={"agreement_id": "acme-beta"}).encode(),
    )
    assert h.view.refused == {"agreement_invalid": 1}
    assert h.view.partnership(B_AUTH.did) is not None
    notice = revoke_agreement(AGREEMENT, B_AUTH, reason="breach", now_ms=now_ms())
    await h.put(revocation_key("acme-beta"), notice.encode())
    assert h.view.is_revoked("acme-beta")
    assert h.view.partnerships() == []
    with pytest.raises(AgreementRevoked) as info:
        h.view.verify_membership(tokens.b_agent, B_AGENT.did)
    assert info.value.code == "agreement_revoked"
    await h.put(agreement_key("acme-beta"), AGREEMENT.encode())  # replayed
    await h.put(agreement_key("acme-beta"), signed(make_agreement(version=2)).encode())  # amended
    assert h.view.partnerships() == []
    assert FederatedRings(h.view).ring(B_AGENT.did) == 3


async def test_a_newer_status_list_applies_and_an_older_one_is_refused(
    h: Harness, tokens: Tokens
) -> None:
    await h.standard(tokens)
    await h.status(3, (1,))
    status = h.view.status_of(B_AUTH.did)
    assert status is not None
    assert status.version == 3
    assert h.view.is_blocked(B_AGENT.did)
    assert h.view.partner_agents() == []  # its card no longer verifies
    await h.status(2)  # would un-revoke index 1
    assert h.view.refused == {"membership_revoked": 1, "status_list_invalid": 1}
    assert h.view.status_of(B_AUTH.did) == status
    await h.put(status_key(B_AUTH.did), b"garbage")
    assert h.view.refused["status_list_invalid"] == 2


async def test_a_status_list_rollback_is_refused_as_status_list_invalid(
    h: Harness, tokens: Tokens
) -> None:
    await h.standard(tokens)
    await h.status(3)
    await h.status(2)
    assert h.view.refused == {"status_list_invalid": 1}


async def test_an_exported_partner_card_is_visible(h: Harness, tokens: Tokens) -> None:
    await h.standard(tokens)
    assert [a.card.did for a in h.view.partner_agents()] == [B_AGENT.did]
    assert B_AGENT.did in h.view
    assert [card.did for card in h.fed.find("quote")] == [B_AGENT.did]
    assert h.fed.find("translate") == []
    explained = h.fed.explain(B_AGENT.did)
    assert explained is not None
    assert (explained.organization, explained.score) == ("beta", 0.25)
    assert h.view.refused == {}


@pytest.mark.parametrize(
    ("agent", "which", "under", "code"),
    [
        (B_OTHER, "b_other", None, "federation_error"),  # not exported
        (B_AGENT, "b_agent_by_c", None, "organization_untrusted"),  # credential of another org
        (B_AGENT, "b_agent", B_OTHER, "membership_invalid"),  # stored under another agent's key
        (B_AGENT, "b_other", None, "membership_invalid"),  # someone else's credential
    ],
)
async def test_partner_cards_that_do_not_hold_are_refused(
    h: Harness,
    tokens: Tokens,
    agent: AgentIdentity,
    which: str,
    under: AgentIdentity | None,
    code: str,
) -> None:
    await h.put(agreement_key(AGREEMENT.id), AGREEMENT.encode())
    await h.status(1)
    await h.card(agent, getattr(tokens, which), under=under)
    assert h.view.partner_agents() == []
    assert h.fed.find("quote") == []
    assert h.view.refused == {code: 1}


def order(
    issuer: AgentIdentity, subject: AgentIdentity, kind: RevocationKind, sequence: int
) -> bytes:
    entry = sign_revocation(
        issuer,
        subject=subject.did,
        kind=kind,
        reason="leak",
        issued_at_ms=now_ms(),
        sequence=sequence,
    )
    return entry.encode()


async def test_a_partner_quarantine_of_its_own_agent_blocks_it(h: Harness, tokens: Tokens) -> None:
    await h.standard(tokens)
    guard = FederationGuard(h.view, A_NODE.did)
    await h.put(
        quarantine_key(B_AUTH.did, B_AGENT.did),
        order(B_AUTH, B_AGENT, RevocationKind.QUARANTINED, 1),
    )
    assert h.view.quarantine_of(B_AGENT.did) is not None
    assert h.view.is_blocked(B_AGENT.did)
    assert h.fed.find("quote") == []
    assert codes(await guard.check_inbound(inbound(B_AGENT, "quote.request", tokens.b_agent))) == [
        "membership_invalid"
    ]
    assert codes(await guard.check_outbound(envelope(A_NODE, "quote.request", to=B_AGENT))) == [
        "membership_invalid"
    ]
    await h.put(
        quarantine_key(B_AUTH.did, B_AGENT.did), order(B_AUTH, B_AGENT, RevocationKind.RELEASED, 2)
    )
    assert h.view.quarantine_of(B_AGENT.did) is None
    assert (await guard.check_inbound(inbound(B_AGENT, "quote.request", tokens.b_agent))).allowed


@pytest.mark.parametrize(
    ("issuer", "subject", "code"),
    [
        (B_AUTH, A_OTHER, "revocation_unauthorized"),  # beta about one of acme's agents
        (C_AUTH, C_AGENT, "federation_error"),  # not a partner
    ],
)
async def test_quarantines_beyond_a_partners_own_agents_are_refused(
    h: Harness, tokens: Tokens, issuer: AgentIdentity, subject: AgentIdentity, code: str
) -> None:
    await h.standard(tokens)
    await h.put(
        quarantine_key(issuer.did, subject.did),
        order(issuer, subject, RevocationKind.QUARANTINED, 1),
    )
    assert h.view.quarantine_of(subject.did) is None
    assert h.view.refused == {code: 1}


async def test_the_view_judges_credentials_by_its_own_clock(tokens: Tokens) -> None:
    transport = InMemoryTransport(InMemoryBus(), name="past")
    await transport.connect()
    past = Harness(transport, ManualClock(PAST_S * 1000 + 600_000))
    async with past.fed:
        await past.put(agreement_key(AGREEMENT.id), AGREEMENT.encode())
        status = issue_status_list(B_AUTH, version=1, revoked=(), now_ms=PAST_S * 1000)
        await past.put(status_key(B_AUTH.did), status.encode())
        record = PartnerCardRecord(card_of(B_AGENT, PAST_S * 1000).encode(), tokens.b_agent_past)
        await past.put(card_key(B_AUTH.did, B_AGENT.did), record.encode())
        try:
            assert [a.card.did for a in past.view.partner_agents()] == [B_AGENT.did]
        finally:
            await transport.aclose()


# -- the guard --------------------------------------------------------------------------


async def test_the_guard_allows_an_exported_operation_and_denies_the_rest(
    h: Harness, tokens: Tokens
) -> None:
    await h.standard(tokens)
    guard = FederationGuard(h.view, A_NODE.did, monotonic=lambda: 0.0)
    other_node = FederationGuard(h.view, A_OTHER.did, monotonic=lambda: 0.0)
    verdicts = [
        await guard.check_inbound(inbound(B_AGENT, "quote.request", tokens.b_agent)),
        await guard.check_inbound(inbound(B_AGENT, "admin.reset", tokens.b_agent)),
        await guard.check_inbound(inbound(B_AGENT, "admin.reset")),  # known from its card
        await other_node.check_inbound(inbound(B_AGENT, "quote.request", tokens.b_agent)),
        await guard.check_inbound(inbound(B_AGENT, "payment.charge", tokens.b_agent)),  # not a tool
        await guard.check_inbound(inbound(C_AGENT, "quote.request", tokens.c_agent)),
        await guard.check_inbound(inbound(A_OTHER, "quote.request", tokens.a_other_by_b)),
        await guard.check_inbound(inbound(C_AGENT, "quote.request", tokens.c_agent, reply=True)),
        await guard.check_inbound(inbound(C_AGENT, "quote.request")),  # not federated at all
    ]
    assert codes(*verdicts) == [
        "allowed",
        "not_exported",
        "not_exported",
        "not_exported",
        "federation_ceiling",
        "organization_untrusted",
        "membership_invalid",
        "allowed",
        "allowed",
    ]
    assert "agent of this organization" in verdicts[6].reason


async def test_a_revoked_membership_is_denied(h: Harness, tokens: Tokens) -> None:
    await h.standard(tokens)
    guard = FederationGuard(h.view, A_NODE.did)
    await h.status(2, (1,))
    verdict = await guard.check_inbound(inbound(B_AGENT, "quote.request", tokens.b_agent))
    assert codes(verdict) == ["membership_revoked"]


async def test_the_rate_ceiling(h: Harness, tokens: Tokens) -> None:
    await h.standard(tokens)
    guard = FederationGuard(h.view, A_NODE.did, monotonic=lambda: 10.0)
    message = inbound(B_AGENT, "quote.request", tokens.b_agent)
    verdicts = [await guard.check_inbound(message) for _ in range(4)]
    assert codes(*verdicts) == ["allowed"] * 3 + ["federation_ceiling"]


async def test_the_daily_budget(h: Harness, tokens: Tokens) -> None:
    await h.standard(tokens)
    ticks = iter(range(0, 10_000, 100))
    guard = FederationGuard(h.view, A_NODE.did, monotonic=lambda: float(next(ticks)))
    message = inbound(B_AGENT, "quote.request", tokens.b_agent)
    verdicts = [await guard.check_inbound(message) for _ in range(6)]
    assert codes(*verdicts) == ["allowed"] * 5 + ["federation_ceiling"]
    assert "5 calls today" in verdicts[-1].reason


async def test_a_partner_authority_talks_only_federation_to_our_authority(
    h: Harness, tokens: Tokens
) -> None:
    await h.standard(tokens)
    authority = FederationGuard(h.view, A_AUTH.did)
    node = FederationGuard(h.view, A_NODE.did)
    verdicts = [
        await authority.check_inbound(inbound(B_AUTH, "federation.feed")),
        await authority.check_inbound(inbound(B_AUTH, "quote.request")),
        await node.check_inbound(inbound(B_AUTH, "federation.feed")),
    ]
    assert codes(*verdicts) == ["allowed", "not_exported", "not_exported"]


async def test_rings_are_capped_for_partner_agents_only(h: Harness, tokens: Tokens) -> None:
    await h.standard(tokens)
    rings = FederatedRings(h.view)
    assert rings.ring(B_AGENT.did) == 2
    assert rings.ring(C_AGENT.did) == 0
    assert rings.ring(A_OTHER.did) == 0


async def test_departures_to_partner_agents(h: Harness, tokens: Tokens) -> None:
    await h.standard(tokens)
    guard = FederationGuard(h.view, A_NODE.did)
    verdicts = [
        await guard.check_outbound(envelope(A_NODE, "quote.request", to=B_AGENT)),
        await guard.check_outbound(envelope(A_NODE, "payment.charge", to=B_AGENT)),
        await guard.check_outbound(envelope(A_NODE, "quote.cancel", to=B_AGENT)),
        await guard.check_outbound(envelope(A_NODE, "payment.charge", to=B_AGENT, reply=True)),
        await guard.check_outbound(envelope(A_NODE, "anything", to=C_AGENT)),
    ]
    assert codes(*verdicts) == [
        "allowed",
        "not_exported",
        "federation_ceiling",
        "allowed",
        "allowed",
    ]
    offer = await guard.check_handshake(PeerOffer(B_AGENT.did, b"\x00" * 16, (), ()))
    assert codes(offer) == ["federation_error"]
    assert (await guard.check_handshake(PeerOffer(C_AGENT.did, b"\x00" * 16, (), ()))).allowed
    await h.status(2, (1,))
    assert codes(await guard.check_outbound(envelope(A_NODE, "quote.request", to=B_AGENT))) == [
        "membership_revoked"
    ]


async def test_a_refused_card_of_our_own_agent_does_not_block_it(
    h: Harness, tokens: Tokens
) -> None:
    await h.standard(tokens)
    await h.card(A_OTHER, "junk.junk.junk")
    assert h.view.refused == {"membership_invalid": 1}
    guard = FederationGuard(h.view, A_NODE.did)
    assert (await guard.check_outbound(envelope(A_NODE, "quote.request", to=A_OTHER))).allowed
    assert not h.view.is_blocked(A_OTHER.did)
