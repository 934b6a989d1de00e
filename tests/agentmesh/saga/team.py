"""A small saga team for tests: a coordinator node and agents with counted actions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.saga import (
    CoordinatorConfig,
    SagaCoordinator,
    SagaDefinition,
    SagaLog,
    StaticDirectory,
    StepActionFailed,
    StepCall,
    StepExecutor,
)
from agentmesh.saga.guard import InFlightAlarm, StepGuard
from iatp.identity import AgentIdentity
from tests.conftest import TransportFactory


@dataclass
class Ledger:
    """Every action that really ran: (agent name, action, saga, step, kind)."""

    effects: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def ran(self, action: str, saga: str | None = None) -> int:
        return sum(1 for e in self.effects if e[1] == action and (saga is None or e[2] == saga))

    def order(self, saga: str) -> list[str]:
        return [e[1] for e in self.effects if e[2] == saga]


Behaviour = Callable[[StepCall], Awaitable[None]]


@dataclass
class Agent:
    name: str
    node: MeshNode
    executor: StepExecutor


class Team:
    def __init__(self, factory: TransportFactory, mesh: str) -> None:
        self.factory = factory
        self.mesh = mesh
        self.ledger = Ledger()
        self.agents: dict[str, Agent] = {}
        self.directory = StaticDirectory()
        self.failing: set[str] = set()  # actions that fail (business failure)
        self.broken: set[str] = set()  # actions that raise (compensation failure)
        self.delay: dict[str, float] = {}
        self.nodes: list[MeshNode] = []

    async def node(self, name: str, identity: AgentIdentity | None = None) -> MeshNode:
        node = MeshNode(
            identity or AgentIdentity.generate(),
            await self.factory.new(name),
            config=NodeConfig(mesh=self.mesh),
        )
        await node.start()
        self.nodes.append(node)
        return node

    async def agent(
        self,
        name: str,
        capabilities: tuple[str, ...],
        actions: tuple[str, ...],
        identity: AgentIdentity | None = None,
    ) -> Agent:
        node = await self.node(name, identity)
        executor = await StepExecutor.attach(node)
        for action in actions:
            executor.actions[action] = self._action(name, action)
        agent = Agent(name, node, executor)
        self.agents[name] = agent
        for capability in capabilities:
            self.directory.add(capability, node.did)
        return agent

    def _action(self, agent: str, action: str) -> Callable[[StepCall], Awaitable[dict[str, Any]]]:
        async def run(call: StepCall) -> dict[str, Any]:
            if action in self.delay:
                await asyncio.sleep(self.delay[action])
            if action in self.broken:
                raise RuntimeError("compensation backend down")
            if action in self.failing:
                raise StepActionFailed(f"{action} declined", reason_code="declined")
            self.ledger.effects.append((agent, action, call.saga_id, call.step, call.kind.value))
            return {"by": agent, "action": action, "forward": call.forward_result}

        return run

    async def coordinator(
        self,
        name: str = "coordinator",
        *,
        guard: StepGuard | None = None,
        alarms: tuple[InFlightAlarm, ...] = (),
        lease_ttl: float = 5.0,
        identity: AgentIdentity | None = None,
    ) -> SagaCoordinator:
        node = await self.node(name, identity)
        log = await SagaLog.open(node.transport, mesh=self.mesh)
        return SagaCoordinator(
            node,
            log,
            finder=self.directory,
            guard=guard,
            alarms=alarms,
            config=CoordinatorConfig(lease_ttl=lease_ttl, recovery_interval=0.1),
        )

    async def aclose(self) -> None:
        for node in reversed(self.nodes):
            await node.aclose()


def order_saga(*, parallel: bool = False, timeout_s: float = 2.0) -> SagaDefinition:
    """reserve -> charge -> ship (optionally reserve and charge in parallel)."""

    def step(name: str, capability: str, action: str, undo: str | None) -> dict[str, Any]:
        return {
            "name": name,
            "capability": capability,
            "request": {"action": action, "params": {"order": 7}},
            "compensation": {"action": undo} if undo else None,
            "timeout_s": timeout_s,
            "retry": {"max_attempts": 2, "backoff_s": 0.01},
        }

    reserve = step("reserve", "inventory", "reserve", "release")
    charge = step("charge", "payment", "charge", "refund")
    ship = step("ship", "shipping", "ship", None)
    steps: list[Any] = (
        [{"parallel": [reserve, charge]}, ship] if parallel else [reserve, charge, ship]
    )
    return SagaDefinition.load({"name": "order", "steps": steps})


async def standard_team(factory: TransportFactory, mesh: str) -> Team:
    team = Team(factory, mesh)
    await team.agent("warehouse", ("inventory",), ("reserve", "release"))
    await team.agent("bank", ("payment",), ("charge", "refund"))
    await team.agent("bank2", ("payment",), ("charge", "refund"))
    await team.agent("courier", ("shipping",), ("ship",))
    return team
