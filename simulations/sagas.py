"""Sagas in a chaos run: a reserve → charge order across the population.

Each round an honest coordinator runs ``sagas_per_round`` sagas of two steps,
each step given to the best-ranked agent (the driver's trust-ranked choice,
contained agents excluded). A ``saga_saboteur`` accepts the reservation, fails
the charge and refuses to release what it reserved; others serve as they serve
requests. Outcomes: ``completed``, ``compensated``, ``needs-attention`` (stuck:
a compensation was refused) and ``double-executed`` (an action ran twice for one
step: it must stay 0).

* Mesh fidelity (:class:`MeshSagas`): the real :class:`SagaCoordinator` with its
  signed log on the bus, and a real :class:`StepExecutor` (idempotency records)
  on every agent's node.
* Model fidelity (:func:`model_saga`): the same decisions without a log.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from agentmesh.node.node import MeshNode
from agentmesh.saga.coordinator import CoordinatorConfig, SagaCoordinator
from agentmesh.saga.definition import SagaDefinition
from agentmesh.saga.errors import StepActionFailed
from agentmesh.saga.executor import Action, StepCall, StepExecutor
from agentmesh.saga.log import SagaLog
from agentmesh.saga.wire import StepKind
from simulations.behaviours import Context, Serve
from simulations.driver import SimAgent

SAGA_ACTIONS = ("sim.reserve", "sim.release", "sim.charge", "sim.refund")
SABOTEUR = "saga_saboteur"


def definition() -> SagaDefinition:
    return SagaDefinition.load(
        {
            "name": "sim-order",
            "steps": [
                {
                    "name": "reserve",
                    "capability": "sim",
                    "request": {"action": "sim.reserve"},
                    "compensation": {"action": "sim.release"},
                    "timeout_s": 1.0,
                },
                {
                    "name": "charge",
                    "capability": "sim",
                    "request": {"action": "sim.charge"},
                    "compensation": {"action": "sim.refund"},
                    "timeout_s": 1.0,
                },
            ],
        }
    )


def step_result(agent: SimAgent, ctx: Context, action: str, kind: StepKind) -> Serve:
    """How ``agent`` handles a saga action (forward or compensation)."""
    if agent.kind == SABOTEUR:
        if kind is StepKind.COMPENSATE or action == "sim.charge":
            return Serve.BAD  # fails the charge, refuses every compensation
        return Serve.GOOD
    if kind is StepKind.COMPENSATE:
        return Serve.GOOD
    return agent.behaviour.serve(ctx, -1)


class MeshSagas:
    """Real coordinator and step executors on the simulation's nodes."""

    def __init__(
        self,
        context: Callable[[int], Context],
        rank: Callable[[], Sequence[SimAgent]],
    ) -> None:
        self._context = context
        self._rank = rank
        self.effects: Counter[tuple[str, str, str, str]] = Counter()
        self.coordinator: SagaCoordinator | None = None
        self.outcomes: Counter[str] = Counter()
        self.step_outcomes: list[tuple[SimAgent, bool]] = []
        self._count = 0

    async def attach(self, agent: SimAgent, node: MeshNode) -> None:
        def make(action: str) -> Action:
            async def run(call: StepCall) -> dict[str, Any]:
                served = step_result(agent, self._context(agent.index), action, call.kind)
                self.step_outcomes.append((agent, served is Serve.GOOD))
                if served is Serve.SILENT:
                    await asyncio.sleep(2.0)
                if served is not Serve.GOOD:
                    raise StepActionFailed(f"{action} refused", reason_code="declined")
                self.effects[(call.saga_id, call.step, call.kind.value, agent.did)] += 1
                return {"by": agent.index}

            return run

        await StepExecutor.attach(node, actions={a: make(a) for a in SAGA_ACTIONS})

    async def start(self, node: MeshNode) -> None:
        self.coordinator = SagaCoordinator(
            node,
            await SagaLog.open(node.transport, mesh=node.config.mesh),
            finder=self,
            config=CoordinatorConfig(lease_ttl=30.0),
        )

    async def candidates(self, capability: str) -> list[str]:
        return [agent.did for agent in self._rank()[:3]]

    async def run(self, round_no: int, count: int) -> list[tuple[SimAgent, bool]]:
        """Run ``count`` sagas; returns (agent, ok) of every step action they ran."""
        assert self.coordinator is not None
        self.step_outcomes = []
        for _ in range(count):
            self._count += 1
            state = await self.coordinator.run(definition(), saga_id=f"s{round_no}-{self._count}")
            self.outcomes[state.status.value] += 1
        doubles = sum(1 for n in self.effects.values() if n > 1)
        self.outcomes["double-executed"] = doubles
        return self.step_outcomes


def model_saga(
    agents: Sequence[SimAgent], ctx: Callable[[int], Context]
) -> tuple[str, list[tuple[SimAgent, bool]]]:
    """One saga on the first two ranked agents, without a log: (status, step outcomes)."""
    steps = [("sim.reserve", "sim.release"), ("sim.charge", "sim.refund")]
    done: list[tuple[SimAgent, str]] = []
    outcomes: list[tuple[SimAgent, bool]] = []
    for agent, (forward, undo) in zip(agents, steps, strict=False):
        ok = step_result(agent, ctx(agent.index), forward, StepKind.FORWARD) is Serve.GOOD
        outcomes.append((agent, ok))
        if not ok:
            for earlier, compensation in reversed(done):
                undone = step_result(earlier, ctx(earlier.index), compensation, StepKind.COMPENSATE)
                outcomes.append((earlier, undone is Serve.GOOD))
                if undone is not Serve.GOOD:
                    return "needs-attention", outcomes
            return "compensated", outcomes
        done.append((agent, undo))
    return "completed", outcomes


__all__ = ["SAGA_ACTIONS", "MeshSagas", "definition", "model_saga", "step_result"]
