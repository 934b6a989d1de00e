"""Signed status reports: refusals tapped from audit events, encoding, and the broadcast."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from agentmesh.audit import AuditEvent, MemoryAuditSink
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.observability.status import (
    MAX_REFUSALS,
    STATUS_TOPIC,
    RecentRefusals,
    StatusReport,
    StatusReporter,
    StatusReportInvalid,
    decode_status_report,
    is_refusal,
    rule_of,
    slo_rows,
)
from agentmesh.transport.memory import InMemoryBus, InMemoryTransport
from iatp.identity import AgentIdentity


def event(kind: str, code: str, detail: str = "", at_ms: int = 1) -> AuditEvent:
    return AuditEvent(at_ms=at_ms, node="n", kind=kind, code=code, peer="did:p", detail=detail)


@dataclass(frozen=True)
class Slo:
    capability: str
    objective: float
    success_rate: float
    latency_ok_rate: float
    error_budget_remaining: float
    burn_rate: float


def test_only_refusals_are_kept_newest_first_with_their_rule() -> None:
    refusals = RecentRefusals(capacity=3)
    sink = MemoryAuditSink()
    tapped = refusals.tap(sink)
    tapped.append(event("lifecycle", "joined"))
    tapped.append(event("handshake", "established"))
    tapped.append(event("rejected", "bad_signature", at_ms=2))
    tapped.append(
        event("rejected", "policy_denied", "refund: deny [rule=sandbox-no-payments ring=3]", 3)
    )
    tapped.append(event("handshake", "handshake_refused", at_ms=4))
    tapped.append(event("quarantine_rejected", "revocation_unauthorized", at_ms=5))
    assert len(sink) == 6  # every event still reaches the node's own sink
    newest = refusals.newest()
    assert [r.code for r in newest] == [
        "revocation_unauthorized",
        "handshake_refused",
        "policy_denied",
    ]
    assert newest[2].rule == "sandbox-no-payments"
    assert refusals.total == 4


def test_rule_and_refusal_classification() -> None:
    assert rule_of("x [rule=a.b-c ring=2]") == "a.b-c"
    assert rule_of("x [rule=None ring=2]") is None
    assert rule_of("no rule here") is None
    assert is_refusal(event("saga", "candidate_refused"))
    assert not is_refusal(event("saga", "step.succeeded"))
    assert is_refusal(event("outbound_denied", "quarantined"))


def test_report_round_trip_and_sender_comes_from_the_envelope() -> None:
    refusals = RecentRefusals()
    refusals.append(event("rejected", "policy_denied", "[rule=r1 ring=3]", 7))
    report = StatusReport(
        node="did:ignored",
        name="treasury",
        at_ms=10,
        seq=1,
        interval_s=2.0,
        counters={"received": 3, "rejected": {"policy_denied": 1}},
        refusals_total=1,
        refusals=tuple(refusals.newest()),
        slo=slo_rows([Slo("pay", 0.99, 0.9, 1.0, 0.0, 10.0)]),
    )
    decoded = decode_status_report("did:key:sender", report.encode())
    assert decoded.node == "did:key:sender"
    assert decoded.refusals[0].rule == "r1"
    assert decoded.slo[0]["burn_rate"] == 10.0
    assert decoded.counters["rejected"] == {"policy_denied": 1}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"v": 2}).encode(),
        json.dumps({"v": 1, "counters": {}, "refusals": "x", "slo": []}).encode(),
        json.dumps(
            {"v": 1, "counters": {}, "refusals": [{"at_ms": "x"}], "slo": [], "interval_s": 1}
        ).encode(),
        b" " * (300 * 1024),
    ],
)
def test_malformed_reports_are_refused(body: bytes) -> None:
    with pytest.raises(StatusReportInvalid):
        decode_status_report("did:key:x", body)


def test_slo_rows_take_dataclasses_and_mappings_only() -> None:
    rows = slo_rows([Slo("a", 0.9, 0.8, 1.0, 0.0, 2.0), {"capability": "b"}, object()])
    assert [r["capability"] for r in rows] == ["a", "b"]


async def test_reports_are_signed_broadcasts_that_receivers_verify() -> None:
    bus = InMemoryBus()
    config = NodeConfig(mesh="status-test")
    reporter_identity = AgentIdentity.generate()
    refusals = RecentRefusals()
    sender = MeshNode(
        reporter_identity,
        InMemoryTransport(bus, name="a"),
        config=config,
        audit=refusals.tap(MemoryAuditSink()),
    )
    receiver = MeshNode(AgentIdentity.generate(), InMemoryTransport(bus, name="b"), config=config)
    got: list[StatusReport] = []

    async def on_status(message: InboundMessage) -> None:
        got.append(decode_status_report(message.sender, message.body))

    async with sender, receiver:
        await receiver.subscribe_topic(STATUS_TOPIC, on_status)
        refusals.append(event("rejected", "replayed"))
        calls = 0

        def snapshot() -> list[Slo]:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise RuntimeError("provider broke")
            return [Slo("echo", 0.9, 1.0, 1.0, 1.0, 0.0)]

        async with StatusReporter(
            sender, interval=0.05, refusals=refusals, slo_snapshot=snapshot, name="alpha"
        ) as reporter:
            for _ in range(100):
                if len(got) >= 3:
                    break
                await asyncio.sleep(0.02)
        assert reporter.sent >= 3
        await reporter.aclose()  # idempotent
    assert got[0].node == reporter_identity.did
    assert got[0].name == "alpha"
    assert got[0].refusals[0].code == "replayed"
    assert got[0].slo[0]["capability"] == "echo"
    assert got[1].slo == ()  # a failing provider does not stop the report
    assert [r.seq for r in got[:3]] == [1, 2, 3]


def test_reporter_rejects_a_bad_interval() -> None:
    node = MeshNode(AgentIdentity.generate(), InMemoryTransport(InMemoryBus(), name="x"))
    with pytest.raises(ValueError, match="interval"):
        StatusReporter(node, interval=0)


def test_refusal_capacity_default() -> None:
    refusals = RecentRefusals()
    for index in range(MAX_REFUSALS + 10):
        refusals.append(event("rejected", f"c{index}"))
    assert len(refusals.newest()) == MAX_REFUSALS
    assert refusals.newest()[0].code == f"c{MAX_REFUSALS + 9}"
