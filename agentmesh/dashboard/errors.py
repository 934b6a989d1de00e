"""Errors of the dashboard: refused operations and serving problems.

Every refusal of ``POST /api/operations`` is an :class:`OperationRefused` and is
answered ``403`` with ``{"error": code, "detail": message}``::

    AgentMeshError
    └── DashboardError                   dashboard_error
        ├── RemoteBindRefused            a non-loopback --host without --allow-remote
        ├── OperationNotApplied          a valid operation the mesh did not take (503)
        └── OperationRefused             operation_refused (403)
            ├── ActionsDisabled          the server runs read-only
            ├── CrossOriginRefused       another web origin posted it
            ├── OperationUnsigned        not a signed operation document (a bare request)
            ├── OperationMalformed       the signed entry does not decode
            ├── OperationKindRefused     not a quarantine or a release
            ├── OperationSignatureInvalid  the signature does not verify (forged, altered)
            ├── OperationUnauthorized    the signer is not a mesh authority
            ├── OperationStale           issued too long ago or in the future
            └── OperationReplayed        this very order was applied already
"""

from __future__ import annotations

from iatp.errors import AgentMeshError


class DashboardError(AgentMeshError):
    """A failure of the dashboard (serving, or an operation)."""

    code = "dashboard_error"


class RemoteBindRefused(DashboardError):
    """A non-loopback address was asked for without ``--allow-remote``."""

    code = "remote_bind_refused"

    def __init__(self, host: str) -> None:
        super().__init__(
            f"{host!r} is not a loopback address: the dashboard binds 127.0.0.1 unless "
            "--allow-remote is given (put it behind an authenticating proxy)"
        )
        self.host = host


class OperationNotApplied(DashboardError):
    """A verified operation could not be broadcast or stored (the mesh is unreachable)."""

    code = "operation_not_applied"


class OperationRefused(DashboardError):
    """An operation was refused; nothing was sent. ``did``: its subject, when known."""

    code = "operation_refused"

    def __init__(self, message: str, *, did: str | None = None) -> None:
        super().__init__(message)
        self.did = did


class ActionsDisabled(OperationRefused):
    code = "actions_disabled"


class CrossOriginRefused(OperationRefused):
    code = "cross_origin"


class OperationUnsigned(OperationRefused):
    code = "operation_unsigned"


class OperationMalformed(OperationRefused):
    code = "operation_malformed"


class OperationKindRefused(OperationRefused):
    code = "operation_kind_refused"


class OperationSignatureInvalid(OperationRefused):
    code = "operation_signature_invalid"


class OperationUnauthorized(OperationRefused):
    code = "operation_unauthorized"


class OperationStale(OperationRefused):
    code = "operation_stale"


class OperationReplayed(OperationRefused):
    code = "operation_replayed"


__all__ = [
    "ActionsDisabled",
    "CrossOriginRefused",
    "DashboardError",
    "OperationKindRefused",
    "OperationMalformed",
    "OperationNotApplied",
    "OperationRefused",
    "OperationReplayed",
    "OperationSignatureInvalid",
    "OperationStale",
    "OperationUnauthorized",
    "OperationUnsigned",
    "RemoteBindRefused",
]
