"""A caller's empty engine or audit sink is used, not replaced (both are falsy when empty)."""

from __future__ import annotations

from agentmesh.audit import MemoryAuditSink
from agentmesh.federation.view import FederationView
from agentmesh.transport import InMemoryBus, InMemoryTransport
from agentmesh.trustnet.service import MeshTrust
from iatp.identity import AgentIdentity
from trust import TrustEngine


def test_mesh_trust_keeps_the_engine_it_is_given_even_when_empty() -> None:
    engine = TrustEngine()
    assert len(engine) == 0  # falsy: `engine or TrustEngine()` would drop it
    service = MeshTrust(InMemoryTransport(InMemoryBus()), AgentIdentity.generate(), engine=engine)
    assert service.engine is engine


def test_federation_view_keeps_the_audit_sink_it_is_given_even_when_empty() -> None:
    sink = MemoryAuditSink()
    view = FederationView(
        InMemoryTransport(InMemoryBus()),
        mesh="m",
        organization="did:key:zOrg",
        org="o",
        audit=sink,
    )
    assert view.audit is sink
