"""What a finished request says about the peer, and which downstream failure a handler hit.

Two questions about every ``node.request``, answered by plain functions:

1. :func:`classify`: does the outcome count for or against the peer's circuit
   breaker? A timeout, "no responders" and a ``handler_error`` reply are failures
   of the peer. Any other signed reply, refusals included, proves the peer is
   alive and answering: a policy refusal *of us* (``quarantined``,
   ``policy_denied``, ``rate_limited``, ``unknown_agent``...) says nothing about the
   peer's health, and a ``circuit_open`` or a ``handler_error`` whose reason is a
   transport failure of the peer's own dependency (``RequestTimeout``,
   ``NoResponders``, ``RemoteError``, ``CircuitOpen``) is the peer reporting that
   something *behind* it failed: counting those would open breakers all the way
   up the chain, the cascade the breakers exist to stop. Errors raised before the
   peer was reached (a local interceptor, no session, our own connection, a
   cancelled call) are ignored.

2. :func:`attribute`: which agent a failed call blames (the *root*) and how many
   hops away it is. The breakers put the last failed call of the current task in a
   context variable (:func:`note_failure`); the cascade detector reads it when the
   handler running in that task fails (:func:`last_failure`).
"""

from __future__ import annotations

import asyncio
import enum
import re
from contextvars import ContextVar
from dataclasses import dataclass

from agentmesh.errors import CircuitOpen, NoResponders, RemoteError, RequestTimeout

FAILURE_CODES: frozenset[str] = frozenset({"handler_error", "malformed_error"})
"""Remote codes that count against the peer (unless the reason is a dependency failure)."""

DEPENDENCY_REASONS: frozenset[str] = frozenset(
    {"RequestTimeout", "NoResponders", "RemoteError", "CircuitOpen"}
)
"""``handler_error`` reasons that mean the peer's own downstream call failed."""

MAX_RELAYED_DEPTH = 64
_REASON = re.compile(r"root=(did:[A-Za-z0-9:._%-]{1,512}) depth=([0-9]{1,2})")


class CallResult(enum.Enum):
    """What a finished request says about the peer's health."""

    FAILED = "failed"
    """The peer did not answer in time, or answered that it failed."""
    ANSWERED = "answered"
    """The peer answered (a reply or a refusal): it is alive."""
    IGNORED = "ignored"
    """Says nothing about the peer (never reached it, or the caller gave up)."""


def classify(
    error: BaseException | None, *, failure_codes: frozenset[str] = FAILURE_CODES
) -> CallResult:
    """How the outcome of one request to a peer counts for the peer's breaker.

    Args:
        error: what the request raised, or None when it returned a reply.
        failure_codes: remote codes that count as the peer's failure.
    """
    if error is None:
        return CallResult.ANSWERED
    if isinstance(error, RequestTimeout | NoResponders):
        return CallResult.FAILED
    if isinstance(error, RemoteError):
        if error.remote_code in failure_codes and error.reason not in DEPENDENCY_REASONS:
            return CallResult.FAILED
        return CallResult.ANSWERED
    return CallResult.IGNORED


@dataclass(frozen=True, slots=True)
class Attribution:
    """A failed downstream call: who is blamed (``root``), how far (``depth``), and how.

    ``depth`` is 1 when ``root`` is the peer that was asked; a relayed
    ``circuit_open`` names a root further down, and only the peer's word vouches
    for it.
    """

    peer: str
    root: str
    depth: int
    code: str


def attribute(peer: str, error: BaseException) -> Attribution | None:
    """The attribution of a failed request to ``peer``, or None if it blames nobody."""
    if isinstance(error, CircuitOpen):
        return Attribution(peer, error.root, error.depth, error.code)
    if isinstance(error, RequestTimeout | NoResponders):
        return Attribution(peer, peer, 1, error.code)
    if isinstance(error, RemoteError):
        return Attribution(peer, peer, 1, error.remote_code)
    return None


def relayed_circuit_open(peer: str, error: RemoteError) -> CircuitOpen:
    """A ``circuit_open`` reply of ``peer`` as the local :class:`CircuitOpen` (one hop more).

    The reply's reason is ``root=<did> depth=<n>`` (``CircuitOpen.reply_reason``);
    anything else is taken as the peer itself being the root.
    """
    match = _REASON.fullmatch(error.reason)
    root, depth = peer, 1
    if match is not None:
        root, depth = match.group(1), min(int(match.group(2)), MAX_RELAYED_DEPTH - 1) + 1
    return CircuitOpen(
        f"{peer} answered circuit_open: the circuit to {root} is open ({depth} hops)",
        peer=peer,
        root=root,
        depth=depth,
    )


# (task, attribution) of the last failed request made in the current task. The task
# is kept so a value inherited into a new task's context copy is not mistaken for one
# of its own calls.
_last: ContextVar[tuple[asyncio.Task[object] | None, Attribution] | None] = ContextVar(
    "agentmesh_resilience_last_failure", default=None
)


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def note_failure(attribution: Attribution | None) -> None:
    """Remember (None: forget) the last failed downstream call of the current task."""
    _last.set(None if attribution is None else (_current_task(), attribution))


def last_failure() -> Attribution | None:
    """The last downstream call of the current task, if it failed (else None)."""
    noted = _last.get()
    if noted is None or noted[0] is not _current_task():
        return None
    return noted[1]


__all__ = [
    "DEPENDENCY_REASONS",
    "FAILURE_CODES",
    "Attribution",
    "CallResult",
    "attribute",
    "classify",
    "last_failure",
    "note_failure",
    "relayed_circuit_open",
]
