"""What a failed command tells its user: one line, what is wrong and what to do, an exit code.

Every command either succeeds or ends in a :class:`CommandFailed`, raised by the
command itself (it knows the file or option at fault) or made by :func:`explain`
from whatever escaped it (the CLI's error boundary, :mod:`agentmesh.cli.boundary`).

Exit codes (also in ``agentmesh --help`` and docs/cli.md):

====  ==================================================================================
0     success; a long-running command (``node run``, ``dashboard``, ``mesh warden``,
      ``federation steward``) stopped by SIGTERM or SIGINT
1     the command ran and failed: nats-server unreachable or without JetStream, the
      broker or the mesh refused, a check found problems, an unexpected error
2     bad usage or bad input: an unknown, missing or invalid option or URL; a missing,
      unreadable, non-UTF-8 or garbage input file; an identity that does not open
3     ``registry show``: the agent has no live card
130   interrupted (Ctrl-C) in a one-shot command
====  ==================================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from typer import Abort
from typer._click.exceptions import ClickException, UsageError

from agentmesh.errors import (
    AccessRevoked,
    AuthenticationFailed,
    NotConnected,
    PermissionDenied,
    TransportError,
)
from agentmesh.policy.errors import PolicyLoadError
from iatp.errors import AgentMeshError, KeystoreError

EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

EXIT_CODES_HELP: Final = (
    "Exit codes: 0 ok (also node run, dashboard, warden and steward stopped by SIGTERM or "
    "SIGINT); 1 failed (nats-server unreachable or without JetStream, refused, check found "
    "problems, unexpected error); 2 bad usage or input (option, URL, missing, unreadable, "
    "non-UTF-8 or garbage file, identity that does not open); 3 registry show: no live "
    "card; 130 interrupted. --debug (or AGENTMESH_DEBUG=1) shows the traceback."
)

DEBUG_HINT: Final = "run with --debug for the traceback"
NATS_HINT: Final = "is nats-server running there? Start it (nats-server -js) or fix --nats"
JETSTREAM_HINT: Final = "start nats-server with JetStream (nats-server -js)"


class CommandFailed(AgentMeshError, ClickException):
    """A command stopped for a reason its user can act on.

    Also a click exception, so that a sub-application run on its own (without the
    root's boundary, e.g. ``CliRunner().invoke(simulations.cli.app, ...)``) still
    prints it and exits with its code.

    Attributes:
        what: What is wrong (names the file, option or server at fault).
        todo: What to do about it ("" when there is nothing to add).
        exit_code: The process exit code (:data:`EXIT_FAILED` or :data:`EXIT_USAGE`).
        reason: The stable code of the underlying error, if any ("saga_not_found").
    """

    code = "command_failed"

    def __init__(
        self, what: str, todo: str = "", *, exit_code: int = EXIT_FAILED, reason: str = ""
    ) -> None:
        ClickException.__init__(self, what)
        self.what = what
        self.todo = todo
        self.exit_code = exit_code
        self.reason = reason

    def format_message(self) -> str:
        return self.line().removeprefix("agentmesh: ")

    def line(self) -> str:
        """The one line printed on stderr: ``agentmesh: error (REASON): WHAT — TODO``."""
        head = f"agentmesh: error ({self.reason}):" if self.reason else "agentmesh: error:"
        text = f"{head} {self.what}" + (f" — {self.todo}" if self.todo else "")
        return " ".join(text.split())  # messages of other libraries may hold newlines


def usage(what: str, todo: str = "") -> CommandFailed:
    """A bad option, argument or input file (exit 2)."""
    return CommandFailed(what, todo, exit_code=EXIT_USAGE)


@contextlib.contextmanager
def reading(path: Path, what: str = "") -> Iterator[None]:
    """Turn a missing, unreadable or non-UTF-8 ``path`` into a usage failure naming it.

    ``what`` says which input it is (``"--policy"``, ``"audit log"``).
    """
    name = f"{what} {path}" if what else str(path)
    try:
        yield
    except UnicodeDecodeError as exc:
        raise usage(
            f"{name} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            "give the right file, saved as UTF-8",
        ) from None
    except FileNotFoundError:
        raise usage(f"{name} does not exist", "check the path") from None
    except OSError as exc:
        raise usage(
            f"cannot read {name}: {exc.strerror or exc}", "check the path and its permissions"
        ) from None


def failed(exc: BaseException, todo: str = "") -> CommandFailed:
    """:func:`explain`, with the command's own advice (``todo``) unless the network failed."""
    failure = explain(exc)
    if not todo or isinstance(exc, TransportError) or failure is exc:
        return failure
    return CommandFailed(failure.what, todo, exit_code=failure.exit_code, reason=failure.reason)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def lacks_jetstream(exc: BaseException) -> bool:
    """The server answered, but nothing serves its JetStream API (started without -js).

    The transport maps nats-py's ServiceUnavailableError to a plain StreamError;
    its name survives in the cause chain and in the message.
    """
    return any(
        type(e).__name__ == "ServiceUnavailableError" or "ServiceUnavailableError" in str(e)
        for e in _chain(exc)
    )


def _transport(exc: TransportError) -> CommandFailed:
    if isinstance(exc, AuthenticationFailed):
        todo = "check --jwt ('agentmesh mesh add-agent' issues it) and --identity"
    elif isinstance(exc, AccessRevoked | PermissionDenied):
        todo = "the broker refused this identity: ask the mesh authority (docs/broker.md)"
    elif lacks_jetstream(exc):
        return CommandFailed(
            "the nats-server has no JetStream (it was started without -js)",
            JETSTREAM_HINT,
            reason=exc.code,
        )
    elif isinstance(exc, NotConnected):
        return CommandFailed(f"cannot reach nats-server: {exc}", NATS_HINT, reason=exc.code)
    else:
        todo = "check that nats-server is running with -js at --nats"
    return CommandFailed(str(exc), todo, reason=exc.code)


def explain(exc: BaseException) -> CommandFailed:
    """The one-line failure for ``exc``, whatever escaped a command.

    Known failures get their own words and exit code; anything else is an
    unexpected error (exit 1) that points at ``--debug``.
    """
    if isinstance(exc, CommandFailed):
        return exc
    if isinstance(exc, UsageError):
        where = exc.ctx.command_path if exc.ctx is not None else "agentmesh"
        return usage(exc.format_message(), f"see '{where} --help'")
    if isinstance(exc, ClickException):
        return CommandFailed(exc.format_message(), exit_code=exc.exit_code)
    if isinstance(exc, Abort):
        return CommandFailed(
            "aborted: a prompt got no answer",
            "run it in a terminal, or pass --passphrase-env VAR",
        )
    if isinstance(exc, KeyboardInterrupt):
        return CommandFailed("interrupted", exit_code=EXIT_INTERRUPTED)
    if isinstance(exc, KeystoreError):
        return usage(
            str(exc),
            "check the identity file and its passphrase ('agentmesh identity show FILE --verify')",
        )
    if isinstance(exc, PolicyLoadError):
        return usage(str(exc), "fix the file (see 'agentmesh policy check' and docs/policy.md)")
    if isinstance(exc, TransportError):
        return _transport(exc)
    if isinstance(exc, AgentMeshError):
        return CommandFailed(str(exc), reason=exc.code)
    if isinstance(exc, UnicodeDecodeError):
        return usage(
            f"an input file is not UTF-8 text ({exc.reason} at byte {exc.start})",
            "save it as UTF-8",
        )
    if isinstance(exc, OSError) and exc.filename is not None:
        return usage(f"{exc.filename}: {exc.strerror or exc}", "check the path and its permissions")
    if isinstance(exc, TimeoutError):
        return CommandFailed("timed out waiting for nats-server", NATS_HINT)
    if isinstance(exc, OSError):
        return CommandFailed(f"network error: {exc}", NATS_HINT)
    return CommandFailed(f"unexpected {type(exc).__name__}: {exc}", DEBUG_HINT)


__all__ = [
    "DEBUG_HINT",
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "JETSTREAM_HINT",
    "NATS_HINT",
    "CommandFailed",
    "explain",
    "failed",
    "lacks_jetstream",
    "reading",
    "usage",
]
