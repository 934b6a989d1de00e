"""Membership JWT-VCs: didkit issues, PyNaCl verifies, didkit agrees; forgeries refused."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.didkit_bridge import verify_jwt_credential
from agentmesh.federation import (
    InvalidMembership,
    Membership,
    MembershipRevoked,
    UntrustedOrganization,
    issue_membership,
    verify_membership,
)
from agentmesh.federation.membership import MAX_CREDENTIAL_BYTES
from iatp.identity import AgentIdentity
from tests.agentmesh.federation.test_agreement import A_AUTH, B_AUTH, C_AUTH, ident

AGENT, OTHER = ident(b"g"), ident(b"h")
ISSUED = int(time.time()) - 60
LIFETIME = 3600
TRUSTED = {A_AUTH.did: "acme", B_AUTH.did: "beta"}


@dataclass(frozen=True)
class Tokens:
    good: str  # acme -> AGENT, index 7
    named_beta: str  # acme's authority, naming the organization "beta"
    by_third_org: str  # C -> AGENT, naming "acme"
    oversized: str


async def _issue_all() -> Tokens:
    async def issue(authority: AgentIdentity, org: str, **extra: Any) -> str:
        return await issue_membership(
            authority, org=org, agent=AGENT.did, status_index=7, now=ISSUED, **extra
        )

    return Tokens(
        good=await issue(
            A_AUTH, "acme", roles=("buyer",), capabilities=("quote",), lifetime_s=LIFETIME
        ),
        named_beta=await issue(A_AUTH, "beta"),
        by_third_org=await issue(C_AUTH, "acme"),
        oversized=await issue(A_AUTH, "acme", capabilities=tuple(f"c{i:04d}" for i in range(1200))),
    )


@pytest.fixture(scope="module")
def tokens() -> Tokens:
    return asyncio.run(_issue_all())  # didkit once per module, outside the tests' loops


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, claims, _ = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(claims))


def jws(header: dict[str, Any], claims: dict[str, Any], key: AgentIdentity) -> str:
    """A compact JWS signed (correctly, with Ed25519) by ``key``."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}"


def check(token: str, **kwargs: Any) -> Membership:
    options: dict[str, Any] = {"trusted": TRUSTED, "agent": AGENT.did, "now": ISSUED + 10}
    options.update(kwargs)
    return verify_membership(token, **options)


async def test_pynacl_and_didkit_both_accept_the_credential(tokens: Tokens) -> None:
    assert await verify_jwt_credential(tokens.good) == []
    membership = check(tokens.good)
    assert membership == Membership(
        agent=AGENT.did,
        organization=A_AUTH.did,
        organization_name="acme",
        roles=("buyer",),
        capabilities=("quote",),
        expires_at=float(ISSUED + LIFETIME),
        status_index=7,
    )
    header, claims = parts(tokens.good)
    assert header["alg"] == "EdDSA"
    assert (claims["iss"], claims["sub"]) == (A_AUTH.did, AGENT.did)


@pytest.mark.parametrize("where", [0, 0.5, -1])
async def test_one_flipped_payload_character_is_refused_by_both(
    tokens: Tokens, where: float
) -> None:
    header, payload, signature = tokens.good.split(".")
    i = int(where * len(payload)) if where >= 0 else len(payload) - 1
    flipped = "A" if payload[i] != "A" else "B"
    token = f"{header}.{payload[:i]}{flipped}{payload[i + 1 :]}.{signature}"
    with pytest.raises(InvalidMembership) as info:
        check(token)
    assert type(info.value) is InvalidMembership
    assert await verify_jwt_credential(token) != []


async def test_a_changed_claim_is_refused_by_both(tokens: Tokens) -> None:
    _, claims = parts(tokens.good)
    claims["vc"]["credentialSubject"]["roles"] = ["admin"]
    head, _, signature = tokens.good.split(".")
    token = f"{head}.{b64(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(InvalidMembership, match="not signed by"):
        check(token)
    assert await verify_jwt_credential(token) != []


async def test_a_credential_of_the_issuer_signed_by_a_third_org_is_refused_by_both(
    tokens: Tokens,
) -> None:
    header, claims = parts(tokens.good)
    token = jws(header, claims, C_AUTH)
    with pytest.raises(InvalidMembership, match="not signed by"):
        check(token)
    assert await verify_jwt_credential(token) != []


def test_a_third_orgs_own_credential_is_untrusted(tokens: Tokens) -> None:
    with pytest.raises(UntrustedOrganization) as info:
        check(tokens.by_third_org)
    assert info.value.code == "organization_untrusted"
    assert check(tokens.by_third_org, trusted={C_AUTH.did: "acme"}).organization == C_AUTH.did


def test_an_issuer_outside_trusted_is_untrusted(tokens: Tokens) -> None:
    with pytest.raises(UntrustedOrganization):
        check(tokens.good, trusted={B_AUTH.did: "beta"})


@pytest.mark.parametrize(
    ("offset", "valid"),
    [(LIFETIME - 1, True), (LIFETIME, False), (LIFETIME + 999, False), (-29, True), (-31, False)],
)
def test_the_validity_window(tokens: Tokens, offset: int, valid: bool) -> None:
    if valid:
        check(tokens.good, now=ISSUED + offset)
    else:
        with pytest.raises(InvalidMembership, match=r"expired|not valid yet") as info:
            check(tokens.good, now=ISSUED + offset)
        assert type(info.value) is InvalidMembership


def test_a_credential_presented_by_another_agent_is_refused(tokens: Tokens) -> None:
    with pytest.raises(InvalidMembership, match="presented by"):
        check(tokens.good, agent=OTHER.did)
    assert check(tokens.good, agent=None).agent == AGENT.did


def test_an_organization_cannot_issue_in_another_organizations_name(tokens: Tokens) -> None:
    with pytest.raises(InvalidMembership, match="names 'beta', not 'acme'") as info:
        check(tokens.named_beta)
    assert type(info.value) is InvalidMembership


def test_a_revoked_index_is_refused(tokens: Tokens) -> None:
    with pytest.raises(MembershipRevoked) as info:
        check(tokens.good, revoked=frozenset({7}))
    assert info.value.code == "membership_revoked"
    assert check(tokens.good, revoked=frozenset({6, 8})).status_index == 7


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"alg": "ES256"}, "EdDSA"),
        ({"alg": "none"}, "EdDSA"),
        ({"kid": f"{B_AUTH.did}#{B_AUTH.did[8:]}"}, "not the issuer's"),
        ({"kid": None}, "not the issuer's"),
    ],
)
def test_a_well_signed_token_with_a_bad_header_is_refused(
    tokens: Tokens, header: dict[str, Any], message: str
) -> None:
    original, claims = parts(tokens.good)
    assert check(jws(original, claims, A_AUTH)).agent == AGENT.did  # re-signing alone is fine
    with pytest.raises(InvalidMembership, match=message):
        check(jws({**original, **header}, claims, A_AUTH))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"exp": "never"}, "numbers"),
        ({"vc": None}, "no vc claim"),
        ({"sub": OTHER.did}, "subject does not match"),
        ({"iss": "did:web:acme.example"}, "not a did:key"),
    ],
)
def test_well_signed_claims_that_break_the_rules_are_refused(
    tokens: Tokens, change: dict[str, Any], message: str
) -> None:
    header, claims = parts(tokens.good)
    with pytest.raises(InvalidMembership, match=message):
        check(jws(header, {**claims, **change}, A_AUTH), agent=None)


async def test_an_oversized_token_is_refused_though_didkit_accepts_it(tokens: Tokens) -> None:
    assert len(tokens.oversized) > MAX_CREDENTIAL_BYTES
    assert await verify_jwt_credential(tokens.oversized) == []
    with pytest.raises(InvalidMembership, match="too large"):
        check(tokens.oversized)


@pytest.mark.parametrize(
    ("agent", "index", "lifetime"),
    [("not-a-did", 0, 60.0), (AGENT.did, -1, 60.0), (AGENT.did, 0, 0.0)],
)
async def test_issue_refuses_bad_arguments(agent: str, index: int, lifetime: float) -> None:
    with pytest.raises(InvalidMembership):
        await issue_membership(
            A_AUTH, org="acme", agent=agent, status_index=index, lifetime_s=lifetime
        )


@pytest.mark.parametrize("signature", ["", "AAAA", "A" * 100])
def test_a_signature_of_the_wrong_length_is_invalid_membership(
    tokens: Tokens, signature: str
) -> None:
    header, payload, _ = tokens.good.split(".")
    with pytest.raises(InvalidMembership):
        check(f"{header}.{payload}.{signature}")


@pytest.mark.parametrize("part", [0, 1])
def test_deeply_nested_json_is_invalid_membership(part: int) -> None:
    pieces = [b64(b"{}"), b64(b"{}"), "AA"]
    pieces[part] = b64(b"[" * 5000)
    with pytest.raises(InvalidMembership):
        check(".".join(pieces))


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=300)
    | st.lists(st.text("ABCDEFabcdef0123456789-_", max_size=80), min_size=3, max_size=3).map(
        ".".join
    )
)
def test_verify_on_arbitrary_text_raises_only_invalid_membership(text: str) -> None:
    with contextlib.suppress(InvalidMembership):
        verify_membership(text, trusted=TRUSTED)


@settings(max_examples=200, deadline=None)
@given(
    claims=st.dictionaries(
        st.sampled_from(["iss", "sub", "exp", "nbf", "vc"]),
        st.none() | st.integers() | st.text(max_size=20) | st.just(A_AUTH.did),
    )
)
def test_verify_on_signed_arbitrary_claims_raises_only_invalid_membership(
    claims: dict[str, Any],
) -> None:
    token = jws({"alg": "EdDSA", "kid": A_AUTH.did}, claims, A_AUTH)
    with contextlib.suppress(InvalidMembership):
        verify_membership(token, trusted=TRUSTED, now=ISSUED)
