"""Rendering a saga's timeline (rich tables), for the CLI, the demo and examples."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from rich.table import Table

from agentmesh.saga.records import RecordKind, SagaRecord
from agentmesh.saga.state import SagaState

STATUS_STYLE = {
    "completed": "green",
    "compensated": "yellow",
    "needs-attention": "bold red",
    "running": "cyan",
    "compensating": "magenta",
    "submitted": "dim",
}


def format_time(ms: int, *, with_date: bool = True) -> str:
    """UTC wall time of ``ms`` with milliseconds."""
    pattern = "%Y-%m-%d %H:%M:%S.%f" if with_date else "%H:%M:%S.%f"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime(pattern)[:-3]


def short_did(did: str | None) -> str:
    return "-" if not did else did[:14] + "…" + did[-6:]


def _event(record: SagaRecord) -> str:
    data = record.data
    kind = record.kind
    if kind is RecordKind.STEP_HANDOFF:
        doubt = " (outcome in doubt)" if data.get("in_doubt") else ""
        return f"handed off: {data.get('reason', '')}{doubt}"
    if kind in (RecordKind.STEP_SUCCEEDED, RecordKind.COMPENSATION_SUCCEEDED):
        return "replayed first result" if data.get("duplicate") else "ok"
    if kind is RecordKind.SAGA_NEEDS_ATTENTION:
        failed = ", ".join(f"{f['step']}@{short_did(f['agent'])}" for f in data.get("failed", []))
        return f"compensation failed: {failed}"
    if kind is RecordKind.SAGA_COMPLETED and data.get("abandoned"):
        return f"{len(data['abandoned'])} abandoned attempt(s) to reconcile"
    parts = [str(data[k]) for k in ("code", "detail") if data.get(k)]
    return " ".join(parts)


def timeline_table(state: SagaState, *, names: Mapping[str, str] | None = None) -> Table:
    """A rich table of every record of ``state``: the saga's timeline.

    ``names`` maps DIDs to readable agent names (otherwise DIDs are shortened).
    """
    names = names or {}
    table = Table(title=f"saga {state.saga_id}: {state.status.value}")
    for column in ("#", "time (UTC)", "event", "step", "agent", "try", "detail"):
        table.add_column(column)
    for record in state.records:
        kind = record.kind.value
        style = (
            "red"
            if "failed" in kind or "attention" in kind
            else "yellow"
            if "compensat" in kind or "handoff" in kind
            else "dim"
            if record.kind is RecordKind.SAGA_RESUMED
            else ""
        )
        table.add_row(
            str(record.number or "·"),
            format_time(record.at_ms, with_date=False),
            f"[{style}]{kind}[/]" if style else kind,
            record.step or "",
            names.get(record.agent, short_did(record.agent)) if record.agent else "",
            str(record.attempt or ""),
            _event(record),
        )
    return table


__all__ = ["STATUS_STYLE", "format_time", "short_did", "timeline_table"]
