"""Errors of the federation wing::

AgentMeshError
└── MeshError
    └── FederationError                 code "federation_error"
        ├── InvalidMembership           code "membership_invalid"
        │   ├── MembershipRevoked       code "membership_revoked"
        │   └── UntrustedOrganization   code "organization_untrusted"
        ├── AgreementError              code "agreement_invalid"
        │   └── AgreementRevoked        code "agreement_revoked"
        ├── StatusListError             code "status_list_invalid"
        ├── NotExported                 code "not_exported"
        └── CeilingExceeded             code "federation_ceiling"
"""

from __future__ import annotations

from agentmesh.errors import MeshError


class FederationError(MeshError):
    """A cross-organization message, credential or agreement was refused."""

    code = "federation_error"


class InvalidMembership(FederationError):
    """A membership credential is malformed, badly signed, expired or not for this agent."""

    code = "membership_invalid"


class MembershipRevoked(InvalidMembership):
    """The issuing organization's status list revokes this membership."""

    code = "membership_revoked"


class UntrustedOrganization(InvalidMembership):
    """The credential's issuer is not an organization of any agreement in force."""

    code = "organization_untrusted"


class AgreementError(FederationError):
    """A federation agreement is malformed, unsigned, out of its validity or inconsistent."""

    code = "agreement_invalid"


class AgreementRevoked(AgreementError):
    """One of the two organizations revoked the agreement."""

    code = "agreement_revoked"


class StatusListError(FederationError):
    """A status list is malformed, not signed by its organization, or older than one seen."""

    code = "status_list_invalid"


class NotExported(FederationError):
    """The agreement does not export this agent or capability to the other organization."""

    code = "not_exported"


class CeilingExceeded(FederationError):
    """The agreement's ceiling (rate, budget, ring, tools) refuses this cross-org call."""

    code = "federation_ceiling"


__all__ = [
    "AgreementError",
    "AgreementRevoked",
    "CeilingExceeded",
    "FederationError",
    "InvalidMembership",
    "MembershipRevoked",
    "NotExported",
    "StatusListError",
    "UntrustedOrganization",
]
