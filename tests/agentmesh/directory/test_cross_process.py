"""The directory across processes over a real nats-server.

Three ``agentmesh node run`` processes register cards and talk to each other; the
``agentmesh registry`` CLI (a fourth and fifth process) lists, finds and revokes.
A revocation issued by the CLI is enforced by every node; a node killed and
restarted rebuilds its directory and revocation state from JetStream KV.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from iatp.identity import AgentIdentity
from tests.agentmesh.policy.processes import NodeProcess, key_file, run_cli, start_node
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats


def seen_cards(node: NodeProcess) -> set[object]:
    """DIDs loaded at start plus those registered later."""
    loaded = {did for e in node.named("directory") for did in e["dids"]}  # type: ignore[attr-defined]
    return loaded | {e["did"] for e in node.named("card") if e["change"] == "registered"}


def refused(node: NodeProcess, code: str) -> list[object]:
    return [e["peer"] for e in node.named("request_failed") if code in str(e["detail"])]


async def test_registration_revocation_and_restart_across_processes(
    nats_server: NatsServerProcess, tmp_path: Path, uid: str
) -> None:
    authority = AgentIdentity.generate()
    a, b, c = (AgentIdentity.generate() for _ in range(3))
    trust = ("--authority", authority.did, "--card-ttl", "5")
    where = ("--nats", nats_server.url, "--mesh", uid)
    nodes: list[NodeProcess] = []
    try:
        nodes.append(
            await start_node(nats_server.url, uid, tmp_path, a, *trust, "--capability", "search@1")
        )
        nodes.append(
            await start_node(
                nats_server.url,
                uid,
                tmp_path,
                b,
                *trust,
                "--capability",
                "search@1",
                "--capability",
                "summarize",
            )
        )
        talk = ("--peer", a.did, "--peer", b.did, "--requests", "1000", "--interval", "0.05")
        nodes.append(
            await start_node(
                nats_server.url, uid, tmp_path, c, *trust, "--capability", "search@2", *talk
            )
        )
        for node in nodes:
            await node.event("registered")
        # Every node sees every other node's card.
        for node in nodes:
            others = {n.did for n in nodes if n is not node}
            await node.wait_for(lambda n=node, o=others: o <= seen_cards(n), "cards of the others")

        code, out = await run_cli("registry", "list", *where, "--json")
        assert code == 0, out
        assert {card["did"] for card in json.loads(out)} == {a.did, b.did, c.did}
        code, out = await run_cli("registry", "find", "search", *where, "--version", "1", "--json")
        assert code == 0, out
        assert sorted(card["did"] for card in json.loads(out)) == sorted([a.did, b.did])
        nodes[2].events.clear()
        await asyncio.sleep(0.3)
        assert refused(nodes[2], "revoked") == []

        # A revocation signed by a stranger is refused by every node.
        mallory = AgentIdentity.generate()
        stranger = (
            "--identity",
            str(key_file(tmp_path, mallory)),
            "--passphrase-env",
            "AGENT_PASS",
        )
        code, out = await run_cli("registry", "revoke", c.did, *stranger, *where)
        assert code == 0, out  # the CLI signs and stores it; the nodes judge it
        # The authority's revocation is enforced by every node.
        signer = (
            "--identity",
            str(key_file(tmp_path, authority)),
            "--passphrase-env",
            "AGENT_PASS",
        )
        code, out = await run_cli(
            "registry", "revoke", c.did, *signer, *where, "--reason", "stolen key"
        )
        assert code == 0, out
        for node in nodes:
            event = await node.event("revocation", timeout=10)
            assert event["did"] == c.did
            assert event["status"] == "revoked"
            assert event["issuer"] == authority.did
        await nodes[2].wait_for(
            lambda: {a.did, b.did} <= set(refused(nodes[2], "revoked")), "c refused by a and b", 10
        )
        code, out = await run_cli(
            "registry", "find", "search", *where, "--json", "--authority", authority.did
        )
        assert code == 0, out
        assert sorted(card["did"] for card in json.loads(out)) == sorted([a.did, b.did])
        code, out = await run_cli(
            "registry", "show", c.did, *where, "--json", "--authority", authority.did
        )
        assert code == 0, out
        shown = json.loads(out)
        assert shown["status"] == "revoked"
        assert [r["issuer"] for r in shown["revocations"]] == [authority.did]  # mallory's refused

        # b dies without deregistering and comes back: it rebuilds from KV.
        await nodes[1].kill()
        again = tmp_path / "restart"
        again.mkdir()
        restarted = await start_node(nats_server.url, uid, again, b, *trust)
        nodes[1] = restarted
        loaded = await restarted.event("directory")
        assert loaded["blocked"] == [c.did]
        assert loaded["cards"] >= 3
        before = len(refused(nodes[2], "revoked"))
        await nodes[2].wait_for(
            lambda: len(refused(nodes[2], "revoked")) >= before + 2, "c refused by restarted b", 10
        )
    finally:
        for node in nodes:
            await node.kill()
