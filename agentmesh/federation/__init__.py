"""Federation across organizations: each keeps its broker, keys, policy and trust.

Organizations are identities (their authority's ``did:key``); an agent's
membership is a W3C Verifiable Credential its organization issues (JWT form,
didkit to issue, PyNaCl on the hot path) and revokes through a signed status
list. Two organizations sign a bilateral :class:`FederationAgreement` (exports,
ceilings, validity); it compiles into a NATS leaf-node link between their
servers that carries only the exported agents' subjects, and every node applies
it on arrival and departure (:class:`FederationGuard`) on top of its own policy.
See ``docs/federation.md``.
"""

from agentmesh.federation.agreement import (
    AgreementRevocation,
    Ceilings,
    Export,
    FederationAgreement,
    Party,
    decode_agreement,
    revoke_agreement,
)
from agentmesh.federation.errors import (
    AgreementError,
    AgreementRevoked,
    CeilingExceeded,
    FederationError,
    InvalidMembership,
    MembershipRevoked,
    NotExported,
    StatusListError,
    UntrustedOrganization,
)
from agentmesh.federation.guard import FederatedRings, FederationGuard
from agentmesh.federation.membership import Membership, issue_membership, verify_membership
from agentmesh.federation.runtime import NodeFederation
from agentmesh.federation.status import StatusList, decode_status_list, issue_status_list
from agentmesh.federation.steward import FederationSteward
from agentmesh.federation.view import FederationView

__all__ = [
    "AgreementError",
    "AgreementRevocation",
    "AgreementRevoked",
    "CeilingExceeded",
    "Ceilings",
    "Export",
    "FederatedRings",
    "FederationAgreement",
    "FederationError",
    "FederationGuard",
    "FederationSteward",
    "FederationView",
    "InvalidMembership",
    "Membership",
    "MembershipRevoked",
    "NodeFederation",
    "NotExported",
    "Party",
    "StatusList",
    "StatusListError",
    "UntrustedOrganization",
    "decode_agreement",
    "decode_status_list",
    "issue_membership",
    "issue_status_list",
    "revoke_agreement",
    "verify_membership",
]
