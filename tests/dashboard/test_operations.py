"""The operation gate: only fresh orders signed by a mesh authority get through."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from agentmesh.dashboard.errors import (
    OperationKindRefused,
    OperationMalformed,
    OperationRefused,
    OperationReplayed,
    OperationSignatureInvalid,
    OperationStale,
    OperationUnauthorized,
    OperationUnsigned,
)
from agentmesh.dashboard.operations import (
    OPERATION_TYPE,
    OperationGate,
    operation_document,
    sign_operation,
)
from iatp.clock import ManualClock
from iatp.identity import AgentIdentity
from registry.revocation import RevocationEntry, RevocationKind, sign_revocation

NOW = 1_800_000_000_000
AUTHORITY = AgentIdentity.generate()
AGENT = AgentIdentity.generate()


def document(entry: RevocationEntry, **changes: object) -> bytes:
    return json.dumps({**operation_document(entry), **changes}).encode()


def make_gate(applied: list[RevocationEntry], known: set[str] | None = None) -> OperationGate:
    async def apply(entry: RevocationEntry) -> None:
        applied.append(entry)

    seen = known if known is not None else set()
    return OperationGate(
        apply,
        [AUTHORITY.did],
        known=lambda entry: entry.entry_id in seen,
        clock=ManualClock(NOW),
    )


def order(issuer: AgentIdentity = AUTHORITY, **fields: object) -> RevocationEntry:
    values: dict[str, object] = {
        "subject": AGENT.did,
        "kind": RevocationKind.QUARANTINED,
        "reason": "test",
        "issued_at_ms": NOW - 1000,
        "sequence": 1,
    }
    values.update(fields)
    return sign_revocation(issuer, **values)  # type: ignore[arg-type]


async def test_an_authoritys_fresh_order_is_applied() -> None:
    applied: list[RevocationEntry] = []
    entry = order()
    result = await make_gate(applied).submit(document(entry))
    assert applied == [entry]
    assert result["kind"] == "quarantined"
    assert result["subject"] == AGENT.did
    assert result["entry_id"] == entry.entry_id


def test_sign_operation_makes_what_the_gate_accepts() -> None:
    clock = ManualClock(NOW)
    entry = sign_operation(AUTHORITY, AGENT.did, RevocationKind.RELEASED, "ok", clock=clock)
    assert make_gate([]).check(json.dumps(operation_document(entry)).encode()) == entry
    with pytest.raises(OperationKindRefused):
        sign_operation(AUTHORITY, AGENT.did, RevocationKind.REVOKED, "no", clock=clock)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"quarantine please",
        json.dumps({"action": "quarantine", "did": AGENT.did}).encode(),
        json.dumps({"type": OPERATION_TYPE, "version": 1}).encode(),
        json.dumps({"type": "other", "version": 1, "entry": "AAAA"}).encode(),
        b"{" + b" " * 20_000 + b"}",
    ],
)
def test_bare_requests_are_not_operations(body: bytes) -> None:
    with pytest.raises(OperationUnsigned):
        make_gate([]).check(body)


def test_an_altered_order_fails_its_signature() -> None:
    entry = order()
    forged = replace(entry, subject=AgentIdentity.generate().did)  # the signature was not redone
    with pytest.raises(OperationSignatureInvalid):
        make_gate([]).check(document(forged, summary=None))


def test_an_order_claiming_an_authority_but_signed_by_someone_else_is_forged() -> None:
    mallory = AgentIdentity.generate()
    entry = order(mallory)
    forged = replace(entry, issuer=AUTHORITY.did)
    with pytest.raises(OperationSignatureInvalid):
        make_gate([]).check(document(forged, summary=None))


def test_orders_of_non_authorities_and_self_orders_are_refused() -> None:
    with pytest.raises(OperationUnauthorized):
        make_gate([]).check(document(order(AgentIdentity.generate())))
    # An agent may quarantine itself on the mesh, but not through the dashboard.
    with pytest.raises(OperationUnauthorized):
        make_gate([]).check(document(order(AGENT)))


def test_only_quarantine_and_release_are_taken() -> None:
    with pytest.raises(OperationKindRefused):
        make_gate([]).check(document(order(kind=RevocationKind.REVOKED)))


def test_a_summary_that_lies_about_the_entry_is_refused() -> None:
    entry = order()
    body = operation_document(entry)
    summary = dict(body["summary"])  # type: ignore[call-overload]
    summary["subject"] = AgentIdentity.generate().did
    with pytest.raises(OperationMalformed):
        make_gate([]).check(json.dumps({**body, "summary": summary}).encode())


@pytest.mark.parametrize("entry", ["!!!", base64.b64encode(b"\x93\x01\x02\x03").decode()])
def test_an_undecodable_entry_is_malformed(entry: str) -> None:
    body = json.dumps({"type": OPERATION_TYPE, "version": 1, "entry": entry}).encode()
    with pytest.raises(OperationMalformed):
        make_gate([]).check(body)


@pytest.mark.parametrize("issued_at_ms", [NOW - 301_000, NOW + 61_000])
def test_stale_and_future_orders_are_refused(issued_at_ms: int) -> None:
    with pytest.raises(OperationStale):
        make_gate([]).check(document(order(issued_at_ms=issued_at_ms)))


async def test_a_replayed_order_is_refused_and_nothing_is_applied() -> None:
    applied: list[RevocationEntry] = []
    entry = order()
    gate = make_gate(applied, known={entry.entry_id})
    with pytest.raises(OperationReplayed):
        await gate.submit(document(entry))
    assert applied == []
    assert gate.refused == {"operation_replayed": 1}


def test_every_refusal_is_an_operation_refused() -> None:
    for error in (
        OperationUnsigned,
        OperationMalformed,
        OperationKindRefused,
        OperationSignatureInvalid,
        OperationUnauthorized,
        OperationStale,
        OperationReplayed,
    ):
        assert issubclass(error, OperationRefused)
        assert error.code.startswith("operation_")
