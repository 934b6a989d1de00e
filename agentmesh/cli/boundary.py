"""The CLI's one error boundary: whatever a command raises becomes one line and an exit code.

:class:`GuardedGroup` is the root command's class, so both the ``agentmesh``
entry point and in-process runners (``typer.testing.CliRunner``) go through it.
It runs the command tree in click's non-standalone mode, so usage errors, aborts
and every exception reach :func:`agentmesh.cli.failures.explain` instead of
click's boxed help panel or Python's traceback. ``--debug`` (or
``AGENTMESH_DEBUG=1``) prints the traceback before the line.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from typer._click.exceptions import NoArgsIsHelpError
from typer.core import TyperGroup

from agentmesh.cli.failures import explain
from agentmesh.cli.logs import cli_logging

DEBUG_ENV = "AGENTMESH_DEBUG"
DEBUG_FLAG = "--debug"


def debug_requested(args: Sequence[str], environ: dict[str, str] | None = None) -> bool:
    """``--debug`` before the command name, or ``AGENTMESH_DEBUG`` set to a true value."""
    value = (os.environ if environ is None else environ).get(DEBUG_ENV, "")
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    for arg in args:
        if not arg.startswith("-"):
            return False  # the root takes flags only: this is the command's name
        if arg == DEBUG_FLAG:
            return True
    return False


def report(exc: BaseException, *, debug: bool) -> int:
    """Print ``exc`` as one line on stderr (its traceback first with ``debug``); its exit code."""
    if isinstance(exc, NoArgsIsHelpError):  # "agentmesh node": the group's help, as click does
        exc.show()
        return exc.exit_code
    failure = explain(exc)
    if debug:
        # Commands re-raise their own failure "from None": show what caused it anyway.
        exc.__suppress_context__ = False
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(failure.line() + "\n")
    sys.stderr.flush()
    return failure.exit_code


class GuardedGroup(TyperGroup):
    """The root group: runs a command and turns any failure into one line and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = debug_requested(argv)
        with cli_logging(debug=debug):
            try:
                result = super().main(
                    argv,
                    prog_name or "agentmesh",
                    complete_var,
                    standalone_mode=False,
                    windows_expand_args=windows_expand_args,
                    **extra,
                )
                code = result if isinstance(result, int) else 0
            except SystemExit:
                raise
            except BaseException as exc:
                code = report(exc, debug=debug)
        if standalone_mode:
            sys.exit(code)
        return code


__all__ = ["DEBUG_ENV", "DEBUG_FLAG", "GuardedGroup", "debug_requested", "report"]
