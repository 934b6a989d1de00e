"""Where a passphrase comes from: an environment variable or an interactive prompt."""

from __future__ import annotations

import os

import typer


def obtain_passphrase(env_var: str | None, *, confirm: bool) -> str:
    """Read the passphrase from ``env_var`` if named, else prompt (twice if ``confirm``).

    Raises:
        typer.BadParameter: the variable is unset or empty.
    """
    if env_var:
        value = os.environ.get(env_var)
        if not value:
            raise typer.BadParameter(
                f"environment variable {env_var} is not set or empty; export it first",
                param_hint="--passphrase-env",
            )
        return value
    text: str = typer.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
    return text
