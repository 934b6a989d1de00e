"""Entry point of the ``agentmesh`` command."""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Annotated

import typer

from agentmesh.cli import (
    audit,
    dashboard,
    federation,
    identity,
    mesh,
    node,
    policy,
    quarantine,
    registry,
    saga,
    trust,
)
from agentmesh.cli.boundary import DEBUG_ENV, GuardedGroup
from agentmesh.cli.connection import nats_option
from agentmesh.cli.failures import EXIT_CODES_HELP

app = typer.Typer(
    cls=GuardedGroup,
    help="agentmesh: safe teams of AI agents over a signed, trust-aware mesh.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar=DEBUG_ENV,
            help="On failure print the traceback too, and log everything (debug level).",
        ),
    ] = False,
) -> None:
    """agentmesh: safe teams of AI agents over a signed, trust-aware mesh."""
    # The boundary (GuardedGroup) reads --debug from the command line itself: it must
    # know before the command runs, and for errors that happen before this callback.
    del debug


app.add_typer(identity.app, name="identity")
app.add_typer(node.app, name="node")
app.add_typer(policy.app, name="policy")
app.add_typer(audit.app, name="audit")
app.add_typer(trust.app, name="trust")
app.add_typer(registry.app, name="registry")
app.add_typer(saga.app, name="saga")
app.add_typer(mesh.app, name="mesh")
app.add_typer(federation.app, name="federation")
# The web server (the "dashboard" extra) is imported only when the dashboard starts.
app.add_typer(dashboard.app, name="dashboard")
app.command("quarantine")(quarantine.quarantine)
app.command("release")(quarantine.release)


@app.command("demo")
def demo(
    nats: Annotated[
        str | None,
        nats_option(help="Run over a real nats-server at this URL instead of in memory."),
    ] = None,
    saga: Annotated[
        bool,
        typer.Option(
            "--saga/--no-saga",
            help="Also run the order saga (a declining and a quarantined payment agent).",
        ),
    ] = True,
    governance: Annotated[
        bool,
        typer.Option(
            "--governance/--no-governance",
            help="Also run the governance act (signed cards, trust rings, drift, policy).",
        ),
    ] = True,
) -> None:
    """A small agent team joins, handshakes and works; an impostor is caught."""
    import asyncio

    from agentmesh.demo import print_next_steps, run_demo

    report = asyncio.run(run_demo(nats, governance=governance))
    caught = sum(report.rejections.values())
    if caught < report.impostor_attempts or len(report.replies) != 3:
        raise typer.Exit(1)
    if report.governance is not None and not report.governance.ok:
        raise typer.Exit(1)
    if saga:
        from agentmesh.demo.order_saga import run_order_showcase

        if not asyncio.run(run_order_showcase(nats)).ok:
            raise typer.Exit(1)
    print_next_steps()


def _add_plugins() -> None:
    """Command groups that packages above agentmesh register (entry points "agentmesh.cli")."""
    for entry in importlib.metadata.entry_points(group="agentmesh.cli"):
        try:
            group = entry.load()
        except ImportError as exc:  # an optional extra that is not installed
            logging.getLogger(__name__).debug("agentmesh %s unavailable: %s", entry.name, exc)
            continue
        app.add_typer(group, name=entry.name)


_add_plugins()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
