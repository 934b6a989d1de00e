"""``agentmesh audit``: verify a hash-chained audit log against its signed checkpoints."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from agentmesh.audit.checkpoint import Checkpoint, checkpoint_path, read_checkpoints
from agentmesh.audit.verify import verify_log
from agentmesh.cli.connection import (
    IdentityFile,
    JwtFile,
    PassphraseEnv,
    load_or_exit,
    nats_option,
    secure_config,
)
from agentmesh.cli.failures import CommandFailed, explain, reading, usage
from agentmesh.errors import TransportError
from iatp.did import is_did

if TYPE_CHECKING:
    from agentmesh.transport.nats import NatsConfig

app = typer.Typer(help="Verify tamper-evident audit logs.", no_args_is_help=True)
out = Console(emoji=False, highlight=False)
err = Console(stderr=True, emoji=False, highlight=False)


async def _witnessed(
    url: str, mesh: str, node: str, config: NatsConfig | None
) -> list[Checkpoint | None]:
    from agentmesh.audit.witness import fetch_checkpoints
    from agentmesh.transport.factory import make_transport

    async with make_transport(url, name="audit-verify", config=config) as transport:
        return await fetch_checkpoints(transport, mesh, node)


@app.command("verify")
def verify(
    log: Annotated[Path, typer.Argument(help="The audit log (from 'node run --audit-log').")],
    node: Annotated[
        str | None,
        typer.Option("--node", help="DID that must have signed the checkpoints (recommended)."),
    ] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option("--checkpoints", help="Checkpoint file (default: LOG.checkpoints)."),
    ] = None,
    nats: Annotated[
        str | None,
        nats_option(help="Also check the checkpoints the mesh witnessed (needs --node)."),
    ] = None,
    mesh: Annotated[str, typer.Option("--mesh", help="Mesh name.")] = "agentmesh",
    identity: IdentityFile = None,
    jwt: JwtFile = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Find edited, removed, inserted or reordered records and say where. Exits 1 if any."""
    if not log.exists():
        raise usage(f"audit log {log} does not exist", "give the file 'node run --audit-log' wrote")
    if node is not None and not is_did(node):
        raise typer.BadParameter(f"{node!r} is not a did:key", param_hint="--node")
    sidecar = checkpoints or checkpoint_path(log)
    with reading(sidecar, "checkpoint file"):
        found: list[tuple[int | None, Checkpoint | None]] = list(read_checkpoints(sidecar))
    if nats is not None:
        if node is None:
            raise typer.BadParameter(
                "name the node whose checkpoints to fetch", param_hint="--node"
            )
        try:
            me = load_or_exit(identity, passphrase_env) if identity is not None else None
            config = secure_config(me, jwt)
            found += [(None, c) for c in asyncio.run(_witnessed(nats, mesh, node, config))]
        except TransportError as exc:
            failure = explain(exc)
            raise CommandFailed(
                f"could not read the witnessed checkpoints: {failure.what}",
                failure.todo,
                reason=failure.reason,
            ) from None
    with reading(log, "audit log"):
        report = verify_log(log, found, node=node)
    out.print(
        f"{log}: {report.records} records, last seq {report.last_seq}, "
        f"{report.checkpoints} valid checkpoint(s)"
    )
    if node is None and report.checkpoints:
        err.print("[yellow]warning:[/] without --node any validly signed checkpoint counts")
    if report.ok:
        if not report.checkpoints:
            err.print("[yellow]warning:[/] no checkpoint: a full rewrite would go unnoticed")
        out.print("[green]OK[/]: the chain is intact")
        return
    table = Table("problem", "line", "seq", "detail")
    for problem in report.problems:
        table.add_row(
            problem.kind,
            "-" if problem.line is None else str(problem.line),
            "-" if problem.seq is None else str(problem.seq),
            problem.message,
        )
    out.print(table)
    raise CommandFailed(
        f"{log}: TAMPERED, {len(report.problems)} problem(s)",
        "the table above says where; keep the file as evidence",
    )
