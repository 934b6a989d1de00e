"""The dashboard's HTTP API against a running mesh on the embedded transport."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import httpx
import pytest

from agentmesh.dashboard.app import STATIC, create_app, host_name
from agentmesh.dashboard.monitor import MeshMonitor
from agentmesh.dashboard.operations import operation_document, sign_operation
from iatp.identity import AgentIdentity
from registry.revocation import RevocationKind
from tests.dashboard.conftest import SmallMesh, wait_until

JSON = {"content-type": "application/json"}


def agent(state: dict[str, Any], did: str) -> dict[str, Any]:
    return next(a for a in state["agents"] if a["did"] == did)


def signed(
    mesh: SmallMesh, name: str, kind: RevocationKind, issuer: AgentIdentity | None = None
) -> bytes:
    entry = sign_operation(issuer or mesh.authority, mesh.did(name), kind, "test order")
    return json.dumps(operation_document(entry)).encode()


async def test_the_page_and_its_assets_are_served_locally(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert asset.startswith("/static/"), asset  # nothing from another origin
        assert (await client.get(asset)).status_code == 200
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        urls = re.findall(r"https?://[^\s\"')]+", text)
        assert all(u.startswith("http://www.w3.org/2000/svg") for u in urls), (path, urls)


async def test_state_shows_the_agents_with_their_reports(
    client: httpx.AsyncClient, memory_mesh: SmallMesh, monitor: MeshMonitor
) -> None:
    await wait_until(lambda: len(monitor.reports) == 3, "three status reports")
    await wait_until(
        lambda: all(a["report"] for a in monitor.snapshot()["agents"]), "reports in the snapshot"
    )
    state = (await client.get("/api/state")).json()
    assert {a["name"] for a in state["agents"]} == {"alice", "bob", "carol"}
    alice = agent(state, memory_mesh.did("alice"))
    assert alice["card"] is True
    assert alice["status"] == "ok"
    assert alice["capabilities"] == ["echo@1"]
    assert state["actions"] is True
    assert state["authorities"] == [memory_mesh.authority.did]


async def test_refusals_carry_code_peer_and_rule(
    client: httpx.AsyncClient, memory_mesh: SmallMesh, monitor: MeshMonitor
) -> None:
    await memory_mesh.ask("carol", "bob")
    await wait_until(lambda: bool(monitor.snapshot()["refusals"]), "a reported refusal")
    refusal = (await client.get("/api/state")).json()["refusals"][0]
    assert refusal["node"] == memory_mesh.did("bob")
    assert refusal["node_name"] == "bob"
    assert refusal["peer"] == memory_mesh.did("carol")
    assert refusal["peer_name"] == "carol"
    assert refusal["code"] == "policy_denied"
    assert refusal["rule"] == "no-carol"


async def test_a_signed_quarantine_is_applied_and_shown(
    client: httpx.AsyncClient, memory_mesh: SmallMesh, monitor: MeshMonitor
) -> None:
    answer = await client.post(
        "/api/operations",
        content=signed(memory_mesh, "carol", RevocationKind.QUARANTINED),
        headers=JSON,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["applied"] is True
    carol = memory_mesh.did("carol")
    await wait_until(
        lambda: agent(monitor.snapshot(), carol)["status"] == "quarantined", "carol quarantined"
    )
    state = (await client.get("/api/state")).json()
    (row,) = state["quarantines"]
    assert row["did"] == carol
    assert row["issuer"] == memory_mesh.authority.did
    assert row["reason"] == "test order"
    # The same document again is a replay.
    again = await client.post("/api/operations", content=answer.request.content, headers=JSON)
    assert again.status_code == 403
    assert again.json()["error"] == "operation_replayed"
    released = await client.post(
        "/api/operations",
        content=signed(memory_mesh, "carol", RevocationKind.RELEASED),
        headers=JSON,
    )
    assert released.status_code == 200
    await wait_until(lambda: agent(monitor.snapshot(), carol)["status"] == "ok", "carol released")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            json.dumps({"action": "quarantine", "did": "did:key:z6Mk"}).encode(),
            "operation_unsigned",
        ),
        (b"{}", "operation_unsigned"),
        (b"not json at all", "operation_unsigned"),
    ],
)
async def test_bare_http_calls_are_refused(
    client: httpx.AsyncClient, monitor: MeshMonitor, body: bytes, code: str
) -> None:
    answer = await client.post("/api/operations", content=body, headers=JSON)
    assert answer.status_code == 403
    assert answer.json()["error"] == code
    assert monitor.revocations.listed() == {}


async def test_forged_and_unauthorised_operations_are_refused(
    client: httpx.AsyncClient, memory_mesh: SmallMesh, monitor: MeshMonitor
) -> None:
    stranger = AgentIdentity.generate()
    unauthorised = signed(memory_mesh, "alice", RevocationKind.QUARANTINED, stranger)
    answer = await client.post("/api/operations", content=unauthorised, headers=JSON)
    assert (answer.status_code, answer.json()["error"]) == (403, "operation_unauthorized")

    # Mallory signs, then claims the order came from the authority.
    document = json.loads(unauthorised)
    document["summary"]["issuer"] = memory_mesh.authority.did
    entry = sign_operation(stranger, memory_mesh.did("alice"), RevocationKind.QUARANTINED, "x")
    forged = replace(entry, issuer=memory_mesh.authority.did)
    body = json.dumps({**operation_document(forged), "summary": None}).encode()
    answer = await client.post("/api/operations", content=body, headers=JSON)
    assert (answer.status_code, answer.json()["error"]) == (403, "operation_signature_invalid")

    # An agent may not quarantine itself through the dashboard.
    own = signed(memory_mesh, "bob", RevocationKind.QUARANTINED, memory_mesh.identities["bob"])
    answer = await client.post("/api/operations", content=own, headers=JSON)
    assert (answer.status_code, answer.json()["error"]) == (403, "operation_unauthorized")
    assert monitor.revocations.listed() == {}


async def test_the_endpoint_wants_json_from_its_own_origin(
    client: httpx.AsyncClient, memory_mesh: SmallMesh
) -> None:
    body = signed(memory_mesh, "carol", RevocationKind.QUARANTINED)
    answer = await client.post(
        "/api/operations", content=body, headers={**JSON, "origin": "http://evil.example"}
    )
    assert (answer.status_code, answer.json()["error"]) == (403, "cross_origin")
    answer = await client.post(
        "/api/operations", content=body, headers={"content-type": "text/plain"}
    )
    assert (answer.status_code, answer.json()["error"]) == (403, "operation_unsigned")
    same = await client.post(
        "/api/operations", content=body, headers={**JSON, "origin": "http://127.0.0.1"}
    )
    assert same.status_code == 200


async def test_read_only_by_default(memory_mesh: SmallMesh, monitor: MeshMonitor) -> None:
    app = create_app(monitor)  # no operation handler
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as http:
        body = signed(memory_mesh, "carol", RevocationKind.QUARANTINED)
        answer = await http.post("/api/operations", content=body, headers=JSON)
        assert (answer.status_code, answer.json()["error"]) == (403, "actions_disabled")
        assert (await http.get("/api/operations")).status_code == 405
    assert monitor.revocations.listed() == {}


async def test_unknown_hosts_are_refused(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/state", headers={"host": "attacker.example:8787"})
    assert answer.status_code == 400
    assert (await client.get("/api/state", headers={"host": "localhost:8787"})).status_code == 200


def test_host_names() -> None:
    assert host_name("127.0.0.1:8787") == "127.0.0.1"
    assert host_name("[::1]:8787") == "::1"
    assert host_name("LocalHost") == "localhost"
    assert host_name("::1") == "::1"
