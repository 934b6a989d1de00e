"""The pure snapshot builders."""

from __future__ import annotations

from agentmesh.dashboard.snapshot import (
    ReceivedReport,
    quarantine_rows,
    refusal_rows,
    slo_rows,
    trust_graph,
)
from agentmesh.observability.status import Refusal, StatusReport
from iatp.identity import AgentIdentity
from registry.revocation import RevocationKind, sign_revocation

AUTHORITY = AgentIdentity.generate()
AGENT = AgentIdentity.generate()


def report(name: str, interval: float, *refusals: Refusal, **slo: object) -> StatusReport:
    return StatusReport(
        node="",
        name=name,
        at_ms=0,
        seq=1,
        interval_s=interval,
        refusals=refusals,
        slo=(slo,) if slo else (),
    )


def test_a_report_is_stale_after_three_intervals_or_five_seconds() -> None:
    quick = ReceivedReport(report("a", 1.0), received_at_ms=10_000)
    assert not quick.stale(14_999)
    assert quick.stale(15_001)
    slow = ReceivedReport(report("b", 10.0), received_at_ms=10_000)
    assert not slow.stale(39_000)
    assert slow.stale(40_001)


def test_refusals_of_all_nodes_newest_first_with_names() -> None:
    early = Refusal(1, "rejected", "bad_signature", "did:p", None, "")
    late = Refusal(5, "rejected", "policy_denied", "did:p", "r1", "[rule=r1]")
    reports = {
        "did:a": ReceivedReport(report("a", 1.0, early), 0),
        "did:b": ReceivedReport(report("b", 1.0, late), 0),
    }
    rows = refusal_rows(reports, {"did:p": "peer", "did:a": "alpha"})
    assert [(r["node_name"], r["code"], r["rule"]) for r in rows] == [
        ("b", "policy_denied", "r1"),
        ("alpha", "bad_signature", None),
    ]
    assert rows[0]["peer_name"] == "peer"


def test_slo_rows_worst_burn_first() -> None:
    reports = {
        "did:a": ReceivedReport(report("a", 1.0, capability="x", burn_rate=0.5), 0),
        "did:b": ReceivedReport(report("b", 1.0, capability="y", burn_rate=12.0), 0),
    }
    assert [r["capability"] for r in slo_rows(reports, {})] == ["y", "x"]


def test_quarantine_rows_show_the_deciding_order() -> None:
    orders = [
        sign_revocation(
            AUTHORITY,
            subject=AGENT.did,
            kind=kind,
            reason=kind.value,
            issued_at_ms=at,
            sequence=at,
        )
        for kind, at in ((RevocationKind.QUARANTINED, 10), (RevocationKind.RELEASED, 20))
    ]
    (row,) = quarantine_rows({AGENT.did: "released"}, lambda did: orders, {AGENT.did: "agent"})
    assert (row["name"], row["status"], row["reason"], row["orders"]) == (
        "agent",
        "released",
        "released",
        2,
    )


def test_no_trust_engine_no_graph() -> None:
    assert trust_graph(None, {}) == {"available": False, "nodes": [], "edges": []}
