"""A secured mesh set up and run with the CLI only, in separate processes, as the README says.

``mesh init`` writes the server config the test starts nats-server with; ``mesh
provision`` and ``mesh add-agent`` prepare it; three ``node run --jwt`` processes
and a ``mesh warden`` run on it. Anonymous tools are refused; a quarantine with
``--mesh-dir`` disconnects the agent's process at the broker; a revocation stored
by a plain ``registry revoke`` (no broker step) reaches the broker through the
warden; a release lets the agent back.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from iatp.identity import AgentIdentity
from tests.agentmesh.policy.processes import (
    PASSPHRASE,
    NodeProcess,
    key_file,
    run_cli,
    start_node,
)
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

MESH = "secx"


async def start_warden(directory: Path, authority: Path, url: str) -> NodeProcess:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentmesh",
        "mesh",
        "warden",
        "--dir",
        str(directory),
        "--identity",
        str(authority),
        "--nats",
        url,
        "--passphrase-env",
        "AGENT_PASS",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "AGENT_PASS": PASSPHRASE},
    )
    return NodeProcess(process, AgentIdentity.generate(), directory / "none")


def lost(node: NodeProcess) -> list[dict[str, object]]:
    return node.named("connection_lost")


async def test_secured_mesh_from_the_cli_across_processes(tmp_path: Path) -> None:
    authority = AgentIdentity.generate()
    a, b, c, observer = (AgentIdentity.generate() for _ in range(4))
    auth_file = key_file(tmp_path, authority)
    mesh_dir = tmp_path / "mesh"
    pw = ("--passphrase-env", "AGENT_PASS")
    code, out = await run_cli(
        "mesh", "init", "--dir", str(mesh_dir), "--identity", str(auth_file), "--mesh", MESH, *pw
    )
    assert code == 0, out
    server = NatsServerProcess(jetstream=False, config_file=str(mesh_dir / "nats-server.conf"))
    server.start()
    nodes: list[NodeProcess] = []
    try:
        url = server.url
        admin = ("--dir", str(mesh_dir), "--identity", str(auth_file), *pw)
        code, out = await run_cli("mesh", "provision", *admin, "--nats", url)
        assert code == 0, out
        jwts: dict[str, Path] = {}
        for who, role in ((a, "agent"), (b, "agent"), (c, "agent"), (observer, "observer")):
            jwts[who.did] = tmp_path / f"{who.did[-8:]}.jwt"
            code, out = await run_cli(
                "mesh", "add-agent", who.did, *admin, "--role", role, "--out", str(jwts[who.did])
            )
            assert code == 0, out

        # An anonymous tool is refused by the broker, with a clear error.
        code, out = await run_cli("registry", "list", "--nats", url, "--mesh", MESH)
        assert code == 1
        assert "refused by the broker" in out or "broker_authentication_failed" in out

        warden = await start_warden(mesh_dir, auth_file, url)
        nodes.append(warden)
        await warden.event("warden_ready")
        trust = ("--authority", authority.did, "--card-ttl", "5")
        for who in (a, b):
            nodes.append(
                await start_node(url, MESH, tmp_path, who, *trust, "--jwt", str(jwts[who.did]))
            )
        talk = ("--peer", a.did, "--peer", b.did, "--requests", "400", "--interval", "0.05")
        nodes.append(
            await start_node(url, MESH, tmp_path, c, *trust, *talk, "--jwt", str(jwts[c.did]))
        )
        node_a, node_b, node_c = nodes[1:]
        for node in (node_a, node_b, node_c):
            await node.event("ready")
        await node_c.wait_for(lambda: len(node_c.named("handshake")) == 2, "handshakes")
        assert all(e["ok"] for e in node_c.named("handshake")), node_c.named("handshake")

        # The observer reads the directory with its own key and JWT.
        seen = ("--identity", str(key_file(tmp_path, observer)), "--jwt", str(jwts[observer.did]))
        code, out = await run_cli(
            "registry", "list", "--nats", url, "--mesh", MESH, *seen, *pw, "--json"
        )
        assert code == 0, out
        assert {card["did"] for card in json.loads(out)} >= {a.did, b.did, c.did}

        # Quarantine B with --mesh-dir: the broker disconnects B's process at once.
        started = time.monotonic()
        code, out = await run_cli(
            "quarantine",
            b.did,
            "--identity",
            str(auth_file),
            "--mesh-dir",
            str(mesh_dir),
            "--nats",
            url,
            "--mesh",
            MESH,
            "--reason",
            "test",
            *pw,
        )
        assert code == 0, out
        await node_b.wait_for(lambda: bool(lost(node_b)), "B disconnected by the broker")
        took = time.monotonic() - started
        assert lost(node_b)[0]["error"] == "broker_access_revoked"
        assert await asyncio.wait_for(node_b.process.wait(), 15) != 0
        assert took < 10  # the CLI process start included; the API path is benchmarked
        await node_c.wait_for(
            lambda: any("quarantined" in str(e["detail"]) for e in node_c.named("request_failed")),
            "C refusing the quarantined B",
        )

        # A plain revocation of A (stored only) reaches the broker through the warden.
        code, out = await run_cli(
            "registry",
            "revoke",
            a.did,
            "--identity",
            str(auth_file),
            "--jwt",  # as the authority, but without the broker step of --mesh-dir
            str(mesh_dir / "authority.jwt"),
            "--nats",
            url,
            "--mesh",
            MESH,
            "--reason",
            "compromised",
            *pw,
        )
        assert code == 0, out
        await node_a.wait_for(lambda: bool(lost(node_a)), "A disconnected via the warden")
        await warden.wait_for(lambda: len(warden.named("broker_revocations")) >= 2, "pushes")

        # Release B: its process may join again with the same JWT.
        code, out = await run_cli(
            "release",
            b.did,
            "--identity",
            str(auth_file),
            "--mesh-dir",
            str(mesh_dir),
            "--nats",
            url,
            "--mesh",
            MESH,
            "--reason",
            "cleared",
            *pw,
        )
        assert code == 0, out
        again = await start_node(url, MESH, tmp_path, b, *trust, "--jwt", str(jwts[b.did]))
        nodes.append(again)
        await again.event("ready")
        assert not lost(again)
    finally:
        for node in nodes:
            await node.kill()  # C may still be sending: 'node run' leaves between requests
        server.close()
