"""Entry point of the ``agentmesh`` command."""

from __future__ import annotations

import typer

from agentmesh.cli import identity

app = typer.Typer(
    help="agentmesh: safe teams of AI agents over a signed, trust-aware mesh.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(identity.app, name="identity")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
