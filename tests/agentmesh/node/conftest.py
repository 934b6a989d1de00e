"""Fixtures for node tests: started nodes on the parametrized transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from iatp.clock import Clock
from iatp.identity import AgentIdentity
from tests.conftest import TransportFactory

NodeMaker = Callable[..., Awaitable[MeshNode]]


@pytest.fixture
async def make_node(transport_factory: TransportFactory, uid: str) -> AsyncIterator[NodeMaker]:
    """Start nodes on one mesh (unique per test); all are closed after the test."""
    nodes: list[MeshNode] = []

    async def make(
        identity: AgentIdentity | None = None, *, clock: Clock | None = None, **config: object
    ) -> MeshNode:
        node = MeshNode(
            identity or AgentIdentity.generate(),
            await transport_factory.new("node"),
            config=NodeConfig(mesh=uid, **config),  # type: ignore[arg-type]
            clock=clock,
        )
        await node.start()
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        for node in nodes:
            await node.aclose()
