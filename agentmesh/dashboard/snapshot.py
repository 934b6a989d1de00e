"""The dashboard's state as plain JSON-ready data, built by pure functions.

Each panel has one builder. They read already verified state (cards the directory
verified, entries the revocation list verified, receipts the trust engine folded,
reports whose envelopes the dashboard's node verified) and never do I/O, so they
are tested without a mesh. :class:`~agentmesh.dashboard.monitor.MeshMonitor` calls
them once per refresh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from agentmesh.observability.status import StatusReport
from agentmesh.saga.log import SagaIndexEntry
from agentmesh.saga.records import RecordKind, SagaRecord
from agentmesh.saga.state import SagaState
from registry.card import AgentCard
from registry.revocation import RevocationEntry
from trust.engine import TrustEngine

MAX_GRAPH_NODES = 150
MAX_GRAPH_EDGES = 400
MAX_REFUSALS = 100
MAX_TIMELINE = 60

Json = dict[str, object]


@dataclass(frozen=True, slots=True)
class ReceivedReport:
    """A verified status report and when this dashboard received it."""

    report: StatusReport
    received_at_ms: int

    def stale(self, now_ms: int, minimum_s: float = 5.0) -> bool:
        """No newer report within three intervals (a node gone, partitioned or quarantined)."""
        window = max(3 * self.report.interval_s, minimum_s) * 1000
        return now_ms - self.received_at_ms > window


def _round(value: float) -> float:
    return round(float(value), 4)


def _drift(engine: TrustEngine | None, did: str) -> Json | None:
    if engine is None or not engine.flagged(did):
        return None
    event = engine.explain(did).drift
    if event is None:
        return {"kind": "flagged", "receipt_id": None, "at_ms": None}
    return {"kind": event.kind, "receipt_id": event.receipt_id, "at_ms": event.at_ms}


def _report_json(received: ReceivedReport, now_ms: int) -> Json:
    report = received.report
    counters = report.counters
    rejected = counters.get("rejected")
    return {
        "name": report.name,
        "at_ms": report.at_ms,
        "received_at_ms": received.received_at_ms,
        "interval_s": report.interval_s,
        "stale": received.stale(now_ms),
        "received": counters.get("received", 0),
        "accepted": counters.get("accepted", 0),
        "handled": counters.get("handled", 0),
        "sent": counters.get("sent", 0),
        "rejected": dict(rejected) if isinstance(rejected, Mapping) else {},
        "refusals_total": report.refusals_total,
    }


def agent_rows(
    cards: Sequence[AgentCard],
    *,
    status_of: Callable[[str], str],
    held: Callable[[str], bool],
    engine: TrustEngine | None,
    reports: Mapping[str, ReceivedReport],
    listed: Iterable[str],
    now_ms: int,
) -> list[Json]:
    """Every agent with a live card, a status report or a blocking entry.

    ``status`` is ``ok``, ``quarantined``, ``revoked``, ``rotated`` or ``held``
    (a capability drift waits for re-approval).
    """
    by_did = {card.did: card for card in cards}
    dids = set(by_did) | set(reports)
    dids.update(did for did in listed if status_of(did) in ("quarantined", "revoked"))
    rows = []
    for did in dids:
        card = by_did.get(did)
        received = reports.get(did)
        name = (
            card.display_name
            if card is not None
            else received.report.name
            if received is not None
            else did[-8:]
        )
        known = engine is not None and did in engine
        rows.append(
            {
                "did": did,
                "name": name,
                "card": card is not None,
                "capabilities": [f"{c.name}@{c.version}" for c in card.capabilities]
                if card is not None
                else [],
                "expires_at_ms": card.expires_at_ms if card is not None else None,
                "status": status_of(did),
                "held": held(did),
                "ring": engine.ring(did) if engine is not None and known else None,
                "score": _round(engine.score(did)) if engine is not None and known else None,
                "evidence": _round(engine.evidence(did)) if engine is not None and known else None,
                "pre_trusted": engine is not None and did in engine.pre_trusted,
                "drift": _drift(engine, did),
                "report": _report_json(received, now_ms) if received is not None else None,
            }
        )
    rows.sort(key=lambda row: (str(row["name"]), str(row["did"])))
    return rows


def trust_graph(engine: TrustEngine | None, names: Mapping[str, str]) -> Json:
    """Nodes (ring, score, drift) and the strongest local-trust edges between them."""
    if engine is None:
        return {"available": False, "nodes": [], "edges": []}
    ranked = sorted(engine.agents, key=lambda did: (-engine.score(did), did))[:MAX_GRAPH_NODES]
    shown = set(ranked)
    nodes = [
        {
            "did": did,
            "name": names.get(did, did[-8:]),
            "ring": engine.ring(did),
            "score": _round(engine.score(did)),
            "drift": engine.flagged(did),
            "pre_trusted": did in engine.pre_trusted,
        }
        for did in sorted(ranked)
    ]
    edges = [
        edge
        for edge in engine.local_trust_edges()
        if edge.known and edge.observer in shown and edge.subject in shown
    ]
    edges.sort(key=lambda edge: (-edge.evidence, edge.observer, edge.subject))
    return {
        "available": True,
        "nodes": nodes,
        "edges": [
            {
                "source": edge.observer,
                "target": edge.subject,
                "estimate": _round(edge.estimate),
                "evidence": _round(edge.evidence),
            }
            for edge in edges[:MAX_GRAPH_EDGES]
        ],
    }


def refusal_rows(reports: Mapping[str, ReceivedReport], names: Mapping[str, str]) -> list[Json]:
    """The newest refusals of every reporting node, newest first."""
    rows: list[Json] = []
    for did, received in reports.items():
        for refusal in received.report.refusals:
            rows.append(
                {
                    "at_ms": refusal.at_ms,
                    "node": did,
                    "node_name": names.get(did, received.report.name),
                    "kind": refusal.kind,
                    "code": refusal.code,
                    "peer": refusal.peer,
                    "peer_name": names.get(refusal.peer, None) if refusal.peer else None,
                    "rule": refusal.rule,
                    "detail": refusal.detail,
                }
            )
    rows.sort(key=lambda row: (-int(str(row["at_ms"])), str(row["node"])))
    return rows[:MAX_REFUSALS]


def quarantine_rows(
    listed: Mapping[str, str],
    entries: Callable[[str], Sequence[RevocationEntry]],
    names: Mapping[str, str],
) -> list[Json]:
    """Every agent with a revocation entry: its status and the order that set it."""
    rows: list[Json] = []
    for did, status in listed.items():
        history = list(entries(did))
        if not history:
            continue
        last = max(history, key=lambda e: e.order)
        rows.append(
            {
                "did": did,
                "name": names.get(did, did[-8:]),
                "status": status,
                "kind": last.kind.value,
                "issuer": last.issuer,
                "issuer_name": names.get(last.issuer, None),
                "reason": last.reason,
                "issued_at_ms": last.issued_at_ms,
                "orders": len(history),
            }
        )
    rows.sort(key=lambda row: -int(str(row["issued_at_ms"])))
    return rows


def describe(record: SagaRecord) -> str:
    """One line about a saga record (like ``agentmesh saga show``'s detail column)."""
    data = record.data
    if record.kind is RecordKind.STEP_HANDOFF:
        doubt = " (outcome in doubt)" if data.get("in_doubt") else ""
        return f"handed off: {data.get('reason', '')}{doubt}"
    if record.kind is RecordKind.SAGA_NEEDS_ATTENTION:
        failed = data.get("failed", [])
        return "compensation failed: " + ", ".join(str(f.get("step")) for f in failed)
    if record.kind in (RecordKind.STEP_SUCCEEDED, RecordKind.COMPENSATION_SUCCEEDED):
        return "replayed first result" if data.get("duplicate") else "ok"
    return " ".join(str(data[k]) for k in ("code", "detail") if data.get(k))


def saga_row(entry: SagaIndexEntry, state: SagaState | None, names: Mapping[str, str]) -> Json:
    """A saga: index status, its steps and its timeline (from the durable log)."""
    row: Json = {
        "id": entry.saga_id,
        "name": entry.name,
        "status": state.status.value if state is not None else entry.status,
        "updated_ms": entry.updated_ms,
        "coordinator": entry.coordinator,
        "steps": [],
        "compensations": [],
        "timeline": [],
    }
    if state is None:
        return row
    row["steps"] = [
        {
            "name": view.name,
            "status": view.status.value,
            "agent": view.agent,
            "agent_name": names.get(view.agent, None) if view.agent else None,
            "code": view.code,
        }
        for view in state.steps.values()
    ]
    row["compensations"] = [
        {
            "step": e.step,
            "agent": e.agent,
            "agent_name": names.get(e.agent, None),
            "status": e.compensation.value,
            "code": e.code,
        }
        for e in reversed(state.executions)
    ]
    row["timeline"] = [
        {
            "number": r.number,
            "at_ms": r.at_ms,
            "kind": r.kind.value,
            "step": r.step,
            "agent": r.agent,
            "agent_name": names.get(r.agent, None) if r.agent else None,
            "attempt": r.attempt,
            "detail": describe(r)[:200],
        }
        for r in state.records[-MAX_TIMELINE:]
    ]
    return row


def slo_rows(reports: Mapping[str, ReceivedReport], names: Mapping[str, str]) -> list[Json]:
    """Every SLO a node reported, with the node it came from, worst burn first."""
    rows: list[Json] = []
    for did, received in reports.items():
        for slo in received.report.slo:
            rows.append({**slo, "node": did, "node_name": names.get(did, received.report.name)})

    def burn(row: Json) -> float:
        value = row.get("burn_rate")
        return float(value) if isinstance(value, int | float) else 0.0

    rows.sort(key=lambda row: (-burn(row), str(row.get("capability", ""))))
    return rows


__all__ = [
    "MAX_GRAPH_EDGES",
    "MAX_GRAPH_NODES",
    "MAX_REFUSALS",
    "Json",
    "ReceivedReport",
    "agent_rows",
    "describe",
    "quarantine_rows",
    "refusal_rows",
    "saga_row",
    "slo_rows",
    "trust_graph",
]
