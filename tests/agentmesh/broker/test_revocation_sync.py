"""Revocation at the broker: a revoked or quarantined agent is disconnected and kept out."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from agentmesh.broker.errors import ClaimsUpdateFailed
from agentmesh.broker.nkeys import user_nkey_for_did
from agentmesh.broker.revocation_sync import BrokerRevoker, broker_revocations, push_account_jwt
from agentmesh.broker.session import authority_session
from agentmesh.directory import RevocationList
from agentmesh.errors import AccessRevoked, AuthenticationFailed
from agentmesh.transport.base import TransportState
from agentmesh.transport.nats import NatsTransport
from registry.revocation import RevocationAuthorities, RevocationKind, sign_revocation
from tests.agentmesh.broker.securemesh import Member, SecureMesh

pytestmark = pytest.mark.nats


async def closed_within(transport: NatsTransport, seconds: float) -> float:
    """Seconds until ``transport`` is closed for good (fails after ``seconds``)."""
    started = time.monotonic()
    while transport.state is not TransportState.CLOSED:
        if time.monotonic() - started > seconds:
            raise AssertionError(f"still connected after {seconds}s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def order(
    sm: SecureMesh, revocations: RevocationList, member: Member, kind: RevocationKind
) -> None:
    entry = sign_revocation(
        sm.authority.identity,
        subject=member.did,
        kind=kind,
        reason=kind.value,
        issued_at_ms=int(time.time() * 1000),
        sequence=len(revocations.entries(member.did)),
    )
    await revocations.issue(entry)


async def test_revoked_agent_is_disconnected_and_cannot_reconnect(sm: SecureMesh) -> None:
    victim, bystander = sm.member(), sm.member()
    connection = await sm.connect(victim, name="victim")
    other = await sm.connect(bystander, name="bystander")
    async with authority_session(sm.directory, sm.authority.identity, url=sm.url) as session:
        revocations = session.revocation_list()
        async with revocations:
            revoker = BrokerRevoker(session.powers, session.system, revocations)
            await order(sm, revocations, victim, RevocationKind.REVOKED)
            assert await revoker.sync()
            took = await closed_within(connection, 1.0)
    assert took < 1.0
    with pytest.raises(AccessRevoked):
        await connection.flush()
    with pytest.raises(AuthenticationFailed):
        await sm.connect(victim, name="victim-again")
    assert other.is_connected  # only the revoked agent was cut off
    await other.flush()


async def test_quarantine_disconnects_and_release_lets_the_agent_back(sm: SecureMesh) -> None:
    agent = sm.member()
    connection = await sm.connect(agent, name="agent")
    async with authority_session(sm.directory, sm.authority.identity, url=sm.url) as session:
        revocations = session.revocation_list()
        async with revocations:
            revoker = BrokerRevoker(session.powers, session.system, revocations)
            await order(sm, revocations, agent, RevocationKind.QUARANTINED)
            await revoker.sync()
            await closed_within(connection, 1.0)
            with pytest.raises(AuthenticationFailed):
                await sm.connect(agent, name="while-quarantined")
            await order(sm, revocations, agent, RevocationKind.RELEASED)
            assert await revoker.sync()
    back = await sm.connect(agent, name="released")
    await back.flush()
    assert back.is_connected


async def test_run_follows_changes_made_by_another_authority_process(sm: SecureMesh) -> None:
    """The warden loop: an entry stored by someone else reaches the broker by itself."""
    agent = sm.member()
    connection = await sm.connect(agent, name="agent")
    async with authority_session(sm.directory, sm.authority.identity, url=sm.url) as session:
        watched = session.revocation_list()
        async with watched:
            revoker = BrokerRevoker(session.powers, session.system, watched)
            task = asyncio.create_task(revoker.run(resync_every=60))
            try:
                other_process = session.revocation_list()  # another CLI, elsewhere
                async with other_process:
                    await order(sm, other_process, agent, RevocationKind.QUARANTINED)
                await closed_within(connection, 2.0)
            finally:
                task.cancel()
    assert revoker.pushes >= 2  # the first full push, then the change


async def test_the_account_jwt_is_a_function_of_the_list(sm: SecureMesh) -> None:
    revoked, quarantined, released = sm.member(), sm.member(), sm.member()
    transport = await sm.connect(sm.authority, name="authority")
    revocations = RevocationList(
        transport,
        mesh=sm.mesh,
        authorities=RevocationAuthorities(mesh=frozenset({sm.authority.did})),
    )
    async with revocations:
        await order(sm, revocations, revoked, RevocationKind.REVOKED)
        await order(sm, revocations, quarantined, RevocationKind.QUARANTINED)
        await order(sm, revocations, released, RevocationKind.QUARANTINED)
        await order(sm, revocations, released, RevocationKind.RELEASED)
        wanted = broker_revocations(revocations)
    assert user_nkey_for_did(revoked.did) in wanted
    assert user_nkey_for_did(quarantined.did) in wanted
    assert user_nkey_for_did(released.did) not in wanted
    assert all(t <= time.time() for t in wanted.values())


async def test_an_account_jwt_not_signed_by_the_authority_lifts_nothing(sm: SecureMesh) -> None:
    """Only system-account users can push claims (the authority alone holds one); even
    from there, an account JWT signed by another key does not change what the server
    enforces. (nats-server 2.9.10 answers such a push with code 200 and logs "account
    validation failed": the answer alone proves nothing, the enforcement does.)"""
    from agentmesh.broker.authority import MeshAuthority
    from iatp.identity import AgentIdentity

    agent = sm.member()
    async with authority_session(sm.directory, sm.authority.identity, url=sm.url) as session:
        revocations = session.revocation_list()
        async with revocations:
            await order(sm, revocations, agent, RevocationKind.REVOKED)
            await BrokerRevoker(session.powers, session.system, revocations).sync()
        impostor = AgentIdentity.generate()
        config = sm.config.model_copy(update={"authority_did": impostor.did})
        forged = MeshAuthority(config, impostor).account_jwt(revocations={})
        with contextlib.suppress(ClaimsUpdateFailed):
            await push_account_jwt(session.system, forged)
    with pytest.raises(AuthenticationFailed):
        await sm.connect(agent, name="still-revoked")
