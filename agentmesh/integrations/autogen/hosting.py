"""One agent type hosted by a runtime: its identity, its node, its instances.

Each agent type a runtime hosts is one mesh agent: it has its own ``did:key``
(a :class:`~agentmesh.node.node.MeshNode` of its own), a signed directory card
offering :func:`~agentmesh.integrations.autogen.wire.capability_for` the type,
and every instance of the type (one per AgentId key) runs in this process. What
an instance sends is signed with the type's key; direct messages to it arrive at
the type's inbox. An identity per *type* rather than per key matches AutoGen's
placement (a type is registered with one runtime) and a team's members (one
type each), and keeps keys (a team id, a session id) from minting identities.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from autogen_core import Agent, AgentId, AgentInstantiationContext, AgentRuntime

from agentmesh.node.node import MeshNode

Factory = Callable[[], Agent | Awaitable[Agent]]


def _unregistered_factory() -> Agent:
    raise LookupError(
        "this agent type has only registered instances: the key has none "
        "(register_agent_instance for it, or register a factory)"
    )


class AgentHost:
    """The instances of one agent type, created on first use from its factory.

    Args:
        agent_type: the AutoGen agent type.
        node: this type's mesh node (its identity signs what the instances send).
        factory: builds an instance (inside ``AgentInstantiationContext``); ``None``
            when only explicitly registered instances exist.
        expected_class: the class every instance must be (checked at creation).
    """

    def __init__(
        self,
        agent_type: str,
        node: MeshNode,
        factory: Factory | None,
        expected_class: type[Agent] | None = None,
    ) -> None:
        self.agent_type = agent_type
        self.node = node
        self.factory = factory
        self.expected_class = expected_class
        self.instances: dict[str, Agent] = {}
        self._creating: dict[str, asyncio.Future[Agent]] = {}

    @property
    def did(self) -> str:
        return self.node.did

    async def instance(self, runtime: AgentRuntime, key: str) -> Agent:
        """The instance for ``key``, created once even when messages for it race.

        Raises:
            LookupError: no factory and no registered instance for ``key``.
            TypeError: the factory built something else than ``expected_class``.
        """
        found = self.instances.get(key)
        if found is not None:
            return found
        pending = self._creating.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Agent] = asyncio.get_running_loop().create_future()
        self._creating[key] = future
        try:
            agent = await self._create(runtime, AgentId(self.agent_type, key))
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: racing waiters re-raise it, nobody else must
            raise
        finally:
            self._creating.pop(key, None)
        self.instances[key] = agent
        future.set_result(agent)
        return agent

    async def _create(self, runtime: AgentRuntime, agent_id: AgentId) -> Agent:
        factory = self.factory or _unregistered_factory
        with AgentInstantiationContext.populate_context((runtime, agent_id)):
            made: Any = factory()
            if inspect.isawaitable(made):
                made = await made
        if self.expected_class is not None and not isinstance(made, self.expected_class):
            raise TypeError(
                f"factory of {self.agent_type!r} built {type(made).__name__}, "
                f"expected {self.expected_class.__name__}"
            )
        if not isinstance(made, Agent):
            raise TypeError(f"factory of {self.agent_type!r} did not build an autogen Agent")
        return made

    def add_instance(self, key: str, agent: Agent) -> None:
        if key in self.instances:
            raise ValueError(f"agent {self.agent_type}/{key} already exists")
        self.instances[key] = agent


__all__ = ["AgentHost", "Factory"]
