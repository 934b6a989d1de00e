"""Resilience tests reuse the node fixtures (started nodes on both transports)."""

from tests.agentmesh.node.conftest import make_node

__all__ = ["make_node"]
