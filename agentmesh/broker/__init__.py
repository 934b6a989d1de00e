"""Broker-enforced identity: the mesh's NATS server checks the same keys the peers do.

An agent's Ed25519 ``did:key`` key is also its NATS nkey; the mesh authority's key
signs the NATS account and every agent's user JWT; each JWT lists exactly the
subjects that identity may use (:mod:`agentmesh.broker.subject_map`), and a
revocation or quarantine re-issues the account JWT so the server disconnects the
agent (:mod:`agentmesh.broker.revocation_sync`). ``docs/broker.md`` has the model,
the subject map and the limits.
"""

from __future__ import annotations

from agentmesh.broker.authority import MeshAuthority, init_mesh, read_jwt, role_of
from agentmesh.broker.config import Limits, MeshSecurityConfig
from agentmesh.broker.credentials import BrokerCredentials
from agentmesh.broker.errors import (
    BrokerError,
    ClaimsUpdateFailed,
    InvalidJWT,
    InvalidNkey,
    MeshSecurityError,
)
from agentmesh.broker.provision import provision
from agentmesh.broker.revocation_sync import BrokerRevoker, broker_revocations
from agentmesh.broker.session import AuthoritySession, authority_session, push_revocations
from agentmesh.broker.subject_map import Role, SubjectMap, TopicGrants, subject_map

__all__ = [
    "AuthoritySession",
    "BrokerCredentials",
    "BrokerError",
    "BrokerRevoker",
    "ClaimsUpdateFailed",
    "InvalidJWT",
    "InvalidNkey",
    "Limits",
    "MeshAuthority",
    "MeshSecurityConfig",
    "MeshSecurityError",
    "Role",
    "SubjectMap",
    "TopicGrants",
    "authority_session",
    "broker_revocations",
    "init_mesh",
    "provision",
    "push_revocations",
    "read_jwt",
    "role_of",
    "subject_map",
]
