"""The durable log on both transports: signed records, injected records, leases, fencing."""

from __future__ import annotations

import pytest

from agentmesh.saga import SagaLog, SagaOwnershipLost, SagaStatus
from agentmesh.saga.records import RecordKind, SagaRecord, seal_record
from iatp.identity import AgentIdentity
from tests.agentmesh.saga.helpers import order_saga, standard_team
from tests.conftest import TransportFactory


async def test_injected_records_are_skipped_and_counted(
    transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    try:
        coordinator = await team.coordinator()
        saga_id = await coordinator.submit(order_saga(), saga_id="x1")
        log = coordinator.log
        impostor = AgentIdentity.generate()
        # An outsider with stream access writes a "completed" record for record 1
        # (signed by itself) and garbage; the replica must ignore both.
        fake = SagaRecord(saga_id, 1, RecordKind.SAGA_COMPLETED, 1, impostor.did)
        trusted_log = await SagaLog.open(
            coordinator.node.transport, mesh=uid, trusted=frozenset({coordinator.did})
        )
        await log.stream.append(log.subject(saga_id), seal_record(fake, impostor))
        await log.stream.append(log.subject(saga_id), b"\x00garbage")
        coordinator.log = trusted_log
        state = await coordinator.resume(saga_id)
        assert state is not None
        assert state.status is SagaStatus.COMPLETED
        assert trusted_log.rejected_records == 2
        assert team.ledger.order(saga_id) == ["reserve", "charge", "ship"]
    finally:
        await team.aclose()


async def test_leases_exclude_other_replicas_until_they_expire(
    transport_factory: TransportFactory, uid: str
) -> None:
    transport = await transport_factory.new()
    log = await SagaLog.open(transport, mesh=uid)
    first = await log.acquire("s1", "did:a", ttl=30)
    assert first is not None
    assert await log.acquire("s1", "did:b", ttl=30) is None
    again = await log.acquire("s1", "did:a", ttl=30)  # re-entrant for its owner
    assert again is not None
    with pytest.raises(SagaOwnershipLost):
        await log.renew(first, ttl=30)  # revision moved on: the old handle is stale
    await log.release(again)
    taken = await log.acquire("s1", "did:b", ttl=30)
    assert taken is not None
    with pytest.raises(SagaOwnershipLost):
        await log.renew(again, ttl=30)


async def test_a_record_number_is_stored_once(
    transport_factory: TransportFactory, uid: str
) -> None:
    transport = await transport_factory.new()
    log = await SagaLog.open(transport, mesh=uid)
    one, two = AgentIdentity.generate(), AgentIdentity.generate()
    await log.append(SagaRecord("s2", 1, RecordKind.SAGA_STARTED, 1, one.did), one)
    with pytest.raises(SagaOwnershipLost) as caught:
        await log.append(SagaRecord("s2", 1, RecordKind.SAGA_STARTED, 2, two.did), two)
    assert caught.value.code == "saga_ownership_lost"
