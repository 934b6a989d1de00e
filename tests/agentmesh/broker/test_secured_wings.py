"""Newer wings on a secured broker: partitioned identities and signed trust snapshots.

The subject map grants them (partition subjects, the snapshot bucket); these tests
run them with nkey + JWT identities on a real nats-server, and check that what the
map withholds is refused there: an agent cannot write the snapshot bucket.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.broker.subject_map import Role
from agentmesh.errors import PermissionDenied, RequestTimeout
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.node.partitions import Partition
from agentmesh.transport.base import Transport
from agentmesh.trustnet import MeshTrust, SnapshotPolicy, SnapshotStore
from agentmesh.trustnet.snapshots import MANIFEST_KEY
from iatp.identity import AgentIdentity
from tests.agentmesh.broker.securemesh import SecureMesh
from trust import Outcome, Receipt, TrustConfig, sign_receipt

pytestmark = pytest.mark.nats

T0 = 1_700_000_000_000
SUBJECTS = [AgentIdentity.from_seed(bytes([i]) * 32) for i in range(1, 4)]
CONFIG = TrustConfig(receipt_horizon_ms=60_000, max_future_skew_ms=30_000)


async def echo(message: InboundMessage) -> bytes:
    return message.body


async def test_a_partitioned_identity_serves_on_a_secured_broker(tmp_path: Path) -> None:
    async with SecureMesh(tmp_path) as sm:
        served, asker = sm.member(), sm.member()
        members = []
        for index in range(2):
            transport = await sm.connect(served, name=f"member{index}")
            node = MeshNode(
                served.identity,
                transport,
                config=NodeConfig(mesh=sm.mesh, partition=Partition(index, 2)),
            )
            node.handle("echo", echo)
            await node.start()
            members.append(node)
        client = MeshNode(
            asker.identity, await sm.connect(asker, name="client"), config=NodeConfig(mesh=sm.mesh)
        )
        await client.start()
        try:
            for aware in (False, True):  # forwarded by a member, then sent to the owner
                if aware:
                    client.partitions.set(served.did, 2)
                for i in range(12):
                    body = b"%d" % i
                    assert (await client.request(served.did, "echo", body, timeout=5)).body == body
                    sealed = await client.request(served.did, "echo", body, sealed=True, timeout=5)
                    assert sealed.body == body
            assert all(node.counters.handled >= 6 for node in members)
            assert sum(node.counters.sent_by["forward"] for node in members) > 0
            assert sum(node.counters.rejected_total for node in members) == 0
        finally:
            await client.aclose()
            for node in members:
                await node.aclose()


def receipt(observer: AgentIdentity, k: int) -> Receipt:
    return Receipt.create(
        observer=observer.did,
        subject=SUBJECTS[k % len(SUBJECTS)].did,
        interaction_id=f"i{k}",
        outcome=Outcome.SUCCESS if k % 5 else Outcome.FAILURE,
        at_ms=T0 + k * 1_000,
        action="read",
    )


def trust_node(
    sm: SecureMesh,
    transport: Transport,
    who: AgentIdentity,
    snapshots: SnapshotPolicy | None = None,
) -> MeshTrust:
    return MeshTrust(
        transport,
        who,
        mesh=sm.mesh,
        pre_trusted=[SUBJECTS[0].did],
        config=CONFIG,
        recompute_interval=None,
        recompute_every=10,
        snapshots=snapshots,
    )


async def test_an_operator_writes_trust_snapshots_agents_join_from_them(tmp_path: Path) -> None:
    async with SecureMesh(tmp_path) as sm:
        operator, agent = sm.member(Role.OPERATOR), sm.member(Role.AGENT)
        writer = trust_node(sm, await sm.connect(operator, name="w"), operator.identity)
        async with writer:
            for k in range(40):
                await writer.ledger.publish(
                    sign_receipt(receipt(operator.identity, k), operator.identity)
                )
            await writer.ledger.catch_up(timeout=20)
            manifest = await writer.write_snapshot()
            scores = [writer.engine.score(s.did) for s in SUBJECTS]
        joining = SnapshotPolicy(signers=frozenset({operator.did}))
        transport = await sm.connect(agent, name="j")
        joiner = trust_node(sm, transport, agent.identity, snapshots=joining)
        async with joiner:
            assert joiner.started_from_seq == manifest.seq == 40
            assert joiner.snapshot_refused == {}
            assert [joiner.engine.score(s.did) for s in SUBJECTS] == scores
        store = await SnapshotStore.open(transport, sm.mesh)
        with pytest.raises((PermissionDenied, RequestTimeout)):
            await store.kv.put(MANIFEST_KEY, b"an agent's forged manifest", timeout=2.0)
        entry = await store.kv.get(MANIFEST_KEY)
        assert entry is not None
        assert entry.value != b"an agent's forged manifest"
