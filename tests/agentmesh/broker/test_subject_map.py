"""The subject map, enforced by a real nats-server: every row tried both ways, for every kind.

For each row, an identity of each kind publishes (or subscribes) once on a concrete
subject the row covers: kinds the row grants must get through, the others must get
a permissions violation. Rows under ``{key}`` are also tried with another agent's
key, which only the authority may use.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentmesh.broker.subject_map import (
    Grant,
    Role,
    TopicGrants,
    permissions_for,
    render_stores,
    render_subject_map,
    subject_map,
)
from agentmesh.errors import PermissionDenied
from agentmesh.transport.nats import NatsTransport
from iatp.identity import AgentIdentity
from tests.agentmesh.broker.securemesh import SecureMesh

TOPIC = "news"
DOCS = Path(__file__).parents[3] / "docs" / "broker.md"


def probe_rows(mesh: str) -> list[Grant]:
    """Rows a probe can try literally (the reply and JetStream API rows have their own tests)."""
    return [g for g in subject_map(mesh).grants if not g.pattern.startswith(("(", "$JS.API."))]


def concrete(pattern: str, key: str, peer: str) -> str:
    return (
        pattern.replace("{key}", key)
        .replace("{topic}", TOPIC)
        .replace("*", peer)
        .replace(">", "probe")
    )


async def allowed(transport: NatsTransport, direction: str, subject: str) -> bool:
    if direction == "sub":
        try:
            subscription = await transport.subscribe(subject, _ignore)
        except PermissionDenied:
            return False
        await subscription.unsubscribe()
        return True
    started = time.monotonic()
    await transport.publish(subject, b"probe")
    await transport.flush(timeout=2.0)  # the server answers a refused PUB before the PONG
    return transport.denied_since(started, subject) is None


async def _ignore(message: object) -> None:
    return None


def test_docs_show_the_generated_subject_map() -> None:
    text = DOCS.read_text()
    smap = subject_map("agentmesh")
    assert render_subject_map(smap) in text, "regenerate: agentmesh mesh subject-map"
    assert render_stores(smap) in text, "regenerate: agentmesh mesh subject-map"


def test_permissions_name_only_the_identitys_own_key() -> None:
    smap = subject_map("m")
    me, other = AgentIdentity.generate(), AgentIdentity.generate()
    for role in Role:
        if role is Role.AUTHORITY:
            continue
        perms = permissions_for(role, me.did, smap, TopicGrants(publish=("t",)))
        text = " ".join(perms.publish.allow + perms.subscribe.allow)
        assert other.did[8:] not in text
        assert ">" not in perms.publish.allow
        assert ">" not in perms.subscribe.allow
        assert "$JS.API.STREAM.PURGE.>" in perms.publish.deny


@pytest.mark.nats
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
async def test_every_row_both_ways(sm: SecureMesh, role: Role) -> None:
    topics = TopicGrants(publish=(TOPIC,), subscribe=(TOPIC,))
    member = sm.authority if role is Role.AUTHORITY else sm.member(role, topics=topics)
    transport = await sm.connect(member, name=role.value)
    peer = AgentIdentity.generate().did[8:]
    wrong: list[str] = []
    tried = 0
    for grant in probe_rows(sm.mesh):
        expect = role is Role.AUTHORITY or role in grant.roles
        cases = [(concrete(grant.pattern, member.key, peer), expect)]
        if "{key}" in grant.pattern:  # someone else's key: the authority's alone
            cases.append((concrete(grant.pattern, peer, peer), role is Role.AUTHORITY))
        for subject, want in cases:
            tried += 1
            got = await allowed(transport, grant.direction, subject)
            if got != want:
                wrong.append(f"{grant.direction} {subject}: allowed={got}, expected {want}")
    assert tried >= 25
    assert wrong == []
    assert transport.is_connected  # violations do not cost an honest connection


@pytest.mark.nats
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
async def test_jetstream_reads_follow_each_stores_readers(sm: SecureMesh, role: Role) -> None:
    member = sm.authority if role is Role.AUTHORITY else sm.member(role)
    transport = await sm.connect(member, name=f"js-{role.value}")
    wrong = []
    for store in sm.powers.subjects.stores:
        subject = f"$JS.API.STREAM.INFO.{store.name}"
        want = role is Role.AUTHORITY or role in store.readers
        try:
            reply = await transport.request(subject, b"", timeout=1.0)
            got = b'"error"' not in reply.data
        except PermissionDenied:
            got = False
        if got != want:
            wrong.append(f"{store.name}: readable={got}, expected {want}")
    assert wrong == []
