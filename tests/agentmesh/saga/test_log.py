"""The durable log on both transports: signed records, injected records, leases, fencing."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest

from agentmesh.saga import SagaLog, SagaOwnershipLost, SagaStatus
from agentmesh.saga.records import RecordKind, SagaRecord, encode_record, seal_record
from iatp.identity import AgentIdentity
from tests.agentmesh.saga.team import order_saga, standard_team
from tests.conftest import TransportFactory


async def test_injected_records_are_skipped_and_counted(
    transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    try:
        coordinator = await team.coordinator()
        state = await coordinator.run(order_saga(), saga_id="x1")
        log = coordinator.log
        impostor = AgentIdentity.generate()
        # An outsider with stream access appends a record signed by itself, a record
        # forged in the coordinator's name, and garbage.
        own = SagaRecord("x1", 9, RecordKind.SAGA_COMPENSATED, 1, impostor.did)
        await log.stream.append(log.subject("x1"), seal_record(own, impostor))
        forged = msgpack.packb(
            [encode_record(replace(own, coordinator=coordinator.did)), b"x" * 64]
        )
        await log.stream.append(log.subject("x1"), forged)
        await log.stream.append(log.subject("x1"), b"\x00garbage")
        trusted = await SagaLog.open(
            coordinator.node.transport, mesh=uid, trusted=frozenset({coordinator.did})
        )
        again = await trusted.load("x1")
        assert trusted.rejected_records == 3  # untrusted signer, bad signature, garbage
        assert again.status is SagaStatus.COMPLETED
        assert len(again.records) == len(state.records)
        # Without a trusted set, the impostor's well-signed record is read but cannot
        # follow, so it is kept out of the state instead of bricking the saga.
        anyone = await SagaLog.open(coordinator.node.transport, mesh=uid)
        loose = await anyone.load("x1")
        assert anyone.rejected_records == 2
        assert loose.status is SagaStatus.COMPLETED
        assert len(loose.rejected) == 1
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
