"""Either organization cuts the link: at once at the application layer, then at the broker.

Own module (and world): revoking an agreement is permanent for its id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from agentmesh.broker.session import authority_session
from agentmesh.errors import NoResponders, RemoteError, RequestTimeout
from agentmesh.federation import operations
from agentmesh.federation.agreement import Export
from agentmesh.federation.orgdir import OrgDirectory
from agentmesh.federation.runtime import route_base
from agentmesh.federation.store import agreement_key, federation_bucket
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.node.routes import Route
from agentmesh.transport.nats import NatsTransport
from tests.agentmesh.federation.crossorg import World

pytestmark = [pytest.mark.nats, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    world = World(tmp_path_factory.mktemp("cut"))
    lab = world.lab
    lab.add_org("acme")
    lab.add_org("globex")
    agreement = lab.agree(
        "acme",
        "globex",
        exports={
            "globex": [Export(agent=world.did("bob"), operations=("quote.*",))],
            "acme": [Export(agent=world.did("alice"), operations=("status.*",))],
        },
    )
    lab.link(agreement, listener="acme", connector="globex")
    alice_vc = await world.membership_file("acme", "alice")
    bob_vc = await world.membership_file("globex", "bob")
    try:
        await lab.start()
        await world.steward("acme", resync=2.0)
        await world.steward("globex", resync=2.0)
        await world.agent("globex", "bob", membership=bob_vc, options=("--serve", "quote.request"))
        alice = await world.agent(
            "acme", "alice", membership=alice_vc, options=("--serve", "status.ping")
        )
        assert (await alice.ask("wait_card", did=world.did("bob"), within=30))["seen"]
        yield world
    finally:
        await world.close()


async def test_revoking_the_agreement_stops_both_sides_then_the_broker_link(world: World) -> None:
    alice, bob = world.agents["alice"], world.agents["bob"]
    acme, globex = world.org("acme"), world.org("globex")
    ok = await alice.ask("request", to=bob.did, type="quote.request", body="before")
    assert ok["ok"] is True
    ok = await bob.ask("request", to=alice.did, type="status.ping", body="before")
    assert ok["ok"] is True
    agreement = world.lab.agreements[0]

    started = time.monotonic()
    operations.revoke(acme.directory, acme.authority, agreement, reason="contract ended")
    await world.lab.publish("acme")
    refused_at: dict[str, float] = {}
    while len(refused_at) < 2:
        assert time.monotonic() - started < 5.0, f"not refused on both sides: {refused_at}"
        if "acme" not in refused_at:
            answer = await alice.ask("request", to=bob.did, type="quote.request", body="x")
            if not answer["ok"]:
                assert answer["error"] == "agreement_revoked"
                refused_at["acme"] = time.monotonic() - started
        if "globex" not in refused_at:
            answer = await bob.ask("request", to=alice.did, type="status.ping", body="x")
            if not answer["ok"]:
                assert answer["error"] in ("agreement_revoked", "organization_untrusted")
                refused_at["globex"] = time.monotonic() - started
        await asyncio.sleep(0.01)
    assert refused_at["acme"] < 1.0
    assert refused_at["globex"] < 1.0

    # A replayed agreement (the same signed bytes stored again) and an amendment of the
    # same id signed by both stay refused: a revocation ends every version of its id.
    amended = agreement.model_copy(update={"version": 2, "signatures": {}})
    amended = amended.signed_by(acme.authority).signed_by(globex.authority)
    transport = acme.authority_transport("replay")
    await transport.connect(timeout=5.0)
    try:
        bucket = await transport.key_value(federation_bucket("acme"))
        await bucket.put(agreement_key(agreement.id), agreement.encode())
        await bucket.put(agreement_key(agreement.id), amended.encode())
    finally:
        await transport.aclose()
    await asyncio.sleep(0.3)
    answer = await alice.ask("request", to=bob.did, type="quote.request", body="replayed")
    assert answer["ok"] is False
    assert answer["error"] == "agreement_revoked"

    # At the broker: until the link is removed bob's subject still crosses (his node
    # refuses an unknown sender); once both sides removed it and handed their servers
    # the new account JWTs, nothing crosses.
    prober = world.identity("prober")
    node = MeshNode(
        prober,
        NatsTransport(acme.url, config=acme.credentials(prober).nats_config()),
        config=NodeConfig(mesh="acme"),
    )
    async with node:
        node.routes.set(bob.did, Route(route_base("acme", "globex", bob.did)))
        with pytest.raises(RemoteError) as crossed:
            await node.request(bob.did, "quote.request", b"before unlink", timeout=3.0)
        assert crossed.value.remote_code == "unknown_agent"
        for org, partner in ((acme, "globex"), (globex, "acme")):
            operations.unlink_mesh(org.directory, org.authority, partner)
            async with authority_session(org.directory, org.authority, url=org.url) as session:
                await operations.push_links(session)
        with pytest.raises((NoResponders, RequestTimeout)):
            await node.request(bob.did, "quote.request", b"after unlink", timeout=1.0)
    assert OrgDirectory(acme.directory).revocations()
