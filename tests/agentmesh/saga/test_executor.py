"""The agent side: each (kind, key) runs once, across duplicates and restarts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.saga import StepCall, StepExecutor
from agentmesh.saga.records import pack
from agentmesh.saga.wire import (
    STEP_TYPE,
    ReplyStatus,
    StepKind,
    StepReplyBody,
    StepRequestBody,
    decode_reply,
    encode_request,
)
from iatp.identity import AgentIdentity
from tests.conftest import TransportFactory


class Bank:
    def __init__(self) -> None:
        self.charges: list[str] = []
        self.refunds: list[str] = []

    async def charge(self, call: StepCall) -> dict[str, Any]:
        self.charges.append(call.key)
        return {"charge_id": f"ch-{len(self.charges)}"}

    async def refund(self, call: StepCall) -> dict[str, Any]:
        self.refunds.append(call.key)
        return {"refunded": call.forward_result, "state": call.forward_state}


async def setup(factory: TransportFactory, mesh: str, identity: AgentIdentity | None = None):  # type: ignore[no-untyped-def]
    bank = Bank()
    agent = MeshNode(
        identity or AgentIdentity.generate(),
        await factory.new("agent"),
        config=NodeConfig(mesh=mesh),
    )
    caller = MeshNode(
        AgentIdentity.generate(), await factory.new("caller"), config=NodeConfig(mesh=mesh)
    )
    await agent.start()
    await caller.start()
    executor = await StepExecutor.attach(
        agent, actions={"charge": bank.charge, "refund": bank.refund}
    )
    return bank, agent, caller, executor


def request(
    kind: StepKind = StepKind.FORWARD, params: dict[str, Any] | None = None, key: str = "o1.charge"
) -> StepRequestBody:
    action = "charge" if kind is StepKind.FORWARD else "refund"
    return StepRequestBody("o1", "charge", kind, action, key, params or {"amount": 5})


async def send(caller: MeshNode, agent: MeshNode, body: StepRequestBody) -> StepReplyBody:
    reply = await caller.request(agent.did, STEP_TYPE, encode_request(body), timeout=5)
    return decode_reply(reply.body)


async def test_duplicate_delivery_runs_once_and_replays_the_first_result(
    transport_factory: TransportFactory, uid: str
) -> None:
    bank, agent, caller, executor = await setup(transport_factory, uid)
    try:
        first = await send(caller, agent, request())
        again = await send(caller, agent, request())
        assert first.status is ReplyStatus.OK
        assert not first.duplicate
        assert again.duplicate
        assert again.result == first.result == {"charge_id": "ch-1"}
        assert bank.charges == ["o1.charge"]
        assert executor.counters.duplicates == 1
    finally:
        await caller.aclose()
        await agent.aclose()


async def test_same_key_other_parameters_is_refused_not_run(
    transport_factory: TransportFactory, uid: str
) -> None:
    bank, agent, caller, executor = await setup(transport_factory, uid)
    try:
        await send(caller, agent, request())
        forged = await send(caller, agent, request(params={"amount": 5000}))
        assert forged.status is ReplyStatus.REJECTED
        assert forged.code == "idempotency_conflict"
        assert bank.charges == ["o1.charge"]
        assert executor.counters.conflicts == 1
    finally:
        await caller.aclose()
        await agent.aclose()


async def test_idempotency_survives_the_agents_restart(
    transport_factory: TransportFactory, uid: str
) -> None:
    identity = AgentIdentity.generate()
    _bank, agent, caller, _ = await setup(transport_factory, uid, identity)
    first = await send(caller, agent, request())
    await agent.aclose()
    # The same agent (same DID) restarts with a fresh process state.
    agent = MeshNode(identity, await transport_factory.new("agent2"), config=NodeConfig(mesh=uid))
    await agent.start()
    fresh = Bank()
    await StepExecutor.attach(agent, actions={"charge": fresh.charge, "refund": fresh.refund})
    try:
        again = await send(caller, agent, request())
        assert again.duplicate
        assert again.result == first.result
        assert fresh.charges == []
    finally:
        await caller.aclose()
        await agent.aclose()


async def test_action_interrupted_by_a_crash_is_reported_in_doubt(
    transport_factory: TransportFactory, uid: str
) -> None:
    bank, agent, caller, executor = await setup(transport_factory, uid)
    body = request()
    # What a crashed earlier process of this agent left behind: "running", no reply.
    key = executor._key(StepKind.FORWARD, body.key)
    await executor.store.put(
        key,
        executor._seal(
            key, {"state": "running", "digest": body.digest(), "boot": "old", "reply": None}
        ),
    )
    try:
        reply = await send(caller, agent, body)
        assert reply.status is ReplyStatus.IN_DOUBT
        assert reply.code == "interrupted"
        assert bank.charges == []
        assert (await send(caller, agent, body)).status is ReplyStatus.IN_DOUBT  # stable
        # Its compensation runs, told that the forward action is in doubt.
        undo = await send(caller, agent, request(StepKind.COMPENSATE))
        assert undo.status is ReplyStatus.OK
        assert undo.result["state"] == "in_doubt"
    finally:
        await caller.aclose()
        await agent.aclose()


async def test_compensation_before_the_forward_fences_a_late_forward(
    transport_factory: TransportFactory, uid: str
) -> None:
    bank, agent, caller, _executor = await setup(transport_factory, uid)
    try:
        undo = await send(caller, agent, request(StepKind.COMPENSATE))
        assert undo.status is ReplyStatus.OK
        assert undo.result == {"noop": True}
        late = await send(caller, agent, request())
        assert late.status is ReplyStatus.FAILED
        assert late.code == "compensated_before_execution"
        assert bank.charges == []
        assert bank.refunds == []
    finally:
        await caller.aclose()
        await agent.aclose()


async def test_compensation_runs_once_with_the_forward_result(
    transport_factory: TransportFactory, uid: str
) -> None:
    bank, agent, caller, _ = await setup(transport_factory, uid)
    try:
        charged = await send(caller, agent, request())
        comp = StepRequestBody(
            "o1", "charge", StepKind.COMPENSATE, "refund", "o1.charge", {}, charged.result
        )
        first = await send(caller, agent, comp)
        second = await send(caller, agent, comp)
        assert first.result == {"refunded": {"charge_id": "ch-1"}, "state": "done"}
        assert second.duplicate
        assert bank.refunds == ["o1.charge"]
    finally:
        await caller.aclose()
        await agent.aclose()


async def test_malformed_step_message_and_unknown_action_are_refused(
    transport_factory: TransportFactory, uid: str
) -> None:
    _bank, agent, caller, _ = await setup(transport_factory, uid)
    try:
        reply = await caller.request(agent.did, STEP_TYPE, b"\x92\x01", timeout=5)
        decoded = decode_reply(reply.body)
        assert decoded.status is ReplyStatus.REJECTED
        assert decoded.code == "saga_bad_step_message"
        odd = StepRequestBody("o1", "x", StepKind.FORWARD, "teleport", "o1.x", {})
        answer = await send(caller, agent, odd)
        assert answer.status is ReplyStatus.FAILED
        assert answer.code == "unknown_action"
        assert "bad_step_message" in agent.audit.codes("saga_step")  # type: ignore[attr-defined]
    finally:
        await caller.aclose()
        await agent.aclose()


async def test_forged_idempotency_records_are_refused_never_trusted(
    transport_factory: TransportFactory, uid: str
) -> None:
    """Someone with write access to the KV bucket plants a "done" answer or garbage."""
    bank, agent, caller, executor = await setup(transport_factory, uid)
    body = request()
    key = executor._key(StepKind.FORWARD, body.key)
    planted = {
        "state": "done",
        "digest": body.digest(),
        "boot": "x",
        "reply": {"status": "ok", "result": {"charge_id": "forged"}, "code": "", "detail": ""},
    }
    other = AgentIdentity.generate()
    inner = pack(planted)
    try:
        for value in (
            pack(planted),  # unsigned
            pack(
                [
                    inner,
                    other.sign(
                        b"agentmesh/1/saga-idempotency\x00" + key.encode() + b"\x00" + inner
                    ),
                ]
            ),
            b"\xc1garbage",
        ):
            await executor.store.put(key, value)
            reply = await send(caller, agent, body)
            assert reply.status is ReplyStatus.REJECTED
            assert reply.code == "idempotency_record_invalid"
        assert bank.charges == []
        assert executor.counters.tampered == 3
        assert "idempotency_record_invalid" in agent.audit.codes("saga_step")  # type: ignore[attr-defined]
    finally:
        await caller.aclose()
        await agent.aclose()


async def test_retry_while_the_same_incarnation_runs_gets_the_real_outcome(
    transport_factory: TransportFactory, uid: str
) -> None:
    """A coordinator retries (its first request timed out) while the action still runs."""
    bank, agent, caller, executor = await setup(transport_factory, uid)
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_charge(call: StepCall) -> dict[str, Any]:
        started.set()
        await release.wait()
        charged: dict[str, Any] = await bank.charge(call)
        return charged

    executor.actions["charge"] = slow_charge
    try:
        first = asyncio.create_task(send(caller, agent, request()))
        await started.wait()
        retry = asyncio.create_task(send(caller, agent, request()))
        await asyncio.sleep(0.05)
        assert not retry.done()  # it waits for the live run, it does not answer in doubt
        release.set()
        original, again = await first, await retry
        assert original.status is again.status is ReplyStatus.OK
        assert again.result == original.result == {"charge_id": "ch-1"}
        assert again.duplicate
        assert bank.charges == ["o1.charge"]
        assert executor.counters.in_doubt == 0
    finally:
        release.set()
        await caller.aclose()
        await agent.aclose()


async def test_compensation_of_a_live_forward_run_waits_for_its_real_outcome(
    transport_factory: TransportFactory, uid: str
) -> None:
    """The coordinator gave the forward up (timeout) and compensates while it still runs
    here: the compensation joins the live run and is told it is done, after it ended."""
    bank, agent, caller, executor = await setup(transport_factory, uid)
    started = asyncio.Event()
    release = asyncio.Event()
    order: list[str] = []

    async def slow_charge(call: StepCall) -> dict[str, Any]:
        started.set()
        await release.wait()
        order.append("charge")
        charged: dict[str, Any] = await bank.charge(call)
        return charged

    async def refund(call: StepCall) -> dict[str, Any]:
        order.append("refund")
        refunded: dict[str, Any] = await bank.refund(call)
        return refunded

    executor.actions["charge"] = slow_charge
    executor.actions["refund"] = refund
    try:
        forward = asyncio.create_task(send(caller, agent, request()))
        await started.wait()
        undo = asyncio.create_task(send(caller, agent, request(StepKind.COMPENSATE)))
        await asyncio.sleep(0.05)
        assert not undo.done()
        release.set()
        assert (await forward).status is ReplyStatus.OK
        compensated = await undo
        assert compensated.status is ReplyStatus.OK
        assert compensated.result["state"] == "done"  # not "in_doubt": it ran here, live
        assert order == ["charge", "refund"]
        assert executor.counters.joined == 1
        assert executor.counters.in_doubt == 0
    finally:
        release.set()
        await caller.aclose()
        await agent.aclose()


async def test_running_record_of_another_incarnation_is_in_doubt(
    transport_factory: TransportFactory, uid: str
) -> None:
    """A real first incarnation is stopped mid-action; the agent's next one (same DID)
    answers the retry in doubt and never runs the action again."""
    identity = AgentIdentity.generate()
    bank, agent, caller, executor = await setup(transport_factory, uid, identity)
    started = asyncio.Event()

    async def hanging_charge(call: StepCall) -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()  # never ends: the process dies first
        raise AssertionError("unreachable")

    executor.actions["charge"] = hanging_charge
    pending = asyncio.create_task(send(caller, agent, request()))
    await started.wait()
    await agent.aclose()  # the first incarnation goes away mid-action
    pending.cancel()
    agent = MeshNode(identity, await transport_factory.new("agent2"), config=NodeConfig(mesh=uid))
    await agent.start()
    fresh = Bank()
    second = await StepExecutor.attach(agent, actions={"charge": fresh.charge})
    try:
        assert second.incarnation != executor.incarnation
        key = second._key(StepKind.FORWARD, "o1.charge")
        stored = await second._get(key)
        assert stored is not None
        assert stored[0]["state"] == "running"
        assert stored[0]["incarnation"] == executor.incarnation
        reply = await send(caller, agent, request())
        assert reply.status is ReplyStatus.IN_DOUBT
        assert reply.code == "interrupted"
        assert fresh.charges == []
        assert bank.charges == []
        assert second.counters.in_doubt == 1
        assert second.counters.joined == 0
    finally:
        await caller.aclose()
        await agent.aclose()


async def test_abandoned_run_of_this_incarnation_is_in_doubt(
    transport_factory: TransportFactory, uid: str
) -> None:
    """Same incarnation but no live run (its handler was cancelled): in doubt, as a crash."""
    bank, agent, caller, executor = await setup(transport_factory, uid)
    body = request()
    key = executor._key(StepKind.FORWARD, body.key)
    await executor.store.put(key, executor._record(key, body.digest(), "running"))
    try:
        reply = await send(caller, agent, body)
        assert reply.status is ReplyStatus.IN_DOUBT
        assert bank.charges == []
    finally:
        await caller.aclose()
        await agent.aclose()


def test_store_retry_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="store_retry_s"):
        StepExecutor(None, None, store_retry_s=0)  # type: ignore[arg-type]
