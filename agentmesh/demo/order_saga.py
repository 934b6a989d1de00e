"""The order saga showcase (``examples/order_saga.py`` and ``agentmesh demo``).

reserve → charge → ship, run twice by a :class:`SagaCoordinator`:

1. ``order-declined``: the charge is pinned to a payment agent that declines; the
   reservation is compensated (released) and the saga ends ``compensated``.
2. ``order-handoff``: the first-ranked payment agent is quarantined by a signed
   kill-switch order *while it is charging*; the coordinator abandons it in flight,
   hands the step to the other payment agent, and the saga completes.

Runs on the embedded transport or over NATS (``nats_url``), each agent on its own
connection.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from agentmesh.directory.revocations import RevocationList
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.policy.killswitch import KillSwitch
from agentmesh.saga.adapters import KillSwitchAlarm
from agentmesh.saga.coordinator import SagaCoordinator
from agentmesh.saga.definition import SagaDefinition
from agentmesh.saga.errors import StepActionFailed
from agentmesh.saga.executor import Action, StepCall, StepExecutor
from agentmesh.saga.guard import EligibilityGuard, StaticDirectory
from agentmesh.saga.log import SagaLog
from agentmesh.saga.state import SagaState
from agentmesh.saga.timeline import timeline_table
from agentmesh.transport.factory import make_transport
from agentmesh.transport.memory import InMemoryBus
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities

MESH = "ordersaga"


@dataclass
class ShowcaseReport:
    """Final states and what each agent really did."""

    states: dict[str, SagaState] = field(default_factory=dict)
    effects: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        declined = self.states.get("order-declined")
        handoff = self.states.get("order-handoff")
        return (
            declined is not None
            and declined.status.value == "compensated"
            and handoff is not None
            and handoff.status.value == "completed"
        )


def order_definition(*, payment_agent: str | None = None) -> SagaDefinition:
    charge: dict[str, Any] = {
        "name": "charge",
        "request": {"action": "payment.charge", "params": {"amount_cents": 4200}},
        "compensation": {"action": "payment.refund"},
        "timeout_s": 5.0,
        "required_ring": 2,
    }
    if payment_agent:
        charge["agent"] = payment_agent
    else:
        charge["capability"] = "payment"
    return SagaDefinition.load(
        {
            "name": "order",
            "steps": [
                {
                    "name": "reserve",
                    "capability": "inventory",
                    "request": {"action": "inventory.reserve", "params": {"sku": "A-17"}},
                    "compensation": {"action": "inventory.release"},
                },
                charge,
                {"name": "ship", "capability": "shipping", "request": {"action": "ship"}},
            ],
        }
    )


async def run_order_showcase(
    nats_url: str | None = None, *, console: Console | None = None, mesh: str = MESH
) -> ShowcaseReport:
    """Run both sagas and narrate; returns a :class:`ShowcaseReport`."""
    out = console or Console(emoji=False, highlight=False)
    report = ShowcaseReport()
    bus = InMemoryBus() if nats_url is None else None
    out.rule("[bold]saga[/]: reserve → charge → ship, with a declining and a quarantined agent")
    roster = ("coordinator", "warehouse", "flaky-pay", "pay-a", "pay-b", "courier")
    nodes = {
        name: MeshNode(
            AgentIdentity.generate(),
            make_transport(nats_url, name=name, bus=bus),
            config=NodeConfig(mesh=mesh),
        )
        for name in roster
    }
    for node in nodes.values():
        await node.start()
    names = {node.did: name for name, node in nodes.items()}
    run = uuid.uuid4().hex[:8]  # saga ids are unique per run (the log is durable)
    charging = asyncio.Event()
    slow = {"pay-a": 2.0}

    def action(agent: str, name: str) -> Action:
        async def run(call: StepCall) -> dict[str, Any]:
            if agent == "flaky-pay" and name == "payment.charge":
                raise StepActionFailed("card declined", reason_code="card_declined")
            if name == "payment.charge":
                charging.set()
            await asyncio.sleep(slow.get(agent, 0.0))
            report.effects.append(f"{agent}: {name} ({call.saga_id})")
            return {"by": agent, "ref": f"{name}:{call.saga_id}"}

        return run

    roles = {
        "warehouse": ("inventory.reserve", "inventory.release"),
        "flaky-pay": ("payment.charge", "payment.refund"),
        "pay-a": ("payment.charge", "payment.refund"),
        "pay-b": ("payment.charge", "payment.refund"),
        "courier": ("ship",),
    }
    for agent, actions in roles.items():
        await StepExecutor.attach(nodes[agent], actions={a: action(agent, a) for a in actions})
    directory = StaticDirectory(
        {
            "inventory": [nodes["warehouse"].did],
            "payment": [nodes["pay-a"].did, nodes["pay-b"].did],  # pay-a ranked first
            "shipping": [nodes["courier"].did],
        }
    )
    authority = AgentIdentity.generate()
    coordinator_node = nodes["coordinator"]
    revocations = RevocationList(
        coordinator_node.transport,
        mesh=mesh,
        authorities=RevocationAuthorities(mesh=frozenset({authority.did})),
    )
    await revocations.start()
    switch = KillSwitch(coordinator_node.transport, revocations, mesh=mesh)
    await switch.start()
    try:
        coordinator = SagaCoordinator(
            coordinator_node,
            await SagaLog.open(coordinator_node.transport, mesh=mesh),
            finder=directory,
            guard=EligibilityGuard(blocked=[switch]),
            alarms=[KillSwitchAlarm(switch)],
        )
        declined = await coordinator.run(
            order_definition(payment_agent=nodes["flaky-pay"].did),
            saga_id=f"order-declined-{run}",
        )
        report.states["order-declined"] = declined
        out.print(timeline_table(declined, names=names))

        running = asyncio.create_task(
            coordinator.run(order_definition(), saga_id=f"order-handoff-{run}")
        )
        await asyncio.wait_for(charging.wait(), 10)
        out.print("[red]kill switch[/]: pay-a is quarantined while it is charging")
        await switch.quarantine(authority, nodes["pay-a"].did, "anomalous refunds")
        handoff = await running
        report.states["order-handoff"] = handoff
        out.print(timeline_table(handoff, names=names))
        for state in report.states.values():
            out.print(f"[bold]{state.saga_id}[/]: {state.status.value}")
    finally:
        await switch.aclose()
        await revocations.aclose()
        for node in nodes.values():
            await node.aclose()
    return report


__all__ = ["ShowcaseReport", "order_definition", "run_order_showcase"]
