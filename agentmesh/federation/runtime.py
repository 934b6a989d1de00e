"""One node's part in its organization's federation: view, guard, routes, rings, ranking.

::

    async with NodeFederation(transport, identity, mesh="acme", organization=ACME_DID,
                              org="acme", membership=token, directory=directory) as fed:
        fed.install(node)            # before the directory's admission check
        cards = fed.find("quote")    # our agents and partners' exported ones, by trust
        await node.request(cards[0].did, "quote.request", b"...")

:meth:`NodeFederation.install` adds the :class:`~agentmesh.federation.guard.FederationGuard`
and keeps a route for every partner agent the view holds: requests to them go to
``{mesh}.fed.{partner org}.{agent key}.inbox`` (the link's subjects) and carry
this node's membership credential in the signed ``membership`` header.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

from agentmesh.audit import AuditSink
from agentmesh.federation.guard import FederatedRings, FederationGuard, credential_headers
from agentmesh.federation.view import FederationView
from agentmesh.node.interceptors import Stage
from agentmesh.node.node import MeshNode
from agentmesh.node.routes import Route
from agentmesh.transport.base import Transport
from iatp.clock import Clock
from iatp.identity import AgentIdentity
from registry.card import AgentCard
from trust.federated import DiscountedTrust, FederatedScore


class CardDirectory(Protocol):
    """What discovery needs of the local directory (``agentmesh.directory.Directory``)."""

    def find(self, capability: str) -> list[AgentCard]: ...

    def lookup(self, did: str, *, follow_rotation: bool = True) -> AgentCard | None: ...


def route_base(mesh: str, partner_org: str, did: str) -> str:
    """Where this mesh reaches a partner's agent through the link."""
    return f"{mesh}.fed.{partner_org}.{did.removeprefix('did:key:')}"


class NodeFederation:
    """Federation for one node (see the module docstring).

    Args:
        transport: the mesh's transport.
        identity: the node's identity.
        mesh: the mesh (this organization's ``org`` in agreements).
        organization: this organization's authority DID.
        membership: this node's membership credential (JWT-VC), sent to partners.
        directory: the local directory (discovery, and what counts as one of ours).
        local_score: local trust score of an agent (default: 0.5 for everyone).
        org_trust: this organization's trust in each partner org (name -> [0, 1]).
    """

    def __init__(
        self,
        transport: Transport,
        identity: AgentIdentity,
        *,
        mesh: str,
        organization: str,
        membership: str | None = None,
        directory: CardDirectory | None = None,
        local_score: Callable[[str], float] | None = None,
        org_trust: Mapping[str, float] | None = None,
        clock: Clock | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.mesh = mesh
        self.identity = identity
        self.organization = organization
        self.membership = membership
        self.directory = directory
        self.view = FederationView(
            transport,
            mesh=mesh,
            organization=organization,
            org=mesh,
            is_local=self._is_local,
            clock=clock,
            audit=audit,
        )
        self.guard = FederationGuard(self.view, identity.did)
        self.rings = FederatedRings(self.view)
        self.trust = DiscountedTrust(
            local_score or (lambda did: 0.5), self._organization_of, org_trust
        )
        self._node: MeshNode | None = None
        self._routed: set[str] = set()

    def _is_local(self, did: str) -> bool:
        if did == self.organization or did == self.identity.did:
            return True
        return self.directory is not None and self.directory.lookup(did) is not None

    def _organization_of(self, did: str) -> str | None:
        known = self.view.member(did)
        return None if known is None else known[0].organization_name

    async def __aenter__(self) -> NodeFederation:
        await self.view.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.view.aclose()

    def install(self, node: MeshNode) -> None:
        """Add the guard (install before admission) and keep partner routes on ``node``."""
        node.add_interceptor(self.guard, stage=Stage.REVOCATION)
        self._node = node
        self.view.add_listener(self._sync_routes)
        self._sync_routes()

    def _sync_routes(self) -> None:
        node = self._node
        if node is None:
            return
        headers = MappingProxyType(
            credential_headers(self.membership) if self.membership is not None else {}
        )
        wanted: dict[str, Route] = {}
        for partnership in self.view.partnerships():
            theirs = partnership.theirs
            for export in theirs.exports:
                wanted[export.agent] = Route(
                    route_base(self.mesh, theirs.org, export.agent), headers
                )
            if node.did == partnership.mine.authority:  # stewards talk authority to authority
                wanted[theirs.authority] = Route(
                    route_base(self.mesh, theirs.org, theirs.authority)
                )
        for did in [d for d in self._routed if d not in wanted]:
            node.routes.remove(did)
        for did, route in wanted.items():
            node.routes.set(did, route)
        self._routed = set(wanted)

    # -- discovery --------------------------------------------------------------------

    def partner_cards(self, capability: str) -> list[AgentCard]:
        """Partner agents exported with ``capability`` and not blocked by their organization."""
        out: list[AgentCard] = []
        for agent in self.view.partner_agents():
            partnership = self.view.partnership(agent.membership.organization)
            if partnership is None or self.view.is_blocked(agent.card.did):
                continue
            export = partnership.theirs.export_for(agent.card.did)
            if export is None or capability not in export.capabilities:
                continue
            if agent.card.capability(capability) is not None:
                out.append(agent.card)
        return out

    def find(self, capability: str, *, include_local: bool = True) -> list[AgentCard]:
        """Cards offering ``capability``: ours and partners' exported ones, best first.

        Ranked by :attr:`trust` (a partner's agent: its local score discounted by the
        trust in its organization).
        """
        cards = list(self.directory.find(capability)) if include_local and self.directory else []
        cards += self.partner_cards(capability)
        return sorted(cards, key=lambda card: self.trust.score(card.did), reverse=True)

    async def candidates(self, capability: str) -> list[str]:
        """DIDs offering ``capability``, best first (a saga ``SubstituteFinder``)."""
        return [card.did for card in self.find(capability)]

    def add_listener(self, callback: Callable[[str, str], None]) -> None:
        """Saga in-flight alarm: ``callback(did, reason)`` when a partner agent becomes blocked.

        (A partner quarantined it, revoked its membership, or the agreement ended.)
        """
        blocked: set[str] = set()

        def on_change() -> None:
            for agent in self.view.partner_agents_known():
                if agent not in blocked and self.view.is_blocked(agent):
                    blocked.add(agent)
                    callback(agent, "blocked by its organization")
                elif agent in blocked and not self.view.is_blocked(agent):
                    blocked.discard(agent)

        self.view.add_listener(on_change)

    def is_blocked(self, did: str) -> bool:
        """Saga block check: a partner agent its organization blocked."""
        return self.view.is_blocked(did)

    def explain(self, did: str) -> FederatedScore | None:
        """The trust discount applied to a partner's agent (None for one of ours)."""
        return self.trust.explain(did)


__all__ = ["CardDirectory", "NodeFederation", "route_base"]
