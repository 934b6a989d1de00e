"""``agentmesh dashboard --demo``'s mesh: everything the page has panels for happens."""

from __future__ import annotations

from typing import Any

from agentmesh.dashboard.demo import ROSTER, DemoMesh, DemoScript
from agentmesh.dashboard.monitor import MeshMonitor
from agentmesh.dashboard.operations import OperationGate
from agentmesh.transport.memory import InMemoryBus, InMemoryTransport
from tests.dashboard.conftest import wait_until

FAST = DemoScript(
    tick=0.05,
    status_interval=0.2,
    honest_rounds=4,
    bad_rounds=14,
    rogue_quarantined_at=8,
    first_sagas=(1, 3),
    saga_every=1000,
)


def named(state: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in state["agents"] if a["name"] == name)


async def test_the_demo_fills_every_panel() -> None:
    bus = InMemoryBus()
    demo = DemoMesh(bus, script=FAST)
    monitor = MeshMonitor(
        InMemoryTransport(bus, name="dashboard"),
        mesh=demo.mesh,
        authorities=demo.authorities,
        pre_trusted=(demo.anchor,),
        mode="demo",
        refresh_interval=0.1,
        saga_interval=0.2,
    )
    async with monitor:
        gate = OperationGate(monitor.apply, demo.authorities, known=monitor.knows)
        demo.submit = gate.submit
        async with demo:

            def ready() -> bool:
                state = monitor.snapshot()
                codes = {r["code"] for r in state["refusals"]}
                sagas = {s["status"] for s in state["sagas"]}
                return (
                    len(state["agents"]) == len(ROSTER)
                    and all(a["report"] for a in state["agents"])
                    and named(state, "mallory")["status"] == "quarantined"
                    and "quarantined" in codes
                    and {"completed", "compensated"} <= sagas
                    and named(state, "researcher")["drift"] is not None
                    and bool(state["slo"])
                )

            await wait_until(ready, "the demo's story", timeout=15.0)
    state = monitor.snapshot()
    assert gate.applied == 1  # the quarantine went through the operation gate
    (quarantine,) = state["quarantines"]
    assert quarantine["name"] == "mallory"
    assert quarantine["issuer"] == demo.authority.did
    rules = {r["rule"] for r in state["refusals"] if r["code"] == "policy_denied"}
    assert "sandbox-no-payments" in rules
    compensated = next(s for s in state["sagas"] if s["status"] == "compensated")
    assert [step["status"] for step in compensated["steps"]][:2] == ["succeeded", "failed"]
    assert any(r["kind"] == "compensation.succeeded" for r in compensated["timeline"])
    assert state["trust"]["edges"]
    assert any(node["drift"] for node in state["trust"]["nodes"])
    assert state["slo"][0]["capability"] == "research.deliver"
    assert state["slo"][0]["node_name"] == "planner"
