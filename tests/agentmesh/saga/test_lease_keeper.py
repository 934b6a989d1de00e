"""The lease keeper stops with its saga even when a store call loses its cancellation.

On Python 3.11 a NATS KV write whose reply lands in the same loop iteration as the
cancellation of its task returns normally (``asyncio.wait_for``, CPython gh-86296).
The keeper renewing the lease was cancelled that way when its saga ended, went on
renewing, and the saga's task group waited for it forever: the coordinator stayed
busy and never exited (the hang of the saga chaos test). The transport now gives
such cancellations back; the keeper does not rely on it.
"""

from __future__ import annotations

import asyncio
import contextlib

from agentmesh.saga import CoordinatorConfig, SagaCoordinator, SagaLog, SagaStatus
from agentmesh.saga.log import Lease
from tests.agentmesh.saga.team import order_saga, standard_team
from tests.conftest import TransportFactory


class CancellationLosingLog(SagaLog):
    """A saga log whose lease renewal ends normally when cancelled (the lost-cancel order)."""

    renewals = 0

    async def renew(self, lease: Lease, *, ttl: float) -> Lease:
        self.renewals += 1
        if self.renewals == 1:
            # In flight until cancelled; the reply "lands" together with the cancellation.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        return await super().renew(lease, ttl=ttl)


async def test_keeper_stops_when_a_renewal_loses_the_cancellation(uid: str) -> None:
    team = await standard_team(TransportFactory("memory", None), uid)
    team.delay["charge"] = 0.3  # the saga outlives the first renewal (after lease_ttl / 3)
    try:
        node = await team.node("coordinator")
        log = await CancellationLosingLog.open(node.transport, mesh=uid)
        assert isinstance(log, CancellationLosingLog)
        coordinator = SagaCoordinator(
            node,
            log,
            finder=team.directory,
            config=CoordinatorConfig(lease_ttl=0.15, recovery_interval=0.1),
        )
        async with asyncio.timeout(5):  # without the fix: the saga never returns
            state = await coordinator.run(order_saga(), saga_id="k1")
        assert state.status is SagaStatus.COMPLETED
        assert log.renewals == 1  # the keeper stopped instead of renewing on
        assert not coordinator.busy
    finally:
        await team.aclose()
