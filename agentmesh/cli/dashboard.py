"""``agentmesh dashboard``: the live mesh dashboard (a local web page), and ``dashboard sign``.

The web server needs the ``dashboard`` extra (Starlette, uvicorn, sse-starlette);
this module imports it only when the dashboard starts, so the rest of the CLI works
without it. ``dashboard sign`` needs no extra: it signs an operation document with
an authority's identity, to paste into a dashboard started with
``--allow-signed-actions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from agentmesh.cli.connection import (
    JwtFile,
    PassphraseEnv,
    load_or_exit,
    nats_option,
    secure_config,
)
from agentmesh.cli.failures import CommandFailed, explain, usage
from agentmesh.cli.logs import log_reconnects
from agentmesh.dashboard.errors import DashboardError
from agentmesh.dashboard.operations import operation_document, sign_operation
from iatp.did import is_did
from iatp.errors import AgentMeshError
from iatp.identity import AgentIdentity
from registry.errors import RegistryError
from registry.revocation import RevocationKind

if TYPE_CHECKING:
    from agentmesh.transport.nats import NatsConfig

app = typer.Typer(
    help="The live mesh dashboard: agents, trust graph, refusals, quarantines, sagas, SLOs.",
    invoke_without_command=True,
)
err = Console(stderr=True, emoji=False, highlight=False)

EXTRA_HINT = "pip install 'agentmesh[dashboard]'"
_NEEDED = ("starlette", "uvicorn", "sse_starlette")


def missing_extra() -> list[str]:
    """The dashboard extra's modules this Python lacks."""
    return [name for name in _NEEDED if importlib.util.find_spec(name) is None]


def _check_dids(dids: list[str], hint: str) -> None:
    for did in dids:
        if not is_did(did):
            raise typer.BadParameter(f"{did!r} is not an Ed25519 did:key", param_hint=hint)


@app.callback()
def dashboard(
    ctx: typer.Context,
    nats: Annotated[str | None, nats_option(help="NATS server URL of the mesh to watch.")] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="Run a small live mesh in this process (embedded transport) and show it."
        ),
    ] = False,
    mesh: Annotated[str, typer.Option("--mesh", help="Mesh name.")] = "agentmesh",
    host: Annotated[
        str, typer.Option("--host", help="Address to serve on (loopback unless --allow-remote).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any).")
    ] = 8787,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Allow a non-loopback --host (put an authenticating proxy in front).",
        ),
    ] = False,
    authority: Annotated[
        list[str] | None,
        typer.Option(
            "--authority",
            help="Mesh authority DID (repeatable): whose quarantines count, who may sign "
            "operations.",
        ),
    ] = None,
    pre_trusted: Annotated[
        list[str] | None,
        typer.Option("--pre-trusted", help="DID that anchors trust (repeatable)."),
    ] = None,
    allow_signed_actions: Annotated[
        bool,
        typer.Option(
            "--allow-signed-actions",
            help="Accept signed quarantine/release operations (POST /api/operations); "
            "off: read-only.",
        ),
    ] = False,
    identity: Annotated[
        Path | None,
        typer.Option(
            "--identity", help="The dashboard's own identity (the one --jwt was issued for)."
        ),
    ] = None,
    passphrase_env: PassphraseEnv = None,
    jwt: JwtFile = None,
) -> None:
    """Serve a local web page that shows the mesh live (read-only by default).

    Watch a running mesh with --nats URL, or see the built-in demo mesh with --demo.
    Any action needs an operation document signed by a mesh authority
    ('agentmesh dashboard sign') and --allow-signed-actions.
    """
    if ctx.invoked_subcommand is not None:
        return
    if (nats is None) == (not demo):
        raise typer.BadParameter("give --nats URL or --demo", param_hint="--nats/--demo")
    authorities = list(authority or [])
    anchors = list(pre_trusted or [])
    _check_dids(authorities, "--authority")
    _check_dids(anchors, "--pre-trusted")
    missing = missing_extra()
    if missing:
        raise usage(f"the dashboard needs {', '.join(missing)}", EXTRA_HINT)
    from agentmesh.dashboard.server import check_bind

    try:
        check_bind(host, allow_remote=allow_remote)
    except DashboardError as exc:
        raise usage(f"refused: {exc}", "see 'agentmesh dashboard --help'") from None
    if allow_signed_actions and not authorities and not demo:
        err.print("[yellow]note:[/] no --authority: no signed operation can be accepted")
    me = load_or_exit(identity, passphrase_env) if identity is not None else None
    config = secure_config(me, jwt) if nats is not None else None
    settings = _Settings(
        nats=nats,
        mesh=mesh,
        host=host,
        port=port,
        allow_remote=allow_remote,
        authorities=tuple(authorities),
        pre_trusted=tuple(anchors),
        actions=allow_signed_actions,
        identity=me,
    )
    try:
        asyncio.run(_serve(settings, config))
    except AgentMeshError as exc:
        raise explain(exc) from None


@dataclass(frozen=True, slots=True)
class _Settings:
    nats: str | None
    mesh: str
    host: str
    port: int
    allow_remote: bool
    authorities: tuple[str, ...]
    pre_trusted: tuple[str, ...]
    actions: bool
    identity: AgentIdentity | None


async def _serve(settings: _Settings, config: NatsConfig | None) -> None:
    from agentmesh.dashboard.app import LOOPBACK_HOSTS, create_app
    from agentmesh.dashboard.demo import DemoMesh
    from agentmesh.dashboard.monitor import MeshMonitor
    from agentmesh.dashboard.operations import OperationGate
    from agentmesh.dashboard.server import DashboardServer
    from agentmesh.node.runner import install_stop_signals
    from agentmesh.transport.base import Transport
    from agentmesh.transport.factory import make_transport
    from agentmesh.transport.memory import InMemoryBus, InMemoryTransport

    stop = asyncio.Event()
    install_stop_signals(stop)
    if settings.nats is not None:
        log_reconnects()
    demo: DemoMesh | None = None
    transport: Transport
    anchors: tuple[str, ...]
    async with contextlib.AsyncExitStack() as stack:
        if settings.nats is None:
            bus = InMemoryBus()
            demo = DemoMesh(bus, extra_authorities=settings.authorities)
            transport = InMemoryTransport(bus, name="dashboard")
            authorities, anchors, mesh = demo.authorities, (demo.anchor,), demo.mesh
            # The demo's agents judge bad findings by raising: expected, not news.
            quiet = logging.getLogger("agentmesh.node.node")
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            stack.callback(quiet.setLevel, level)
        else:
            transport = make_transport(settings.nats, name="agentmesh-dashboard", config=config)
            authorities, anchors, mesh = settings.authorities, settings.pre_trusted, settings.mesh
        monitor = MeshMonitor(
            transport,
            mesh=mesh,
            identity=settings.identity,
            authorities=authorities,
            pre_trusted=anchors,
            mode="demo" if demo is not None else "nats",
            actions=settings.actions,
        )
        await stack.enter_async_context(monitor)
        gate = OperationGate(monitor.apply, authorities, known=monitor.knows)
        if demo is not None:
            demo.submit = gate.submit
            await stack.enter_async_context(demo)
        web = create_app(
            monitor,
            operations=gate if settings.actions else None,
            allowed_hosts=None
            if settings.allow_remote
            else (*LOOPBACK_HOSTS, settings.host.strip("[]").lower()),
            stop=stop,
        )
        server = DashboardServer(
            web,
            host=settings.host,
            port=settings.port,
            allow_remote=settings.allow_remote,
            stop=stop,
        )
        await stack.enter_async_context(server)
        access = "signed actions allowed" if settings.actions else "read-only"
        err.print(
            f"dashboard: {server.url} ({access}; mesh {mesh!r}; Ctrl-C stops)", soft_wrap=True
        )
        await stop.wait()


@app.command("sign")
def sign(
    action: Annotated[str, typer.Argument(help="quarantine or release.")],
    did: Annotated[str, typer.Argument(help="The agent it is about.")],
    identity: Annotated[
        Path, typer.Option("--identity", help="The mesh authority's identity file (signs it).")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why (audited on every node).")],
    passphrase_env: PassphraseEnv = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the document here instead of stdout.")
    ] = None,
) -> None:
    """Sign a quarantine or release order as an operation document for a dashboard.

    Paste it into the page's "signed operation" panel (or POST it to
    /api/operations); it is valid for five minutes.
    """
    kinds = {"quarantine": RevocationKind.QUARANTINED, "release": RevocationKind.RELEASED}
    if action not in kinds:
        raise typer.BadParameter("quarantine or release", param_hint="ACTION")
    _check_dids([did], "DID")
    issuer = load_or_exit(identity, passphrase_env)
    try:
        entry = sign_operation(issuer, did, kinds[action], reason)
    except (RegistryError, DashboardError) as exc:
        raise CommandFailed(f"refused: {exc}", reason=exc.code) from None
    text = json.dumps(operation_document(entry), indent=2)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        err.print(f"wrote {out} ({action} {did}, signed by {issuer.did})")
