"""Errors of the broker wing (nkeys, NATS JWTs, mesh security configuration)::

    AgentMeshError
    └── MeshError
        └── BrokerError                    code "broker_error"
            ├── InvalidNkey                code "invalid_nkey"
            ├── InvalidJWT                 code "invalid_jwt"
            ├── MeshSecurityError          code "mesh_security_config"
            └── ClaimsUpdateFailed         code "claims_update_failed"

What the server refuses at run time (bad credentials, a permissions violation, a
revoked user) is a transport error, raised by the NATS transport: see
:class:`agentmesh.errors.AuthenticationFailed`,
:class:`agentmesh.errors.PermissionDenied` and :class:`agentmesh.errors.AccessRevoked`.
"""

from __future__ import annotations

from agentmesh.errors import MeshError


class BrokerError(MeshError):
    """A broker credential or configuration is wrong."""

    code = "broker_error"


class InvalidNkey(BrokerError):
    """A string is not a well-formed nkey (base32, CRC, role prefix)."""

    code = "invalid_nkey"


class InvalidJWT(BrokerError):
    """A NATS JWT is malformed, badly signed, expired or issued by the wrong key."""

    code = "invalid_jwt"


class MeshSecurityError(BrokerError):
    """A mesh security directory (``agentmesh mesh init``) is missing or inconsistent."""

    code = "mesh_security_config"


class ClaimsUpdateFailed(BrokerError):
    """nats-server did not accept an account JWT update (``detail`` is its answer)."""

    code = "claims_update_failed"


__all__ = ["BrokerError", "ClaimsUpdateFailed", "InvalidJWT", "InvalidNkey", "MeshSecurityError"]
