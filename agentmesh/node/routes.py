"""Routes to agents outside this mesh's subjects (another organization's, through a link).

A node addresses a peer at ``{mesh}.agent.{key}.inbox`` by default. A peer that
lives in another mesh is reached through subjects its broker link maps into this
mesh (``{mesh}.fed.{org}.{key}.inbox``, docs/federation.md); the federation wing
sets a :class:`Route` for each such peer. A route may add envelope headers to
every message sent along it (the sender's membership credential): they are
signed with the envelope like any header.

Handshakes and session frames do not cross routes: cross-organization traffic is
signed (or sealed), so that every message is evidence for both organizations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from agentmesh.node.addressing import MeshAddressing, check_name


@dataclass(frozen=True, slots=True)
class Route:
    """Where a routed peer's inbox is, and the headers every message to it carries."""

    base: str
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        check_name(self.base, "route subject")

    @property
    def inbox(self) -> str:
        return f"{self.base}.inbox"

    @property
    def sealed_inbox(self) -> str:
        return f"{self.base}.sealed"


class PeerRoutes:
    """DID -> :class:`Route`; peers without a route are on this mesh's own subjects."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def set(self, did: str, route: Route) -> None:
        """Route messages for ``did`` along ``route``.

        Raises:
            InvalidDID: ``did`` is not an Ed25519 did:key.
        """
        MeshAddressing.agent_key(did)
        self._routes[did] = route

    def remove(self, did: str) -> None:
        self._routes.pop(did, None)

    def get(self, did: str) -> Route | None:
        return self._routes.get(did)

    def __contains__(self, did: object) -> bool:
        return did in self._routes

    def __len__(self) -> int:
        return len(self._routes)


__all__ = ["PeerRoutes", "Route"]
