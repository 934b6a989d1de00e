"""Configuration of a :class:`~agentmesh.integrations.autogen.runtime.MeshAgentRuntime`."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentmesh.node.addressing import check_name
from agentmesh.node.config import NodeConfig


@dataclass(frozen=True, slots=True)
class MeshRuntimeConfig:
    """How a mesh runtime behaves.

    Attributes:
        mesh: the mesh (subject namespace) the runtime's nodes join.
        channel: the mesh topic that carries this runtime's publishes. Runtimes that
            must hear each other's publishes (a team) share it; one subscription per
            runtime keeps a publisher's order.
        node: configuration of every node the runtime starts (its ``mesh`` is replaced).
        request_timeout: seconds a ``send_message`` waits for the reply (agents may
            call LLMs and tools before answering).
        resolve_timeout: seconds to wait for a host of a remote agent type to appear
            in the directory before the message is undeliverable.
        bind_timeout: seconds a node waits, once per (DID, type), for the card of a
            sender it does not know yet.
        card_ttl_ms: lifetime of each hosted type's directory card (renewed at a third).
        max_pending: publishes kept for handoff until their primary host is done.
    """

    mesh: str = "agentmesh"
    channel: str = "autogen"
    node: NodeConfig = field(default_factory=NodeConfig)
    request_timeout: float = 60.0
    resolve_timeout: float = 10.0
    bind_timeout: float = 0.5
    card_ttl_ms: int = 30_000
    max_pending: int = 1024

    def __post_init__(self) -> None:
        check_name(self.mesh, "mesh name")
        check_name(self.channel, "channel")
        if min(self.request_timeout, self.resolve_timeout) <= 0 or self.bind_timeout < 0:
            raise ValueError("timeouts must be positive (bind_timeout may be 0)")
        if self.card_ttl_ms < 3000 or self.max_pending < 1:
            raise ValueError("card_ttl_ms must be >= 3000 and max_pending >= 1")


__all__ = ["MeshRuntimeConfig"]
