"""Attacks on a secured broker, each tried with a plain nats-py client against a real server.

Every test runs honest traffic between two agents (signed and session requests)
for the whole attack and checks at the end that every honest request was served:
the attack is refused *and* the mesh keeps working. Each test fails if the
defence it names is removed (open permissions, an open server, no limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import pytest

from agentmesh.broker.config import Limits
from agentmesh.broker.jwt import SubjectRules, UserPermissions, encode_jwt, user_claims
from agentmesh.broker.nkeys import KeyRole, user_nkey_for_did
from agentmesh.broker.subject_map import Role
from agentmesh.directory import Directory, RevocationList
from agentmesh.errors import StreamError
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.trustnet.ledger import ReceiptLedger, receipt_subject
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities, RevocationKind, sign_revocation
from tests.agentmesh.broker.securemesh import Member, SecureMesh
from tests.attacks.broker_attacker import Attacker, attacker
from trust import Outcome, Receipt, TrustEngine, sign_receipt

pytestmark = pytest.mark.nats


@dataclass
class Honest:
    """Two agents that keep working while an attack runs."""

    sm: SecureMesh
    alice: Member
    bob: Member
    served: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def cards(self) -> str:
        return f"$KV.{self.sm.mesh}_registry_cards"


async def _serve(message: InboundMessage) -> bytes:
    return message.body


@contextlib.asynccontextmanager
async def honest_mesh(sm: SecureMesh) -> AsyncIterator[Honest]:
    honest = Honest(sm, sm.member(), sm.member())
    alice = MeshNode(
        honest.alice.identity, await sm.connect(honest.alice), config=NodeConfig(mesh=sm.mesh)
    )
    bob = MeshNode(
        honest.bob.identity, await sm.connect(honest.bob), config=NodeConfig(mesh=sm.mesh)
    )
    bob.handle("work", _serve)
    async with alice, bob:
        directory = Directory(bob.transport, mesh=sm.mesh)
        await directory.start()
        await directory.register(honest.bob.identity, display_name="bob")
        await alice.handshake(bob.did)
        stop = asyncio.Event()

        async def work() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                body = f"job {n}".encode()
                try:
                    reply = await alice.request(bob.did, "work", body, via_session=n % 2 == 0)
                    if reply.body != body:
                        honest.failures.append(f"job {n}: wrong reply")
                    honest.served += 1
                except Exception as exc:
                    honest.failures.append(f"job {n}: {exc!r}")
                await asyncio.sleep(0.01)

        task = asyncio.create_task(work())
        try:
            yield honest
        finally:
            await asyncio.sleep(0.1)
            stop.set()
            await task
            await directory.aclose()
    assert honest.failures == []
    assert honest.served >= 5


@contextlib.asynccontextmanager
async def as_agent(sm: SecureMesh, member: Member | None = None) -> AsyncIterator[Attacker]:
    """A raw client holding a valid agent credential (its own key, its own JWT)."""
    member = member or sm.member(Role.AGENT)
    async with attacker(sm.url, identity=member.identity, user_jwt=member.user_jwt) as client:
        yield client


async def kv_value(sm: SecureMesh, bucket: str, key: str) -> bytes | None:
    transport = await sm.connect(sm.authority, name="inspector")
    kv = await transport.key_value(bucket)
    try:
        return (await kv.get(key)).value
    except Exception:
        return None


# -- at the door ---------------------------------------------------------------------------


async def test_client_without_credentials_is_refused(sm: SecureMesh) -> None:
    async with honest_mesh(sm):
        with pytest.raises(nats.errors.Error):
            async with attacker(sm.url):
                pass


async def test_key_without_a_jwt_is_refused(sm: SecureMesh) -> None:
    async with honest_mesh(sm):
        with pytest.raises(nats.errors.Error):
            async with attacker(sm.url, identity=AgentIdentity.generate()):
                pass


async def test_self_issued_jwt_is_refused(sm: SecureMesh) -> None:
    """Mallory signs her own JWT granting herself everything, claiming the mesh account."""
    mallory = AgentIdentity.generate()
    claims = user_claims(
        user_nkey_for_did(mallory.did),
        name="mallory",
        issuer_account=sm.config.account,
        permissions=UserPermissions(SubjectRules(allow=(">",)), SubjectRules(allow=(">",))),
    )
    forged = encode_jwt(claims, mallory, KeyRole.ACCOUNT)
    async with honest_mesh(sm):
        with pytest.raises(nats.errors.Error):
            async with attacker(sm.url, identity=mallory, user_jwt=forged):
                pass


async def test_another_agents_jwt_without_its_key_is_refused(sm: SecureMesh) -> None:
    async with honest_mesh(sm) as honest:
        stolen = honest.bob.user_jwt  # JWTs are public: holding one proves nothing
        with pytest.raises(nats.errors.Error):
            async with attacker(sm.url, identity=AgentIdentity.generate(), user_jwt=stolen):
                pass


async def test_expired_jwt_is_refused(sm: SecureMesh) -> None:
    member = sm.member(expires_in=1)
    await asyncio.sleep(2.1)
    async with honest_mesh(sm):
        with pytest.raises(nats.errors.Error):
            async with as_agent(sm, member):
                pass


# -- reading what is not yours ---------------------------------------------------------------


async def test_agent_cannot_read_another_agents_inbox_session_or_replies(sm: SecureMesh) -> None:
    async with honest_mesh(sm) as honest, as_agent(sm) as mallory:
        bob, alice = honest.bob.key, honest.alice.key
        seen: list[str] = []

        async def spy(msg: object) -> None:
            seen.append(getattr(msg, "subject", "?"))

        for subject in (
            f"{sm.mesh}.agent.{bob}.inbox",
            f"{sm.mesh}.agent.{bob}.session",
            f"{sm.mesh}.agent.{bob}.handshake",
            f"{sm.mesh}.agent.*.inbox",
            f"_INBOX.{alice}.>",
            ">",
        ):
            with contextlib.suppress(Exception):
                await mallory.nc.subscribe(subject, cb=spy)
        await mallory.settle()
        await asyncio.sleep(0.5)  # honest traffic flows meanwhile
        assert mallory.refused()
        assert sum("permissions violation" in e for e in mallory.errors) == 6
        assert seen == []


# -- writing what is not yours ---------------------------------------------------------------


async def test_agent_cannot_overwrite_delete_or_purge_another_agents_card(sm: SecureMesh) -> None:
    async with honest_mesh(sm) as honest, as_agent(sm) as mallory:
        bucket = f"{sm.mesh}_registry_cards"
        before = await kv_value(sm, bucket, honest.bob.key)
        assert before is not None
        subject = f"{honest.cards}.{honest.bob.key}"
        await mallory.attempt(mallory.nc.request(subject, b"{}", timeout=1))
        await mallory.attempt(
            mallory.nc.request(subject, b"", timeout=1, headers={"KV-Operation": "DEL"})
        )
        await mallory.attempt(
            mallory.nc.request(
                subject,
                b"",
                timeout=1,
                headers={"KV-Operation": "PURGE", "Nats-Rollup": "sub"},
            )
        )
        await mallory.settle()
        assert mallory.refused()
        assert await kv_value(sm, bucket, honest.bob.key) == before


async def test_agent_cannot_lift_a_revocation_or_write_a_pin(sm: SecureMesh) -> None:
    victim = AgentIdentity.generate()
    transport = await sm.connect(sm.authority, name="authority")
    revocations = RevocationList(
        transport,
        mesh=sm.mesh,
        authorities=RevocationAuthorities(mesh=frozenset({sm.authority.did})),
    )
    async with revocations:
        entry = sign_revocation(
            sm.authority.identity,
            subject=victim.did,
            kind=RevocationKind.REVOKED,
            reason="compromised",
            issued_at_ms=int(time.time() * 1000),
            sequence=0,
        )
        await revocations.issue(entry, signer=sm.authority.identity)
        log = revocations.log.log(sm.authority.did)
        index = next(i for i, e in log.entries.items() if e == entry)
    bucket = f"{sm.mesh}_registry_revocations"
    key = f"{sm.authority.key}.{index}"
    async with honest_mesh(sm), as_agent(sm, sm.member(identity=victim)) as mallory:
        subject = f"$KV.{bucket}.{key}"
        for headers in ({"KV-Operation": "DEL"}, {"KV-Operation": "PURGE", "Nats-Rollup": "sub"}):
            await mallory.attempt(mallory.nc.request(subject, b"", timeout=1, headers=headers))
        pins = f"$KV.{sm.mesh}_registry_pins.{victim.did[8:]}.x"
        await mallory.attempt(mallory.nc.request(pins, b'{"approved": true}', timeout=1))
        await mallory.settle()
        assert sum("permissions violation" in e for e in mallory.errors) == 3
    assert await kv_value(sm, bucket, key) == entry.encode()


async def test_agent_cannot_publish_receipts_as_another_agent(sm: SecureMesh) -> None:
    async with honest_mesh(sm) as honest, as_agent(sm) as mallory:
        transport = await sm.connect(sm.authority, name="ledger")
        ledger = await ReceiptLedger.open(transport, TrustEngine(), mesh=sm.mesh)
        last = await ledger.stream.last_seq()
        # A receipt "by Alice" that Alice never signed, and a genuine-looking one by Mallory,
        # both put on Alice's subject.
        claim = Receipt.create(
            observer=honest.alice.did,
            subject=honest.bob.did,
            interaction_id="x",
            outcome=Outcome.FAILURE,
            at_ms=int(time.time() * 1000),
        )
        signed = sign_receipt(
            Receipt.create(
                observer=honest.alice.did,
                subject=honest.bob.did,
                interaction_id="y",
                outcome=Outcome.FAILURE,
                at_ms=claim.at_ms,
            ),
            honest.alice.identity,  # even a genuine receipt cannot be re-published there
        )
        subject = receipt_subject(sm.mesh, honest.alice.did)
        await mallory.attempt(mallory.nc.request(subject, signed.encode(), timeout=1))
        await mallory.settle()
        assert mallory.refused()
        assert await ledger.stream.last_seq() == last
        await ledger.aclose()


async def test_agent_cannot_send_kill_switch_broadcasts_or_push_account_claims(
    sm: SecureMesh,
) -> None:
    async with honest_mesh(sm) as honest, as_agent(sm) as mallory:
        await mallory.nc.publish(f"{sm.mesh}.ctl.quarantine", b"forged order")
        account_jwt = sm.powers.account_jwt()  # even a genuine account JWT
        await mallory.attempt(
            mallory.nc.request("$SYS.REQ.CLAIMS.UPDATE", account_jwt.encode(), timeout=1)
        )
        await mallory.settle()
        assert sum("permissions violation" in e for e in mallory.errors) == 2
        assert honest.failures == []


# -- the store itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "api",
    [
        "STREAM.PURGE.{revocations}",
        "STREAM.DELETE.{trust}",
        "STREAM.UPDATE.{revocations}",
        "STREAM.MSG.DELETE.{cards}",
        "CONSUMER.DELETE.{cards}.anything",
        "CONSUMER.DURABLE.CREATE.{trust}.mallory",
        "CONSUMER.LIST.{cards}",
        "STREAM.LIST",
    ],
)
async def test_agent_cannot_purge_delete_or_reconfigure_stores(sm: SecureMesh, api: str) -> None:
    names = {
        "revocations": f"KV_{sm.mesh}_registry_revocations",
        "cards": f"KV_{sm.mesh}_registry_cards",
        "trust": f"TRUST-{sm.mesh}",
    }
    subject = "$JS.API." + api.format(**names)
    inspector = await sm.connect(sm.authority, name="inspector")
    before = json.loads(
        (await inspector.request(f"$JS.API.STREAM.INFO.{names['cards']}", b"", timeout=2)).data
    )
    async with honest_mesh(sm), as_agent(sm) as mallory:
        answer = await mallory.attempt(
            mallory.nc.request(subject, json.dumps({"config": {"name": "x"}}).encode(), timeout=1)
        )
        await mallory.settle()
        assert answer is None
        assert mallory.refused()
    after = json.loads(
        (await inspector.request(f"$JS.API.STREAM.INFO.{names['cards']}", b"", timeout=2)).data
    )
    assert after["state"]["messages"] >= before["state"]["messages"]
    assert after["config"] == before["config"]


# -- limits ---------------------------------------------------------------------------------


async def test_agent_over_its_payload_limit_is_cut_off(sm: SecureMesh) -> None:
    async with honest_mesh(sm) as honest, as_agent(sm) as mallory:
        mallory.nc._max_payload = 64 * 1024 * 1024  # a client that ignores the server's INFO
        big = b"x" * (sm.config.limits.agent_max_payload + 1)
        with contextlib.suppress(Exception):
            await mallory.nc.publish(f"{sm.mesh}.agent.{honest.bob.key}.inbox", big)
            await mallory.nc.flush(timeout=2)
        for _ in range(50):
            if mallory.nc.is_closed or not mallory.nc.is_connected:
                break
            await asyncio.sleep(0.05)
        assert not mallory.nc.is_connected


async def test_agent_over_its_subscription_limit_is_cut_off(sm: SecureMesh) -> None:
    limit = sm.config.limits.agent_max_subscriptions
    async with honest_mesh(sm), as_agent(sm) as mallory:
        key = mallory.nc._inbox_prefix.decode().split(".")[1]
        with contextlib.suppress(Exception):
            for n in range(limit + 5):
                await mallory.nc.subscribe(f"{sm.mesh}.agent.{key}.x{n}")
            await mallory.nc.flush(timeout=2)
        for _ in range(50):
            if not mallory.nc.is_connected:
                break
            await asyncio.sleep(0.05)
        assert not mallory.nc.is_connected
        assert "maximum subscriptions" in str(mallory.nc.last_error).lower()


async def test_agent_cannot_fill_a_shared_stream_beyond_its_quota(tmp_path: Path) -> None:
    """Per-subject quotas: Mallory's own receipts stop at her quota; Alice's still go in."""
    async with SecureMesh(tmp_path, limits=Limits(receipts_per_observer=3)) as small:
        mallory, alice = small.member(), small.member()
        mine = await (await small.connect(mallory)).stream(
            f"TRUST-{small.mesh}", [f"trust.{small.mesh}.receipt.*"]
        )
        for n in range(3):
            await mine.append(receipt_subject(small.mesh, mallory.did), b"r%d" % n)
        with pytest.raises(StreamError, match="quota"):
            await mine.append(receipt_subject(small.mesh, mallory.did), b"one too many")
        theirs = await (await small.connect(alice)).stream(
            f"TRUST-{small.mesh}", [f"trust.{small.mesh}.receipt.*"]
        )
        await theirs.append(receipt_subject(small.mesh, alice.did), b"still room for alice")
        assert await theirs.last_seq() == 4
