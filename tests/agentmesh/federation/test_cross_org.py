"""Two organizations federated over real nats-servers, every agent in its own process.

acme (its server listens for the leaf link) and globex (its server connects) sign
an agreement: globex exports bob (quotes and payments) and dave (payments) to
acme, acme exports alice (status) to globex; carol of globex is not exported.
Each organization runs its steward (the real CLI). Nothing here is mocked: the
membership credentials are didkit JWT-VCs, the link is a leaf-node connection
between two operator-mode servers with account exports and imports, and every
refusal is the receiving or sending node's own check.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from agentmesh.broker.subject_map import Role
from agentmesh.errors import NoResponders, RemoteError, RequestTimeout
from agentmesh.federation.agreement import Ceilings, Export
from agentmesh.federation.lab import LAB_PASSPHRASE
from agentmesh.federation.operations import publish_federation, revoke_member
from agentmesh.federation.orgdir import OrgDirectory
from agentmesh.federation.runtime import route_base
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.node.routes import Route
from agentmesh.transport.nats import NatsTransport
from iatp.keystore import save_identity
from tests.agentmesh.federation.crossorg import Child, World

pytestmark = [pytest.mark.nats, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    world = World(tmp_path_factory.mktemp("federation"))
    lab = world.lab
    lab.add_org("acme")
    lab.add_org("globex")
    agreement = lab.agree(
        "acme",
        "globex",
        exports={
            "globex": [
                Export(
                    agent=world.did("bob"),
                    operations=("quote.*", "payment.*"),
                    capabilities=("quote", "payment"),
                ),
                Export(agent=world.did("dave"), operations=("quote.*",), capabilities=("quote",)),
                Export(agent=world.did("erin"), operations=("quote.*",), capabilities=("quote",)),
            ],
            "acme": [Export(agent=world.did("alice"), operations=("status.*",))],
        },
        ceilings={
            "globex": Ceilings(max_ring=2, rate_per_second=500, burst=500, daily_budget=10_000),
            "acme": Ceilings(max_ring=3, allowed_tools=("status.ping",)),
        },
    )
    lab.link(agreement, listener="acme", connector="globex")
    files = {
        name: await world.membership_file(org, name)
        for org, name in (
            ("acme", "alice"),
            ("globex", "bob"),
            ("globex", "carol"),
            ("globex", "dave"),
            ("globex", "erin"),
        )
    }
    try:
        await lab.start()
        await world.steward("acme", resync=2.0)
        await world.steward("globex", resync=2.0)
        serve = ("--serve", "quote.request", "--serve", "payment.charge", "--capability", "quote")
        world.agents = {
            "bob": await world.agent("globex", "bob", membership=files["bob"], options=serve),
            "carol": await world.agent("globex", "carol", membership=files["carol"], options=serve),
            "dave": await world.agent("globex", "dave", membership=files["dave"], options=serve),
            "erin": await world.agent("globex", "erin", membership=files["erin"], options=serve),
            "alice": await world.agent(
                "acme",
                "alice",
                membership=files["alice"],
                options=(
                    "--serve",
                    "status.ping",
                    "--serve",
                    "status.dump",
                    "--org-trust",
                    "globex=0.8",
                ),
            ),
        }
        alice = world.agents["alice"]
        for name in ("bob", "dave", "erin"):
            seen = await alice.ask("wait_card", did=world.did(name), within=30)
            assert seen["seen"], (
                f"acme never saw {name}'s card: {world.lab.orgs['acme'].server_log()[-800:]}"
            )
        yield world
    finally:
        await world.close()


def agents(world: World) -> dict[str, Child]:
    return world.agents


async def test_requests_cross_both_ways_through_the_link(world: World) -> None:
    alice, bob = agents(world)["alice"], agents(world)["bob"]
    answer = await alice.ask("request", to=bob.did, type="quote.request", body="100 widgets")
    assert answer == {"event": "answer", "ok": True, "body": "globex:100 widgets"}
    answer = await bob.ask("request", to=alice.did, type="status.ping", body="hi")
    assert answer["ok"] is True
    assert answer["body"] == "acme:hi"


async def test_discovery_shows_only_exported_agents_ranked_with_the_org_discount(
    world: World,
) -> None:
    alice = agents(world)["alice"]
    found = (await alice.ask("find", capability="quote"))["dids"]
    assert set(found) == {world.did("bob"), world.did("dave"), world.did("erin")}
    assert world.did("carol") not in found  # not exported: never shipped, never routed
    explained = (await alice.ask("explain", did=world.did("bob")))["explain"]
    assert explained["organization"] == "globex"
    assert explained["org_trust"] == 0.8
    assert explained["score"] == pytest.approx(explained["local"] * 0.8)


async def test_departure_refuses_an_operation_the_partner_did_not_export(world: World) -> None:
    alice, bob = agents(world)["alice"], agents(world)["bob"]
    answer = await alice.ask("request", to=bob.did, type="secret.read", body="x")
    assert answer["ok"] is False
    assert answer["error"] == "not_exported"
    # acme allows globex's agents only the tool status.ping, though it exports status.*
    answer = await bob.ask("request", to=alice.did, type="status.dump", body="x")
    assert answer["ok"] is False
    assert answer["error"] == "federation_ceiling"


async def test_an_agent_the_partner_did_not_export_is_not_reachable_at_the_broker(
    world: World,
) -> None:
    acme = world.org("acme")
    prober = world.identity("prober")
    node = MeshNode(
        prober,
        NatsTransport(acme.url, config=acme.credentials(prober).nats_config()),
        config=NodeConfig(mesh="acme"),
    )
    async with node:
        for name in ("bob", "carol"):
            node.routes.set(world.did(name), Route(route_base("acme", "globex", world.did(name))))
        # bob's subject crosses the link: his node answers (refusing an unknown sender)
        with pytest.raises(RemoteError) as refused:
            await node.request(world.did("bob"), "quote.request", b"x", timeout=3.0)
        assert refused.value.remote_code == "unknown_agent"
        # carol is not exported: nothing in acme's link account leads to her
        with pytest.raises((NoResponders, RequestTimeout)):
            await node.request(world.did("carol"), "quote.request", b"x", timeout=1.0)


async def test_partner_quarantine_applies_to_its_own_agent_only(world: World) -> None:
    alice, carol = agents(world)["alice"], agents(world)["carol"]
    globex, acme = world.org("globex"), world.org("acme")
    dave = world.did("dave")
    # globex's authority quarantines its own agent dave: acme honours it
    await globex.quarantine(dave, "drift")
    deadline = time.monotonic() + 10
    while not (await alice.ask("blocked", did=dave))["blocked"]:
        assert time.monotonic() < deadline, "acme never honoured globex's quarantine of dave"
        await asyncio.sleep(0.1)
    answer = await alice.ask("request", to=dave, type="quote.request", body="x")
    assert answer["ok"] is False
    assert answer["error"] == "membership_invalid"
    # acme's authority quarantining globex's carol changes nothing inside globex
    bob = agents(world)["bob"]
    await acme.quarantine(carol.did, "not yours to quarantine")
    await asyncio.sleep(2.5)  # a steward re-ships every 2 s
    answer = await bob.ask("request", to=carol.did, type="quote.request", body="still fine")
    assert answer["ok"] is True
    assert (await bob.ask("blocked", did=carol.did))["blocked"] is False


async def test_membership_revocation_is_refused_across_the_link_within_a_second(
    world: World,
) -> None:
    alice = agents(world)["alice"]
    globex = world.org("globex")
    erin = world.did("erin")
    assert (await alice.ask("request", to=erin, type="quote.request", body="x"))["ok"] is True
    started = time.monotonic()
    revoke_member(globex.directory, globex.authority, erin)
    transport = globex.authority_transport("revoke")
    await transport.connect(timeout=5.0)
    try:
        await publish_federation(transport, "globex", OrgDirectory(globex.directory))
    finally:
        await transport.aclose()
    while not (await alice.ask("blocked", did=erin))["blocked"]:
        assert time.monotonic() - started < 5.0, "acme never saw erin's revocation"
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"revocation took {elapsed:.3f}s to cross the link"
    answer = await alice.ask("request", to=erin, type="quote.request", body="x")
    assert answer["ok"] is False
    assert answer["error"] == "membership_revoked"
    # honest traffic keeps flowing
    answer = await alice.ask("request", to=world.did("bob"), type="quote.request", body="y")
    assert answer["ok"] is True


async def test_sessions_do_not_cross_the_link(world: World) -> None:
    acme = world.org("acme")
    me = world.identity("session-prober")
    node = MeshNode(
        me,
        NatsTransport(acme.url, config=acme.credentials(me).nats_config()),
        config=NodeConfig(mesh="acme"),
    )
    from agentmesh.errors import NoSession
    from agentmesh.federation.runtime import NodeFederation

    async with node:
        federation = NodeFederation(node.transport, me, mesh="acme", organization=acme.did)
        async with federation:
            federation.install(node)
            with pytest.raises(NoSession):
                await node.handshake(world.did("bob"))
            with pytest.raises(NoSession):
                await node.request(world.did("bob"), "quote.request", b"x", via_session=True)


async def test_world_files_are_in_place(world: World) -> None:
    acme_conf = (world.org("acme").directory / "nats-server.conf").read_text()
    globex_conf = (world.org("globex").directory / "nats-server.conf").read_text()
    assert "leafnodes {" in acme_conf
    assert "listen:" in acme_conf
    assert "remotes: [" in globex_conf
    assert "nats-leaf://127.0.0.1:" in globex_conf
    creds = Path(world.org("globex").directory / "federation" / "leaf" / "acme.creds")
    assert creds.stat().st_mode & 0o777 == 0o600  # noqa: ASYNC240


async def test_trust_explain_shows_the_partner_discount(world: World) -> None:
    acme = world.org("acme")
    observer = world.identity("observer")
    identity_file = world.root / "observer.id"
    save_identity(observer, identity_file, LAB_PASSPHRASE)
    jwt_file = acme.save_user_jwt(observer.did, Role.OBSERVER)
    command = [
        sys.executable, "-m", "agentmesh", "trust", "explain", world.did("bob"),
        "--nats", acme.url, "--mesh", "acme", "--organization", acme.did,
        "--org-trust", "globex=0.8", "--identity", str(identity_file), "--jwt", str(jwt_file),
        "--passphrase-env", "OBSERVER_PASSPHRASE",
    ]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run,
        command,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OBSERVER_PASSPHRASE": LAB_PASSPHRASE, "COLUMNS": "200"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(re.sub(r"[^\w.=():+ -]", " ", result.stdout).split())  # no table borders
    assert "organization globex" in text
    assert "trust in the organization 0.80" in text
    assert "federated score = local x org trust 0.0000" in text  # no local evidence yet
    assert "ring cap (agreement) 3" in text  # acme lets globex's agents no better than 3


async def test_node_run_takes_part_in_its_organizations_federation(world: World) -> None:
    globex = world.org("globex")
    frank = world.identity("frank")
    identity_file = world.root / "frank.id"
    save_identity(frank, identity_file, LAB_PASSPHRASE)
    membership = await world.membership_file("globex", "frank")
    command = [
        sys.executable, "-m", "agentmesh", "node", "run", "--identity", str(identity_file),
        "--jwt", str(globex.save_user_jwt(frank.did)), "--nats", globex.url, "--mesh", "globex",
        "--organization", globex.did, "--membership", str(membership),
        "--org-trust", "acme=0.9", "--duration", "1", "--passphrase-env", "FRANK_PASSPHRASE",
    ]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run,
        command,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FRANK_PASSPHRASE": LAB_PASSPHRASE},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    (federation,) = [e for e in events if e["event"] == "federation"]
    assert federation["partners"] == ["acme"]
    assert federation["membership"] is True
    assert federation["organization"] == globex.did
