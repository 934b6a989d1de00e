"""Attacks on federation, over three real secured servers with agents in their own processes.

acme federates with globex (agreement in force on both sides). initech's server is
linked to acme's at the broker, but acme never accepted an agreement with initech.
The attacker is this test process, holding real broker credentials of globex or
initech and real membership credentials where the attack needs them, and sending
real signed envelopes along the link's subjects, bypassing its own side's checks.
Each attack is refused by acme's node, counted, and the honest traffic flows on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from agentmesh.errors import NoResponders, RemoteError, RequestTimeout
from agentmesh.federation.agreement import Export
from agentmesh.federation.guard import credential_headers
from agentmesh.federation.lab import LabOrg
from agentmesh.federation.orgdir import OrgDirectory
from agentmesh.federation.runtime import route_base
from agentmesh.federation.steward import FEED_TYPE, encode_feed
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.node.routes import Route
from agentmesh.transport.nats import NatsTransport
from iatp.identity import AgentIdentity
from registry.revocation import RevocationKind, sign_revocation
from tests.agentmesh.federation.crossorg import World
from tests.natsserver import find_nats_server

pytestmark = [pytest.mark.nats, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    world = World(tmp_path_factory.mktemp("attacks"))
    lab = world.lab
    for name in ("acme", "globex", "initech"):
        lab.add_org(name)
    alice = Export(agent=world.did("alice"), operations=("status.*",))
    with_globex = lab.agree(
        "acme",
        "globex",
        exports={"acme": [alice], "globex": [Export(agent=world.did("bob"), operations=("*",))]},
    )
    with_initech = lab.agree("acme", "initech", exports={"acme": [alice]})
    lab.link(with_globex, listener="acme", connector="globex")
    lab.link(with_initech, listener="acme", connector="initech")
    # acme's broker carries the initech link, but acme never accepted that agreement
    (OrgDirectory(lab.orgs["acme"].directory).root / "agreements" / "acme-initech.json").unlink()
    files = {
        name: await world.membership_file(org, name)
        for org, name in (("acme", "alice"), ("acme", "zed"), ("globex", "bob"))
    }
    try:
        await lab.start()
        for org in ("acme", "globex", "initech"):
            await world.steward(org, resync=2.0)
        serve = ("--serve", "status.ping", "--serve", "admin.reset")
        await world.agent("acme", "alice", membership=files["alice"], options=serve)
        await world.agent("acme", "zed", membership=files["zed"], options=serve)
        await world.agent("globex", "bob", membership=files["bob"], options=("--serve", "quote"))
        yield world
    finally:
        await world.close()


async def attacker(world: World, org: LabOrg, name: str, credential: str | None) -> MeshNode:
    """A started node of ``org`` with a route to alice carrying ``credential`` (unchecked)."""
    identity = world.identity(name)
    node = MeshNode(
        identity,
        NatsTransport(org.url, config=org.credentials(identity).nats_config()),
        config=NodeConfig(mesh=org.name),
    )
    await node.start()
    headers = credential_headers(credential) if credential is not None else {}
    node.routes.set(
        world.did("alice"), Route(route_base(org.name, "acme", world.did("alice")), headers)
    )
    node.routes.set(
        world.did("zed"), Route(route_base(org.name, "acme", world.did("zed")), headers)
    )
    return node


async def refused_with(node: MeshNode, message_type: str = "status.ping", to: str = "") -> str:
    with pytest.raises(RemoteError) as refused:
        await node.request(to, message_type, b"attack", timeout=3.0)
    return refused.value.remote_code


async def honest_traffic_flows(world: World) -> None:
    bob, alice = world.agents["bob"], world.agents["alice"]
    answer = await bob.ask("request", to=alice.did, type="status.ping", body="honest")
    assert answer == {"event": "answer", "ok": True, "body": "acme:honest"}


def _reforge(token: str, forger: AgentIdentity, **changes: object) -> str:
    """``token`` with its payload changed and re-signed by ``forger`` (issuer kept)."""
    header, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["vc"]["credentialSubject"].update(changes)
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    signature = forger.sign(f"{header}.{body}".encode())
    return f"{header}.{body}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"


async def test_forged_and_expired_memberships_are_refused(world: World) -> None:
    globex = world.org("globex")
    alice = world.did("alice")
    real = await globex.issue_member(world.did("mallory"))
    forged = _reforge(real, world.identity("mallory"), roles=["admin"])
    node = await attacker(world, globex, "mallory", forged)
    try:
        assert await refused_with(node, to=alice) == "membership_invalid"
    finally:
        await node.aclose()
    short = await globex.issue_member(world.did("mayfly"), days=1 / 86400)
    node = await attacker(world, globex, "mayfly", short)
    try:
        await asyncio.sleep(1.2)
        assert await refused_with(node, to=alice) == "membership_invalid"
    finally:
        await node.aclose()
    stats = await world.agents["alice"].ask("stats")
    assert stats["counters"]["rejected"]["membership_invalid"] >= 2
    await honest_traffic_flows(world)


async def test_a_third_organization_without_an_agreement_is_refused(world: World) -> None:
    initech = world.org("initech")
    token = await initech.issue_member(world.did("ivan"))
    node = await attacker(world, initech, "ivan", token)
    try:  # the broker carries it (initech's link is up) but acme's node refuses
        assert await refused_with(node, to=world.did("alice")) == "organization_untrusted"
    finally:
        await node.aclose()
    await honest_traffic_flows(world)


async def test_a_partner_calling_what_was_not_exported_is_refused(world: World) -> None:
    globex = world.org("globex")
    token = await globex.issue_member(world.did("mallet"))
    node = await attacker(world, globex, "mallet", token)
    try:
        # alice is exported for status.* only: the arrival check refuses the rest
        assert await refused_with(node, "admin.reset", world.did("alice")) == "not_exported"
        # zed is not exported at all: nothing in acme's link account leads to it
        with pytest.raises((NoResponders, RequestTimeout)):
            await node.request(world.did("zed"), "status.ping", b"x", timeout=1.0)
    finally:
        await node.aclose()
    stats = await world.agents["alice"].ask("stats")
    assert stats["counters"]["rejected"]["not_exported"] >= 1
    await honest_traffic_flows(world)


async def test_an_authority_cannot_speak_for_another_organizations_agents(world: World) -> None:
    globex, alice_did = world.org("globex"), world.did("alice")
    # a credential naming acme, issued by globex's authority, is refused
    fake = await globex.issue_member(world.did("mimic"))
    node = await attacker(
        world, globex, "mimic", _reforge(fake, globex.authority, organization="acme")
    )
    try:
        assert await refused_with(node, to=alice_did) == "membership_invalid"
    finally:
        await node.aclose()
    # globex's authority issues alice (acme's agent) a credential and ships a quarantine
    # of her and a card for her through its steward channel: acme refuses both
    token = await globex.issue_member(alice_did)
    order = sign_revocation(
        globex.authority,
        subject=alice_did,
        kind=RevocationKind.QUARANTINED,
        reason="hostile",
        issued_at_ms=int(time.time() * 1000),
        sequence=7,
    )
    steward = MeshNode(
        globex.authority,
        globex.authority_transport("forged-feed"),
        config=NodeConfig(mesh="globex"),
    )
    acme = world.org("acme")
    async with steward:
        steward.routes.set(acme.did, Route(route_base("globex", "acme", acme.did)))
        card = b'{"did": "' + alice_did.encode() + b'"}'
        reply = await steward.request(
            acme.did, FEED_TYPE, encode_feed([("order", order.encode(), ""), ("card", card, token)])
        )
        assert reply.type.endswith(".reply")
    await asyncio.sleep(0.5)
    alice = world.agents["alice"]
    stats = await alice.ask("stats")
    assert (
        stats["refused"].get("revocation_unauthorized", 0)
        + stats["refused"].get("unauthorized_revocation", 0)
        >= 1
    ), stats
    assert (await alice.ask("blocked", did=alice_did))["blocked"] is False
    await honest_traffic_flows(world)


async def test_a_leaf_reconfigured_to_take_more_gets_nothing_more(
    world: World, tmp_path: Path
) -> None:
    """globex's server is replaced by a rogue one with globex's leaf credentials, bound to
    its global account with a subscriber on everything: acme's broker lets only the agreed
    subjects through and acme's nodes see nothing of the rogue's other publications."""
    globex, acme = world.org("globex"), world.org("acme")
    alice, zed = world.agents["alice"], world.agents["zed"]
    before = {
        name: (await world.agents[name].ask("stats"))["counters"] for name in ("alice", "zed")
    }
    globex.stop()
    creds = OrgDirectory(globex.directory).root / "leaf" / "acme.creds"
    conf = tmp_path / "rogue.conf"
    conf.write_text(
        'listen: "127.0.0.1:-1"\n'
        f'leafnodes {{ remotes: [ {{ url: "nats-leaf://127.0.0.1:{acme.leaf_port}", '
        f'credentials: "{creds}" }} ] }}\n'
    )
    binary = find_nats_server()
    assert binary is not None
    log = tmp_path / "rogue.log"
    rogue = await asyncio.create_subprocess_exec(binary, "-c", str(conf), "-l", str(log))
    try:
        deadline = time.monotonic() + 10
        while "Leafnode connection created" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            await asyncio.sleep(0.05)
        port = int(
            log.read_text().split("Listening for client connections on 127.0.0.1:")[1].split()[0]
        )
        import nats

        client = await nats.connect(f"nats://127.0.0.1:{port}")
        seen: list[str] = []

        async def spy(msg: object) -> None:
            if msg.data != b"rogue":  # type: ignore[attr-defined]  # not its own publications
                seen.append(msg.subject)  # type: ignore[attr-defined]

        await client.subscribe(">", cb=spy)
        await client.flush()
        await asyncio.sleep(0.5)
        zed_key, alice_key = zed.did.removeprefix("did:key:"), alice.did.removeprefix("did:key:")
        for subject in (
            f"fed.acme.{zed_key}.inbox",  # not exported
            f"acme.agent.{alice_key}.inbox",  # acme's own subjects
            f"acme.agent.{zed_key}.inbox",
            "$JS.API.STREAM.LIST",
            f"acme.fed.globex.{alice_key}.inbox",
            f"fed.acme.{alice_key}.inbox",  # the agreed subject: crosses (alice refuses it)
        ):
            await client.publish(subject, b"rogue")
        await client.flush()
        # acme's own traffic stays home: zed and alice talk while the rogue listens
        answer = await zed.ask("request", to=alice.did, type="status.ping", body="internal")
        assert answer["ok"] is True
        await asyncio.sleep(0.5)
        await client.close()
        assert seen == [], seen  # nothing of acme's crosses to the rogue
        after = {
            name: (await world.agents[name].ask("stats"))["counters"] for name in ("alice", "zed")
        }
        assert after["zed"]["received"] == before["zed"]["received"]  # nothing arrived
        # zed's request, and the rogue's frame on the one agreed subject (refused as garbage)
        assert after["alice"]["received"] == before["alice"]["received"] + 2
        assert (
            sum(after["alice"]["rejected"].values())
            == sum(before["alice"]["rejected"].values()) + 1
        )
    finally:
        rogue.terminate()
        await rogue.wait()
