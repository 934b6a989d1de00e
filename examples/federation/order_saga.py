"""An order saga across two organizations, each on its own secured nats-server.

acme's coordinator buys from globex: globex exports a warehouse and three payment
agents to acme in a signed agreement; each organization keeps its broker, keys,
policy and trust, and a leaf-node link carries only what the agreement exports.

1. ``order-declined``: the charge is pinned to globex's flaky payment agent, which
   declines; the reservation at globex's warehouse is released (compensated).
2. ``order-handoff``: globex's authority quarantines the payment agent that is
   charging; acme honours its partner's order within the link's bounds, abandons
   the step and hands it to globex's other payment agent; the saga completes.

Starts two nats-servers, two stewards and six agent processes on loopback and
stops them all. Needs ``nats-server`` (``make test`` installs it).

    python examples/federation/order_saga.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentmesh.broker.subject_map import Role
from agentmesh.federation.agreement import Export
from agentmesh.federation.lab_processes import Child, LabProcesses

PAYMENT_OPS = ("payment.charge", "payment.refund")
console = Console(emoji=False, highlight=False)


def order(charge_agent: str | None = None) -> dict[str, Any]:
    charge: dict[str, Any] = {
        "name": "charge",
        "request": {"action": "payment.charge", "params": {"amount_cents": 4200}},
        "compensation": {"action": "payment.refund"},
        "timeout_s": 6.0,
        "required_ring": 2,
    }
    if charge_agent is not None:
        charge["agent"] = charge_agent
    else:
        charge["capability"] = "payment"
    return {
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


async def set_up(world: LabProcesses) -> Child:
    lab = world.lab
    lab.add_org("acme")
    lab.add_org("globex")

    def payments(name: str, discoverable: bool = True) -> Export:
        return Export(
            agent=world.did(name),
            operations=PAYMENT_OPS,
            capabilities=("payment",) if discoverable else (),
        )

    agreement = lab.agree(
        "acme",
        "globex",
        exports={
            "globex": [
                Export(
                    agent=world.did("warehouse"),
                    operations=("inventory.*",),
                    capabilities=("inventory",),
                ),
                payments("flaky-pay", discoverable=False),
                payments("pay-a"),
                payments("pay-b"),
            ]
        },
    )
    lab.link(agreement, listener="acme", connector="globex")
    console.print(f"[bold]agreement[/] {agreement.id} v{agreement.version} signed by both")
    files = {
        name: await world.membership_file(org, name)
        for org, name in (
            ("acme", "coordinator"),
            ("acme", "courier"),
            ("globex", "warehouse"),
            ("globex", "flaky-pay"),
            ("globex", "pay-a"),
            ("globex", "pay-b"),
        )
    }
    await lab.start()
    console.print("servers: acme listens for the leaf link, globex connects")
    await world.steward("acme", resync=2.0)
    await world.steward("globex", resync=2.0)
    pay = ("--capability", "payment", "--actions", ",".join(PAYMENT_OPS))
    slow = ("--slow", "payment.charge=1.5")
    await world.agent(
        "globex",
        "warehouse",
        membership=files["warehouse"],
        options=("--capability", "inventory", "--actions", "inventory.reserve,inventory.release"),
    )
    await world.agent(
        "globex",
        "flaky-pay",
        membership=files["flaky-pay"],
        options=(*pay, "--fail", "payment.charge"),
    )
    await world.agent("globex", "pay-a", membership=files["pay-a"], options=(*pay, *slow))
    await world.agent("globex", "pay-b", membership=files["pay-b"], options=(*pay, *slow))
    await world.agent(
        "acme",
        "courier",
        membership=files["courier"],
        options=("--capability", "shipping", "--actions", "ship"),
    )
    coordinator = await world.agent(
        "acme",
        "coordinator",
        membership=files["coordinator"],
        options=("--coordinator",),
        role=Role.COORDINATOR,
    )
    for name in ("warehouse", "flaky-pay", "pay-a", "pay-b"):
        seen = await coordinator.ask("wait_card", did=world.did(name), within=30)
        if not seen["seen"]:
            raise RuntimeError(f"acme never received globex's card of {name}")
    return coordinator


def table(world: LabProcesses, saga_id: str, answer: dict[str, Any]) -> Table:
    names = {child.did: name for name, child in world.agents.items()}
    view = Table(title=f"saga {saga_id}: {answer.get('status')}")
    for column in ("step", "status", "agent", "tried before", "compensation"):
        view.add_column(column)
    for step, info in answer.get("steps", {}).items():
        agent = names.get(info["agent"] or "", "-")
        tried = ", ".join(names.get(d, d[-8:]) for d in info["tried"] if names.get(d) != agent)
        undone = "-" if answer.get("status") == "completed" else info["compensation"]
        view.add_row(step, info["status"], agent, tried, undone)
    return view


async def run(root: Path) -> bool:
    world = LabProcesses(root)
    try:
        coordinator = await set_up(world)
        declined = await coordinator.ask(
            "saga", definition=order(world.did("flaky-pay")), saga_id="order-declined", timeout=60
        )
        console.print(table(world, "order-declined", declined))
        running = asyncio.create_task(
            coordinator.ask("saga", definition=order(), saga_id="order-handoff", timeout=90)
        )
        charging = await _first_charge(world)
        console.print(f"[red]globex quarantines {charging}[/] while it charges acme's order")
        await world.org("globex").quarantine(world.did(charging), "anomalous refunds")
        handoff = await running
        console.print(table(world, "order-handoff", handoff))
        ok = declined.get("status") == "compensated" and handoff.get("status") == "completed"
        console.print(f"order-declined: {declined.get('status')}")
        console.print(f"order-handoff: {handoff.get('status')}")
        return ok
    finally:
        await world.close()


async def _first_charge(world: LabProcesses) -> str:
    """The name of the payment agent that starts charging first."""

    async def watch(name: str) -> str:
        child = world.agents[name]
        while True:
            event = await child.next_event("action", timeout=60)
            if event["action"] == "payment.charge" and event["kind"] == "forward":
                return name

    tasks = [asyncio.create_task(watch(name)) for name in ("pay-a", "pay-b")]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return done.pop().result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the organizations' files in DIR")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return 0 if asyncio.run(run(args.keep)) else 1
    with tempfile.TemporaryDirectory(prefix="agentmesh-federation-") as root:
        return 0 if asyncio.run(run(Path(root))) else 1


if __name__ == "__main__":
    sys.exit(main())
