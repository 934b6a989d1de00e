"""Revocation entries: encoding, signatures, authority rules and the order-free fold."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iatp.identity import AgentIdentity
from registry.errors import (
    InvalidRevocation,
    RevocationError,
    RevocationSignatureInvalid,
    UnauthorizedRevocation,
)
from registry.revocation import (
    RevocationAuthorities,
    RevocationEntry,
    RevocationKind,
    RevocationLedger,
    decode_revocation,
    sign_revocation,
    verify_revocation,
)

MESH = AgentIdentity.from_seed(b"M" * 32)
ORG = AgentIdentity.from_seed(b"O" * 32)
AGENT = AgentIdentity.from_seed(b"a" * 32)
OTHER = AgentIdentity.from_seed(b"b" * 32)
AUTH = RevocationAuthorities(
    mesh=frozenset({MESH.did}), organizations={ORG.did: frozenset({AGENT.did})}
)


def sign(issuer: AgentIdentity, kind: RevocationKind, at: int = 1, seq: int = 0) -> RevocationEntry:
    return sign_revocation(
        issuer, subject=AGENT.did, kind=kind, reason="r", issued_at_ms=at, sequence=seq
    )


@pytest.mark.parametrize(
    ("issuer", "kind", "allowed"),
    [
        (MESH, RevocationKind.RELEASED, True),
        (ORG, RevocationKind.REVOKED, True),
        (ORG, RevocationKind.RELEASED, True),
        (AGENT, RevocationKind.REVOKED, True),
        (AGENT, RevocationKind.QUARANTINED, True),
        (AGENT, RevocationKind.RELEASED, False),
        (OTHER, RevocationKind.QUARANTINED, False),
    ],
)
def test_authority_rules(issuer: AgentIdentity, kind: RevocationKind, allowed: bool) -> None:
    entry = sign(issuer, kind)
    if allowed:
        verify_revocation(entry, AUTH)
    else:
        with pytest.raises(UnauthorizedRevocation):
            verify_revocation(entry, AUTH)


def test_an_organization_has_no_authority_over_non_members() -> None:
    entry = sign_revocation(
        ORG, subject=OTHER.did, kind=RevocationKind.REVOKED, reason="", issued_at_ms=1, sequence=0
    )
    with pytest.raises(UnauthorizedRevocation):
        verify_revocation(entry, AUTH)


def test_round_trip_and_tampering() -> None:
    entry = sign(MESH, RevocationKind.QUARANTINED, at=5, seq=7)
    assert decode_revocation(entry.encode()) == entry
    for field, value in [
        ("kind", RevocationKind.RELEASED),
        ("reason", "other"),
        ("sequence", 8),
        ("subject", OTHER.did),
    ]:
        fields = {
            "subject": entry.subject,
            "kind": entry.kind,
            "issuer": entry.issuer,
            "reason": entry.reason,
            "issued_at_ms": entry.issued_at_ms,
            "sequence": entry.sequence,
            "signature": entry.signature,
        }
        fields[field] = value
        forged = RevocationEntry(**fields)  # type: ignore[arg-type]
        with pytest.raises(RevocationSignatureInvalid):
            verify_revocation(forged, AUTH)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x90", b"\xc1", b"x" * 2000],
)
def test_malformed_encodings(data: bytes) -> None:
    with pytest.raises(InvalidRevocation):
        decode_revocation(data)


def test_invalid_fields_are_refused_at_signing() -> None:
    with pytest.raises(InvalidRevocation):
        sign_revocation(
            MESH, subject="did:x", kind="revoked", reason="", issued_at_ms=1, sequence=0
        )  # type: ignore[arg-type]
    with pytest.raises(InvalidRevocation):
        sign(MESH, RevocationKind.REVOKED, seq=-1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_raises_only_revocation_errors(data: bytes) -> None:
    # Anything but a RevocationError (IndexError, UnicodeError, ...) fails the test.
    with contextlib.suppress(RevocationError):
        decode_revocation(data)


def test_the_fold_does_not_depend_on_arrival_order() -> None:
    entries = [
        sign(MESH, RevocationKind.QUARANTINED, at=1),
        sign(MESH, RevocationKind.RELEASED, at=2),
        sign(MESH, RevocationKind.QUARANTINED, at=3),
        sign(ORG, RevocationKind.RELEASED, at=3),  # tie: quarantine wins
    ]
    for order in itertools.permutations(entries):
        ledger = RevocationLedger()
        for entry in order:
            ledger.add(entry)
        assert ledger.status(AGENT.did) is RevocationKind.QUARANTINED
    ledger = RevocationLedger()
    for entry in [*entries, sign(AGENT, RevocationKind.REVOKED, at=0)]:
        ledger.add(entry)
    assert ledger.status(AGENT.did) is RevocationKind.REVOKED
    assert not ledger.add(entries[0])  # duplicates change nothing
