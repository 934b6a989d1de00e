"""Where the CLI's log records go: one line each on stderr, tracebacks only with --debug.

The library only logs (``logging.getLogger(__name__)``, no handlers); the CLI
installs one handler for the length of a command and removes it afterwards, so a
test that runs commands in-process keeps its own logging untouched.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

TRANSPORT_LOGGER = "agentmesh.transport.nats"
"""Logs "disconnected from NATS; reconnecting" (warning) and "reconnected to" (info)."""


class _OneLine(logging.Formatter):
    """``agentmesh: warning: text`` (info: ``agentmesh: text``), always one line.

    Without --debug a record's traceback becomes ``(ExcType: message)`` on the same line.
    """

    def __init__(self, *, debug: bool) -> None:
        super().__init__()
        self._debug = debug

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None and not self._debug:
            error = record.exc_info[1]
            text += f" ({type(error).__name__}: {error})"
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        line = "agentmesh: " + level + " ".join(text.split())
        if self._debug and record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _Stderr(logging.Handler):
    """Writes to the current ``sys.stderr`` (a test runner may have replaced it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def cli_logging(*, debug: bool) -> Iterator[None]:
    """Send warnings (everything with ``debug``) to stderr, one line each, while inside."""
    root = logging.getLogger()
    handler = _Stderr(level=logging.DEBUG if debug else logging.WARNING)
    handler.setFormatter(_OneLine(debug=debug))
    level = root.level
    root.addHandler(handler)
    if debug:
        root.setLevel(logging.DEBUG)
    transport = logging.getLogger(TRANSPORT_LOGGER)
    transport_level = transport.level
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        transport.setLevel(transport_level)


def log_reconnects() -> None:
    """Long-running commands: log every disconnect and reconnect (one line each).

    The transport logs disconnects as warnings, which are shown anyway, and
    reconnects as info records, shown from here on (other info records are not).
    """
    transport = logging.getLogger(TRANSPORT_LOGGER)
    if transport.getEffectiveLevel() > logging.INFO:
        transport.setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _Stderr) and handler.level > logging.INFO:
            handler.setLevel(logging.INFO)
            handler.addFilter(_only_transport_info)


def _only_transport_info(record: logging.LogRecord) -> bool:
    # The first "connected" is implied by the command's own output; reconnects are news.
    if record.levelno >= logging.WARNING:
        return True
    return record.name == TRANSPORT_LOGGER and "reconnected" in str(record.msg)


__all__ = ["TRANSPORT_LOGGER", "cli_logging", "log_reconnects"]
