"""Governance across processes over a real nats-server.

- a policy deny is enforced on a remote call (the caller gets the rule's code);
- a demoted agent loses a capability on its very next message (live policy reload);
- a quarantine ordered from another process is enforced by every node at once,
  and the release lifts it;
- the audit logs the nodes wrote verify against the checkpoints the mesh witnessed,
  and a tampered copy is caught.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
import yaml

from iatp.identity import AgentIdentity
from tests.agentmesh.policy.processes import NodeProcess, key_file, run_cli, start_node
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats


def policy(path: Path, rings: dict[str, int], denied_peer: str) -> None:
    document = {
        "version": 1,
        "name": "xproc",
        "revision": len(path.read_text()) if path.exists() else 0,
        "rules": [
            {
                "id": "echo-in",
                "effect": "allow",
                "match": {"actions": ["mesh.echo"], "direction": "inbound"},
            },
            {
                "id": "no-echo-from-c",
                "effect": "deny",
                "match": {"actions": ["mesh.echo"], "direction": "inbound", "peers": [denied_peer]},
            },
            {"id": "out", "effect": "allow", "match": {"actions": ["*"], "direction": "outbound"}},
        ],
        "rings": {
            "capabilities": {1: ["*"], 2: ["mesh.echo"], 3: []},
            "agents": rings,
            "default": 3,
        },
    }
    path.write_text(yaml.safe_dump(document))


def failures(node: NodeProcess) -> list[str]:
    return [str(e["detail"]) for e in node.named("request_failed")]


async def test_policy_deny_and_demotion_on_the_next_message(
    nats_server: NatsServerProcess, tmp_path: Path, uid: str
) -> None:
    a, b, c = (AgentIdentity.generate() for _ in range(3))
    policy_file = tmp_path / "b-policy.yaml"
    policy(policy_file, {a.did: 2, c.did: 2}, c.did)
    nodes: list[NodeProcess] = []
    try:
        server = await start_node(nats_server.url, uid, tmp_path, b, "--policy", str(policy_file))
        nodes.append(server)
        await server.event("ready")
        caller = await start_node(
            nats_server.url,
            uid,
            tmp_path,
            a,
            "--peer",
            b.did,
            "--requests",
            "400",
            "--interval",
            "0.03",
        )
        denied = await start_node(
            nats_server.url, uid, tmp_path, c, "--peer", b.did, "--requests", "3"
        )
        nodes += [caller, denied]
        done = await denied.event("requests_done")
        assert done["failures"] == 3
        assert all("policy_denied" in d and "no-echo-from-c" in d for d in failures(denied))
        await caller.event("handshake")
        await asyncio.sleep(1.0)
        assert failures(caller) == []  # ring 2 holds mesh.echo

        policy(policy_file, {a.did: 3, c.did: 2}, c.did)  # demote A
        server.process.send_signal(signal.SIGHUP)
        reload = await server.event("policy_reload")
        assert reload["ok"] is True
        await caller.wait_for(lambda: bool(failures(caller)), "a ring_denied failure", 10)
        await asyncio.sleep(0.3)
        assert failures(caller)
        assert all("ring_denied" in d for d in failures(caller)), failures(
            caller
        )  # nothing dropped

        (tmp_path / "b-policy.yaml").write_text("version: 1\nname: broken\nrules: [{id: x}]\n")
        server.process.send_signal(signal.SIGHUP)
        await server.wait_for(lambda: len(server.named("policy_reload")) == 2, "second reload")
        assert server.named("policy_reload")[1]["ok"] is False  # the old policy stays
        await caller.kill()
        await denied.kill()
        assert await server.stop() == 0  # signs a last checkpoint on the way out
        code, out = await run_cli(
            "audit",
            "verify",
            str(server.audit),
            "--node",
            b.did,
            "--nats",
            nats_server.url,
            "--mesh",
            uid,
        )
        assert code == 0, out
        assert "OK" in out
        records = [json.loads(line) for line in server.audit.read_text().splitlines()]
        denial = next(i for i, r in enumerate(records) if r["event"]["code"] == "ring_denied")
        records[denial]["event"]["code"] = "allowed"
        server.audit.write_text("".join(json.dumps(r) + "\n" for r in records))
        code, out = await run_cli(
            "audit",
            "verify",
            str(server.audit),
            "--node",
            b.did,
            "--nats",
            nats_server.url,
            "--mesh",
            uid,
        )
        assert code == 1, out
        assert "edited" in out
        assert f"line {denial + 1}" in out
    finally:
        for node in nodes:
            await node.kill()


async def test_quarantine_from_another_process_is_enforced_everywhere(
    nats_server: NatsServerProcess, tmp_path: Path, uid: str
) -> None:
    authority, a, b, rogue = (AgentIdentity.generate() for _ in range(4))
    trust = ("--authority", authority.did)
    nodes: list[NodeProcess] = []
    try:
        server = await start_node(nats_server.url, uid, tmp_path, b, *trust)
        nodes.append(server)
        await server.event("ready")
        steady = await start_node(
            nats_server.url,
            uid,
            tmp_path,
            a,
            *trust,
            "--peer",
            b.did,
            "--requests",
            "300",
            "--interval",
            "0.03",
        )
        bad = await start_node(
            nats_server.url,
            uid,
            tmp_path,
            rogue,
            *trust,
            "--peer",
            b.did,
            "--requests",
            "300",
            "--interval",
            "0.03",
        )
        nodes += [steady, bad]
        await steady.event("handshake")
        await bad.event("handshake")
        await asyncio.sleep(0.5)
        assert failures(bad) == []

        order = ("--identity", str(key_file(tmp_path, authority)), "--passphrase-env", "AGENT_PASS")
        where = ("--nats", nats_server.url, "--mesh", uid)
        code, out = await run_cli("quarantine", rogue.did, *order, *where, "--reason", "drift")
        assert code == 0, out
        for node in nodes:
            event = await node.event("quarantined", timeout=5)
            assert event["did"] == rogue.did
        await bad.wait_for(lambda: bool(failures(bad)), "rogue's requests refused", 5)
        assert all("quarantined" in d for d in failures(bad)), failures(bad)

        code, out = await run_cli("release", rogue.did, *order, *where, "--reason", "reviewed")
        assert code == 0, out
        for node in nodes:
            await node.event("released", timeout=5)
        refused = len(failures(bad))
        await asyncio.sleep(0.5)
        assert len(failures(bad)) == refused  # routing again
        assert failures(steady) == []  # bystanders never noticed

        mallory = AgentIdentity.generate()
        forged = ("--identity", str(key_file(tmp_path, mallory)), "--passphrase-env", "AGENT_PASS")
        code, out = await run_cli("quarantine", a.did, *forged, *where, "--reason", "mine")
        assert code == 0  # the CLI signs; every node refuses it
        await asyncio.sleep(0.5)
        assert failures(steady) == []
        assert len(steady.named("quarantined")) == 1
    finally:
        for node in nodes:
            await node.kill()
