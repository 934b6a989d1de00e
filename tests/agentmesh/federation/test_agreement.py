"""Federation agreements: canonical bytes, two signatures, validity, revocation notices."""

from __future__ import annotations

import contextlib
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentmesh.federation import (
    AgreementError,
    AgreementRevocation,
    Ceilings,
    Export,
    FederationAgreement,
    Party,
    decode_agreement,
    revoke_agreement,
)
from agentmesh.federation.agreement import (
    AGREEMENT_DOMAIN,
    MAX_AGREEMENT_BYTES,
    decode_revocation,
    matches,
)
from iatp.identity import AgentIdentity


def ident(tag: bytes) -> AgentIdentity:
    return AgentIdentity.from_seed(tag * 32)


A_AUTH, B_AUTH, C_AUTH = ident(b"A"), ident(b"B"), ident(b"C")
A_LINK, B_LINK, C_LINK = ident(b"1"), ident(b"2"), ident(b"3")
A_NODE, A_OTHER, B_AGENT, B_OTHER = ident(b"n"), ident(b"o"), ident(b"b"), ident(b"x")
NOT_BEFORE, NOT_AFTER = 1_000, 2**62


def party(
    org: str,
    authority: AgentIdentity,
    link: AgentIdentity,
    exports: tuple[Export, ...] = (),
    ceilings: Ceilings | None = None,
) -> Party:
    return Party(
        org=org,
        name=f"{org.title()} Inc.",
        authority=authority.did,
        link_key=link.did,
        exports=exports,
        ceilings=ceilings or Ceilings(),
    )


def make_agreement(
    *,
    agreement_id: str = "acme-beta",
    version: int = 1,
    a_exports: tuple[Export, ...] | None = None,
    b_exports: tuple[Export, ...] | None = None,
    a_ceilings: Ceilings | None = None,
    b_ceilings: Ceilings | None = None,
    partner: tuple[str, AgentIdentity, AgentIdentity] = ("beta", B_AUTH, B_LINK),
    not_before_ms: int = NOT_BEFORE,
    not_after_ms: int = NOT_AFTER,
) -> FederationAgreement:
    """acme (A) and a partner (beta, B, by default); unsigned."""
    if a_exports is None:
        a_exports = (Export(agent=A_NODE.did, operations=("quote.*",), capabilities=("quote",)),)
    if b_exports is None:
        b_exports = (
            Export(agent=B_AGENT.did, operations=("quote.request",), capabilities=("quote",)),
        )
    org, authority, link = partner
    return FederationAgreement(
        id=agreement_id,
        version=version,
        parties=(
            party("acme", A_AUTH, A_LINK, a_exports, a_ceilings),
            party(org, authority, link, b_exports, b_ceilings),
        ),
        not_before_ms=not_before_ms,
        not_after_ms=not_after_ms,
    )


def signed(agreement: FederationAgreement) -> FederationAgreement:
    authorities = {A_AUTH.did: A_AUTH, B_AUTH.did: B_AUTH, C_AUTH.did: C_AUTH}
    for p in agreement.parties:
        agreement = agreement.signed_by(authorities[p.authority])
    return agreement


def as_json(agreement: FederationAgreement) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(agreement.encode())
    return data


def test_signing_bytes_are_deterministic_and_leave_out_the_signatures() -> None:
    unsigned, both = make_agreement(), signed(make_agreement())
    assert unsigned.signing_bytes() == make_agreement().signing_bytes() == both.signing_bytes()
    assert unsigned.signing_bytes().startswith(AGREEMENT_DOMAIN)
    body = unsigned.signing_bytes().removeprefix(AGREEMENT_DOMAIN)
    assert "signatures" not in json.loads(body)
    assert body == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    assert both.digest == unsigned.digest == hashlib.sha256(both.signing_bytes()).hexdigest()
    assert set(both.signatures) == {A_AUTH.did, B_AUTH.did}


def test_both_signatures_put_it_in_force_and_it_round_trips() -> None:
    agreement = signed(make_agreement())
    agreement.check_signatures()
    agreement.check_in_force(NOT_BEFORE)
    assert decode_agreement(agreement.encode()) == agreement
    assert agreement.party("beta").authority == B_AUTH.did
    assert agreement.other("acme").org == "beta"
    assert agreement.party_of_authority(C_AUTH.did) is None
    with pytest.raises(AgreementError, match="gamma is not a party"):
        agreement.party("gamma")


@pytest.mark.parametrize(("signer", "missing"), [(A_AUTH, "beta"), (B_AUTH, "acme")])
def test_one_signature_is_not_enough(signer: AgentIdentity, missing: str) -> None:
    agreement = make_agreement().signed_by(signer)
    with pytest.raises(AgreementError, match=f"lacks {missing}'s signature"):
        agreement.check_signatures()
    with pytest.raises(AgreementError, match="lacks"):
        agreement.check_in_force(NOT_BEFORE + 1)


def test_a_field_changed_after_signing_breaks_the_signatures() -> None:
    data = as_json(signed(make_agreement()))
    data["parties"][0]["ceilings"]["max_ring"] = 1
    tampered = decode_agreement(json.dumps(data).encode())
    with pytest.raises(AgreementError, match=r"acme's signature .* is invalid") as info:
        tampered.check_signatures()
    assert info.value.code == "agreement_invalid"


def test_a_signature_by_a_non_party_is_refused() -> None:
    with pytest.raises(AgreementError, match="not the authority"):
        make_agreement().signed_by(C_AUTH)
    agreement = signed(make_agreement())
    forged = C_AUTH.sign(agreement.signing_bytes()).hex()
    in_a_slot = agreement.model_copy(
        update={"signatures": {**agreement.signatures, B_AUTH.did: forged}}
    )
    with pytest.raises(AgreementError, match=r"beta's signature .* is invalid"):
        in_a_slot.check_signatures()
    data = as_json(agreement)
    data["signatures"][C_AUTH.did] = forged
    with pytest.raises(AgreementError, match="not the authority of either party"):
        decode_agreement(json.dumps(data).encode())


@pytest.mark.parametrize(
    ("now", "error"),
    [
        (NOT_BEFORE - 1, "not valid yet"),
        (NOT_BEFORE, None),
        (NOT_AFTER - 1, None),
        (NOT_AFTER, "expired"),
    ],
)
def test_validity_window(now: int, error: str | None) -> None:
    agreement = signed(make_agreement())
    if error is None:
        agreement.check_in_force(now)
    else:
        with pytest.raises(AgreementError, match=error):
            agreement.check_in_force(now)


def _same_org(d: dict[str, Any]) -> None:
    d["parties"][1]["org"] = "acme"


def _duplicate_export(d: dict[str, Any]) -> None:
    d["parties"][0]["exports"].append(d["parties"][0]["exports"][0])


def _authority_exported(d: dict[str, Any]) -> None:
    d["parties"][1]["exports"][0]["agent"] = A_AUTH.did


def _window_empty(d: dict[str, Any]) -> None:
    d["not_after_ms"] = d["not_before_ms"]


def _unknown_signer(d: dict[str, Any]) -> None:
    d["signatures"] = {C_AUTH.did: "ab" * 64}


def _extra_field(d: dict[str, Any]) -> None:
    d["comment"] = "hi"


def _not_a_did(d: dict[str, Any]) -> None:
    d["parties"][0]["authority"] = "did:key:zNope"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_same_org, "distinct orgs"),
        (_duplicate_export, "acme exports an agent twice"),
        (_authority_exported, "an authority is not an exported agent"),
        (_window_empty, "not_after_ms must be after not_before_ms"),
        (_unknown_signer, "not the authority of either party"),
        (_extra_field, "comment"),
        (_not_a_did, "not an Ed25519 did:key"),
    ],
)
def test_inconsistent_agreements_do_not_decode(mutate: Any, message: str) -> None:
    data = as_json(make_agreement())
    mutate(data)
    with pytest.raises(AgreementError, match=message) as info:
        decode_agreement(json.dumps(data).encode())
    assert type(info.value) is AgreementError


def test_constructing_an_inconsistent_agreement_raises_validation_error() -> None:
    with pytest.raises(ValidationError, match="not_after_ms"):
        make_agreement(not_before_ms=5, not_after_ms=5)


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"[]", b"{}", b'{"id": 1}', b"\xff\xfe", b" " * (MAX_AGREEMENT_BYTES + 1)],
)
def test_garbage_does_not_decode(data: bytes) -> None:
    with pytest.raises(AgreementError):
        decode_agreement(data)


def test_an_amendment_has_another_digest_and_needs_new_signatures() -> None:
    v1 = signed(make_agreement())
    v2 = make_agreement(version=2)
    assert v2.digest != v1.digest
    with pytest.raises(AgreementError, match="invalid"):
        v2.model_copy(update={"signatures": v1.signatures}).check_signatures()
    signed(v2).check_signatures()


def test_a_revocation_notice_of_a_party_verifies() -> None:
    agreement = signed(make_agreement())
    notice = revoke_agreement(agreement, B_AUTH, reason="breach", now_ms=77)
    assert (notice.agreement_id, notice.issuer, notice.issued_at_ms) == (
        "acme-beta",
        B_AUTH.did,
        77,
    )
    assert decode_revocation(notice.encode(), agreement) == notice
    assert decode_revocation(notice.encode()) == notice


def test_a_forged_revocation_notice_is_refused() -> None:
    agreement = signed(make_agreement())
    notice = revoke_agreement(agreement, A_AUTH, reason="breach", now_ms=77)
    forged = notice.model_copy(update={"reason": "other"}).encode()
    with pytest.raises(AgreementError, match="not signed by its issuer"):
        decode_revocation(forged, agreement)
    wrong_key = notice.model_copy(
        update={"signature": C_AUTH.sign(notice.signing_bytes()).hex()}
    ).encode()
    with pytest.raises(AgreementError, match="not signed by its issuer"):
        decode_revocation(wrong_key, agreement)


def test_a_revocation_by_a_non_party_is_refused() -> None:
    agreement = signed(make_agreement())
    with pytest.raises(AgreementError, match="not a party"):
        revoke_agreement(agreement, C_AUTH, reason="x", now_ms=1)
    unsigned = AgreementRevocation(
        agreement_id=agreement.id, issuer=C_AUTH.did, reason="x", issued_at_ms=1
    )
    notice = unsigned.model_copy(update={"signature": C_AUTH.sign(unsigned.signing_bytes()).hex()})
    assert decode_revocation(notice.encode()) == notice  # well signed, by somebody
    with pytest.raises(AgreementError, match="is not a party to agreement acme-beta"):
        decode_revocation(notice.encode(), agreement)


def test_a_revocation_of_another_agreement_is_refused() -> None:
    other = signed(make_agreement(agreement_id="acme-beta-2"))
    notice = revoke_agreement(other, A_AUTH, reason="x", now_ms=1)
    with pytest.raises(AgreementError, match="a revocation of acme-beta-2, not of acme-beta"):
        decode_revocation(notice.encode(), signed(make_agreement()))


@pytest.mark.parametrize("data", [b"", b"{}", b"[1]", b"x" * 5000])
def test_garbage_revocations_are_refused(data: bytes) -> None:
    with pytest.raises(AgreementError):
        decode_revocation(data)


@pytest.mark.parametrize(
    ("patterns", "operation", "allowed"),
    [
        (("quote.*",), "quote.request", True),
        (("quote.*",), "quote", False),
        (("quote.*",), "quotes.request", False),
        (("quote.*",), "Quote.request", False),
        (("payment.charge",), "payment.charge", True),
        (("payment.charge",), "payment.charged", False),
        (("q?ote",), "quote", True),
        (("q?ote",), "qote", False),
        (("a.b", "c.*"), "c.d", True),
        (("*",), "anything.at.all", True),
    ],
)
def test_export_allows_glob_matches(
    patterns: tuple[str, ...], operation: str, allowed: bool
) -> None:
    export = Export(agent=A_NODE.did, operations=patterns)
    assert export.allows(operation) is allowed
    assert matches(patterns, operation) is allowed


def test_an_export_needs_an_operation_and_a_did() -> None:
    with pytest.raises(ValidationError):
        Export(agent=A_NODE.did, operations=())
    with pytest.raises(ValidationError):
        Export(agent="did:web:example.com", operations=("*",))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | json_values.map(lambda v: json.dumps(v).encode()))
def test_decode_agreement_raises_only_agreement_error(data: bytes) -> None:
    with contextlib.suppress(AgreementError):
        decode_agreement(data)


@settings(max_examples=100, deadline=None)
@given(
    field=st.sampled_from(["id", "version", "parties", "not_before_ms", "format"]),
    value=json_values,
)
def test_a_field_replaced_by_any_json_raises_only_agreement_error(
    field: str, value: object
) -> None:
    data = as_json(signed(make_agreement()))
    data[field] = value
    with contextlib.suppress(AgreementError):
        decode_agreement(json.dumps(data).encode())
