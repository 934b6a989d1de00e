"""``agentmesh saga``: list the sagas of a mesh and show one saga's timeline.

Both commands read the durable saga log (JetStream) of a running mesh; they never
write to it. ``show`` folds the log exactly as a coordinator replica would, so
what it prints is what a replica would resume from.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agentmesh.cli.connection import (
    IdentityFile,
    JwtFile,
    PassphraseEnv,
    load_or_exit,
    nats_option,
    secure_config,
)
from agentmesh.cli.failures import CommandFailed, explain, usage
from agentmesh.errors import TransportError
from agentmesh.saga.errors import SagaError
from agentmesh.saga.log import SagaIndexEntry, SagaLog
from agentmesh.saga.state import SagaState
from agentmesh.saga.timeline import STATUS_STYLE, format_time, short_did, timeline_table
from agentmesh.transport.factory import make_transport

if TYPE_CHECKING:
    from agentmesh.transport.nats import NatsConfig

app = typer.Typer(
    help="Inspect sagas: their status, steps, compensations and handoffs.", no_args_is_help=True
)
err = Console(stderr=True)

Nats = Annotated[str, nats_option(help="NATS server URL of the mesh, e.g. nats://127.0.0.1:4222.")]
Mesh = Annotated[str, typer.Option("--mesh", help="Mesh name (as the coordinators use).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _config(
    identity: Path | None, jwt: Path | None, passphrase_env: str | None
) -> NatsConfig | None:
    me = load_or_exit(identity, passphrase_env) if identity is not None else None
    return secure_config(me, jwt)


async def _with_log(nats: str, mesh: str, work: Any, config: NatsConfig | None = None) -> Any:
    try:
        async with make_transport(nats, name="agentmesh-saga-cli", config=config) as transport:
            return await work(await SagaLog.open(transport, mesh=mesh))
    except SagaError as exc:
        todo = (
            "list the sagas of this mesh with: agentmesh saga list --nats URL --mesh M"
            if exc.code == "saga_not_found"
            else ""
        )
        raise CommandFailed(str(exc), todo, reason=exc.code) from None
    except (TransportError, OSError) as exc:
        failure = explain(exc)
        raise CommandFailed(
            f"cannot read the saga log: {failure.what}",
            "Is nats-server running (with -js) at --nats, and is --mesh the right mesh?",
            reason=failure.reason,
        ) from None
    except ValueError as exc:
        raise usage(f"cannot read the saga log: {exc}", "is --mesh the right mesh?") from None


def _entry_json(entry: SagaIndexEntry) -> dict[str, Any]:
    return {
        "id": entry.saga_id,
        "name": entry.name,
        "status": entry.status,
        "steps": sum(
            len(s["parallel"]) if "parallel" in s else 1 for s in entry.definition["steps"]
        ),
        "updated_ms": entry.updated_ms,
        "coordinator": entry.coordinator,
    }


@app.command("list")
def list_sagas(
    nats: Nats,
    mesh: Mesh = "agentmesh",
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only this status (e.g. needs-attention, running)."),
    ] = None,
    as_json: AsJson = False,
    identity: IdentityFile = None,
    jwt: JwtFile = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Every saga of the mesh with its status (from the saga index)."""
    config = _config(identity, jwt, passphrase_env)
    entries: list[SagaIndexEntry] = asyncio.run(
        _with_log(nats, mesh, lambda log: log.entries(), config)
    )
    if status:
        entries = [e for e in entries if e.status == status]
    if as_json:
        typer.echo(json.dumps([_entry_json(e) for e in entries], indent=2))
        return
    table = Table(title=f"{len(entries)} saga(s) in mesh {mesh!r}")
    for column in ("id", "name", "status", "steps", "updated (UTC)", "last coordinator"):
        table.add_column(column)
    for entry in entries:
        data = _entry_json(entry)
        style = STATUS_STYLE.get(entry.status, "")
        table.add_row(
            entry.saga_id,
            entry.name,
            f"[{style}]{entry.status}[/]" if style else entry.status,
            str(data["steps"]),
            format_time(entry.updated_ms),
            short_did(entry.coordinator),
        )
    Console().print(table)
    attention = sum(1 for e in entries if e.status == "needs-attention")
    if attention:
        err.print(
            f"[bold red]{attention} saga(s) need attention[/]: a compensation failed; "
            "see 'agentmesh saga show ID'."
        )


def _state_json(state: SagaState) -> dict[str, Any]:
    return {
        "id": state.saga_id,
        "status": state.status.value,
        "steps": {
            name: {"status": v.status.value, "agent": v.agent, "code": v.code}
            for name, v in state.steps.items()
        },
        "compensations": [
            {"step": e.step, "agent": e.agent, "status": e.compensation.value, "code": e.code}
            for e in reversed(state.executions)
        ],
        "records": [
            {
                "number": r.number,
                "kind": r.kind.value,
                "at_ms": r.at_ms,
                "step": r.step,
                "agent": r.agent,
                "attempt": r.attempt,
                "data": r.data,
                "coordinator": r.coordinator,
            }
            for r in state.records
        ],
    }


@app.command("show")
def show(
    saga_id: Annotated[str, typer.Argument(help="The saga id (see 'agentmesh saga list').")],
    nats: Nats,
    mesh: Mesh = "agentmesh",
    as_json: AsJson = False,
    identity: IdentityFile = None,
    jwt: JwtFile = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """One saga's timeline: every step, handoff and compensation, from its durable log."""
    config = _config(identity, jwt, passphrase_env)
    state: SagaState = asyncio.run(_with_log(nats, mesh, lambda log: log.load(saga_id), config))
    if as_json:
        typer.echo(json.dumps(_state_json(state), indent=2, default=str))
        return
    out = Console()
    out.print(timeline_table(state))
    if state.executions:
        table = Table(title="compensations (reverse order)")
        for column in ("step", "agent", "status", "attempts", "code"):
            table.add_column(column)
        for execution in reversed(state.executions):
            table.add_row(
                execution.step,
                short_did(execution.agent),
                execution.compensation.value,
                str(execution.attempts),
                execution.code,
            )
        out.print(table)
    if state.fenced:
        out.print(f"[yellow]{state.fenced} record(s) from a replica that lost a race ignored[/]")
