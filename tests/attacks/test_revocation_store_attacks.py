"""Un-revocation through the store: purging revocations does not lift them.

On an open server a plain nats-py client purges the newest revocation (a KV purge
of its key), then the whole revocation bucket (a stream purge). A node that starts
afterwards refuses to run (a clear error, exit 1, no traceback) instead of
serving the revoked agents; the authority republishes its journal with the CLI,
and the next node starts with every revocation in force.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from iatp.identity import AgentIdentity
from tests.agentmesh.policy.processes import key_file, run_cli, start_node
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats


async def node_verdict(url: str, mesh: str, tmp: Path, authority: AgentIdentity) -> tuple[int, str]:
    """Start a node for a moment: (exit code, what it said)."""
    node = await start_node(
        url, mesh, tmp, AgentIdentity.generate(), "--authority", authority.did, "--duration", "0.5"
    )
    code = await asyncio.wait_for(node.process.wait(), 30)
    await node.stop()
    return code, json.dumps(node.events)


async def test_purged_revocations_make_nodes_refuse_until_republished(
    nats_server: NatsServerProcess, tmp_path: Path, uid: str
) -> None:
    url = nats_server.url
    authority = AgentIdentity.generate()
    revoked = [AgentIdentity.generate() for _ in range(2)]
    journal = tmp_path / "journal.jsonl"
    issuer = ("--identity", str(key_file(tmp_path, authority)), "--passphrase-env", "AGENT_PASS")
    where = ("--nats", url, "--mesh", uid)
    for agent in revoked:
        code, out = await run_cli(
            "registry", "revoke", agent.did, *issuer, *where, "--journal", str(journal)
        )
        assert code == 0, out
    code, out = await node_verdict(url, uid, tmp_path, authority)
    assert code == 0, out
    bucket = f"{uid}_registry_revocations"
    newest = f"{authority.did[8:]}.2"

    attacker = await nats.connect(url)
    try:
        # 1. Purge the newest revocation's key.
        await attacker.request(
            f"$KV.{bucket}.{newest}",
            b"",
            headers={"KV-Operation": "PURGE", "Nats-Rollup": "sub"},
            timeout=2,
        )
        code, out = await _start_refused(url, uid, tmp_path, authority)
        assert "revocation_log_incomplete" in out
        assert "index 2" in out
        code, out = await run_cli(
            "registry", "republish", *issuer, *where, "--journal", str(journal)
        )
        assert code == 0, out
        assert "1 entry restored" in out
        code, out = await node_verdict(url, uid, tmp_path, authority)
        assert code == 0, out
        assert all(a.did in out for a in revoked)  # both still blocked, listed at start

        # 2. Purge the whole bucket.
        await attacker.request(f"$JS.API.STREAM.PURGE.KV_{bucket}", b"", timeout=2)
        code, out = await _start_refused(url, uid, tmp_path, authority)
        assert "2 of 2 entries" in out
        code, out = await run_cli(
            "registry", "republish", *issuer, *where, "--journal", str(journal)
        )
        assert code == 0, out
        assert "2 entries restored" in out
        code, out = await node_verdict(url, uid, tmp_path, authority)
        assert code == 0, out
    finally:
        await attacker.close()


async def _start_refused(
    url: str, mesh: str, tmp: Path, authority: AgentIdentity
) -> tuple[int, str]:
    code, out = await run_cli(
        "node",
        "run",
        "--identity",
        str(key_file(tmp, AgentIdentity.generate())),
        "--passphrase-env",
        "AGENT_PASS",
        "--nats",
        url,
        "--mesh",
        mesh,
        "--authority",
        authority.did,
        "--duration",
        "0.5",
    )
    assert code == 1, out
    assert "Traceback" not in out
    assert "registry republish" in out  # it says what to do
    return code, out
