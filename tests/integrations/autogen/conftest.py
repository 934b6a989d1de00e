"""Runtimes for the AutoGen adapter's tests, on the in-memory bus and on a real nats-server.

``runtimes`` builds :class:`MeshAgentRuntime` s of one mesh (unique per test:
the nats-server is shared by the session) on connected transports from the
``transport_factory`` fixture (parametrized ``memory`` / ``nats``), each with its
own connection and identity, and closes them after the test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentmesh.integrations.autogen import Guards, MeshAgentRuntime, MeshRuntimeConfig, open_guards
from iatp.identity import AgentIdentity
from tests.conftest import TransportFactory


class Runtimes:
    def __init__(self, factory: TransportFactory, mesh: str, stack: contextlib.AsyncExitStack):
        self.factory = factory
        self.mesh = mesh
        self.stack = stack
        self.config = MeshRuntimeConfig(mesh=mesh, resolve_timeout=2.0, request_timeout=10.0)

    async def guards(self, identity: AgentIdentity, **options: Any) -> Guards:
        transport = await self.factory.new("guards")
        return await self.stack.enter_async_context(
            open_guards(transport, identity, mesh=self.mesh, **options)
        )

    async def new(
        self,
        *,
        identity: AgentIdentity | None = None,
        guards: Guards | None = None,
        config: MeshRuntimeConfig | None = None,
    ) -> MeshAgentRuntime:
        transport = await self.factory.new("runtime")
        runtime = MeshAgentRuntime(
            transport, identity=identity, config=config or self.config, guards=guards
        )
        return await self.stack.enter_async_context(runtime)


@pytest.fixture
async def runtimes(transport_factory: TransportFactory, uid: str) -> AsyncIterator[Runtimes]:
    async with contextlib.AsyncExitStack() as stack:
        yield Runtimes(transport_factory, f"ag{uid}", stack)
