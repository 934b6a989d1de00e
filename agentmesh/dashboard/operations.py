"""Signed operations: the only way the dashboard changes anything on the mesh.

An operation document carries one signed quarantine or release order, exactly the
:class:`~registry.revocation.RevocationEntry` that ``agentmesh quarantine`` and the
:class:`~agentmesh.policy.killswitch.KillSwitch` sign with an authority's key::

    {"type": "agentmesh.operation", "version": 1,
     "entry": "<base64 of the canonical signed entry>",
     "summary": {"kind": ..., "subject": ..., "issuer": ..., "reason": ..., "issued_at_ms": ...}}

Only ``entry`` counts; ``summary`` is there for the human who pastes it and must
match the entry. The web page never holds a key: an operator signs the document
elsewhere (``agentmesh dashboard sign``, or :func:`sign_operation`) and hands it to
the dashboard, which checks it like every node would (:class:`OperationGate`) and
then relays it (broadcast and store), so nodes verify it once more themselves.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from agentmesh.dashboard.errors import (
    OperationKindRefused,
    OperationMalformed,
    OperationRefused,
    OperationReplayed,
    OperationSignatureInvalid,
    OperationStale,
    OperationUnauthorized,
    OperationUnsigned,
)
from iatp.clock import Clock, SystemClock
from iatp.identity import AgentIdentity
from registry.errors import (
    InvalidRevocation,
    RevocationError,
    RevocationSignatureInvalid,
    UnauthorizedRevocation,
)
from registry.revocation import (
    RevocationAuthorities,
    RevocationEntry,
    RevocationKind,
    decode_revocation,
    sign_revocation,
    verify_revocation,
)

OPERATION_TYPE = "agentmesh.operation"
OPERATION_VERSION = 1
MAX_DOCUMENT_BYTES = 16 * 1024
OPERATION_KINDS = frozenset({RevocationKind.QUARANTINED, RevocationKind.RELEASED})

Apply = Callable[[RevocationEntry], Awaitable[None]]


def sign_operation(
    issuer: AgentIdentity,
    did: str,
    kind: RevocationKind,
    reason: str,
    *,
    clock: Clock | None = None,
) -> RevocationEntry:
    """Sign a quarantine or release order about ``did`` (what the kill switch signs).

    Raises:
        OperationKindRefused: ``kind`` is neither quarantined nor released.
        InvalidRevocation: a field is invalid (DID, reason length).
    """
    if kind not in OPERATION_KINDS:
        raise OperationKindRefused(f"{kind.value!r} is not a dashboard operation", did=did)
    return sign_revocation(
        issuer,
        subject=did,
        kind=kind,
        reason=reason,
        issued_at_ms=(clock or SystemClock()).now_ms(),
        sequence=time.monotonic_ns(),
    )


def _summary(entry: RevocationEntry) -> dict[str, object]:
    return {
        "kind": entry.kind.value,
        "subject": entry.subject,
        "issuer": entry.issuer,
        "reason": entry.reason,
        "issued_at_ms": entry.issued_at_ms,
    }


def operation_document(entry: RevocationEntry) -> dict[str, object]:
    """The JSON document that carries ``entry`` to a dashboard."""
    return {
        "type": OPERATION_TYPE,
        "version": OPERATION_VERSION,
        "entry": base64.b64encode(entry.encode()).decode("ascii"),
        "summary": _summary(entry),
    }


def _entry_of(body: bytes) -> tuple[RevocationEntry, dict[str, Any]]:
    if len(body) > MAX_DOCUMENT_BYTES:
        raise OperationUnsigned(f"an operation document is at most {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise OperationUnsigned("not a JSON operation document") from None
    if (
        not isinstance(document, dict)
        or document.get("type") != OPERATION_TYPE
        or document.get("version") != OPERATION_VERSION
        or not isinstance(document.get("entry"), str)
    ):
        raise OperationUnsigned(
            "only signed operation documents are accepted "
            "(sign one with 'agentmesh dashboard sign' and an authority's identity)"
        )
    try:
        raw = base64.b64decode(document["entry"], validate=True)
        return decode_revocation(raw), document
    except (binascii.Error, ValueError, InvalidRevocation) as exc:
        raise OperationMalformed(f"the signed entry does not decode: {exc}") from None


class OperationGate:
    """Checks operation documents and applies the valid ones.

    Args:
        apply: sends a verified entry to the mesh (broadcast and store).
        authorities: mesh authority DIDs; only they may quarantine or release here.
        known: True for an entry that was already applied (a replay).
        clock: for the freshness check.
        max_age_s: how old an order may be when it arrives.
        max_skew_s: how far in the future its issue time may be.
    """

    def __init__(
        self,
        apply: Apply,
        authorities: Iterable[str],
        *,
        known: Callable[[RevocationEntry], bool] | None = None,
        clock: Clock | None = None,
        max_age_s: float = 300.0,
        max_skew_s: float = 60.0,
    ) -> None:
        self._apply = apply
        self.authorities = frozenset(authorities)
        self._known = known or (lambda entry: False)
        self.clock: Clock = clock or SystemClock()
        self.max_age_ms = int(max_age_s * 1000)
        self.max_skew_ms = int(max_skew_s * 1000)
        self.applied = 0
        self.refused: dict[str, int] = {}

    def check(self, body: bytes) -> RevocationEntry:
        """The verified entry of a document, or the reason it is refused.

        Raises:
            OperationUnsigned, OperationMalformed, OperationKindRefused,
            OperationSignatureInvalid, OperationUnauthorized, OperationStale,
            OperationReplayed.
        """
        entry, document = _entry_of(body)
        did = entry.subject
        if entry.kind not in OPERATION_KINDS:
            raise OperationKindRefused(
                f"{entry.kind.value!r} orders are not taken here (quarantine or release)", did=did
            )
        try:
            verify_revocation(entry, RevocationAuthorities(mesh=self.authorities))
        except RevocationSignatureInvalid:
            raise OperationSignatureInvalid(
                f"the order is not signed by its issuer {entry.issuer}", did=did
            ) from None
        except UnauthorizedRevocation as exc:
            raise OperationUnauthorized(str(exc), did=did) from None
        except RevocationError as exc:
            raise OperationMalformed(str(exc), did=did) from None
        if entry.issuer not in self.authorities:
            # An agent may quarantine itself on the mesh, but not through the dashboard.
            raise OperationUnauthorized(f"{entry.issuer} is not a mesh authority", did=did)
        summary = document.get("summary")
        if summary is not None and summary != _summary(entry):
            raise OperationMalformed("the summary does not match the signed entry", did=did)
        now = self.clock.now_ms()
        if now - entry.issued_at_ms > self.max_age_ms:
            raise OperationStale(
                f"the order was signed {(now - entry.issued_at_ms) // 1000} s ago "
                f"(at most {self.max_age_ms // 1000} s): sign a fresh one",
                did=did,
            )
        if entry.issued_at_ms - now > self.max_skew_ms:
            raise OperationStale("the order is dated in the future", did=did)
        if self._known(entry):
            raise OperationReplayed("this order was applied already", did=did)
        return entry

    async def submit(self, body: bytes) -> dict[str, object]:
        """Check a document and apply it; returns what was applied.

        Raises:
            OperationRefused: see :meth:`check` (nothing was sent).
            OperationNotApplied: valid, but the mesh did not take it.
        """
        try:
            entry = self.check(body)
        except OperationRefused as exc:
            self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
            raise
        await self._apply(entry)
        self.applied += 1
        return {"applied": True, "entry_id": entry.entry_id, **_summary(entry)}


__all__ = [
    "MAX_DOCUMENT_BYTES",
    "OPERATION_KINDS",
    "OPERATION_TYPE",
    "OPERATION_VERSION",
    "Apply",
    "OperationGate",
    "operation_document",
    "sign_operation",
]
