"""The adapters to the real directory and policy engine, driving a saga end to end."""

from __future__ import annotations

import asyncio

from agentmesh.directory import Directory
from agentmesh.policy.engine import CompiledPolicy, PolicyEngine
from agentmesh.policy.rings import StaticRings
from agentmesh.saga import EligibilityGuard, SagaStatus
from agentmesh.saga.adapters import DirectoryFinder, policy_step_check
from registry import Capability
from tests.agentmesh.saga.team import Team, order_saga, standard_team
from tests.conftest import TransportFactory


async def test_directory_finder_ranks_and_policy_denies(
    transport_factory: TransportFactory, uid: str
) -> None:
    team: Team = await standard_team(transport_factory, uid)
    directory = Directory(await transport_factory.new("directory"), mesh=uid)
    await directory.start()
    try:
        for name, capability in (
            ("warehouse", "inventory"),
            ("bank", "payment"),
            ("bank2", "payment"),
            ("courier", "shipping"),
        ):
            node = team.agents[name].node
            await directory.register(
                node.identity,
                display_name=name,
                capabilities=(Capability(name=capability, version="1", description=name),),
            )
        for _ in range(200):
            if len(directory.cards()) == 4:
                break
            await asyncio.sleep(0.01)
        bank2 = team.agents["bank2"].node.did
        finder = DirectoryFinder(directory, rank=lambda did: 1.0 if did == bank2 else 0.5)
        assert (await finder.candidates("payment"))[0] == bank2
        # Policy: nobody may receive payment.charge except bank (by DID).
        bank = team.agents["bank"].node.did
        engine = PolicyEngine(
            CompiledPolicy.from_data(
                {
                    "version": 1,
                    "name": "saga-test",
                    "combining": "deny-overrides",
                    "default": "allow",
                    "rules": [
                        {
                            "id": "only-bank-charges",
                            "effect": "deny",
                            "match": {"actions": ["charge"]},
                            "unless": {"peer": {"in": [bank]}},
                        }
                    ],
                }
            )
        )
        rings = StaticRings(default=2)
        guard = EligibilityGuard(rings=rings, policy=policy_step_check(engine, rings=rings))
        coordinator = await team.coordinator(guard=guard)
        coordinator.finder = finder
        state = await coordinator.run(order_saga(), saga_id="dir1")
        assert state.status is SagaStatus.COMPLETED
        # bank2 was ranked first but refused by policy, so bank charged.
        assert state.steps["charge"].result is not None
        assert state.steps["charge"].result["by"] == "bank"
    finally:
        await directory.aclose()
        await team.aclose()
