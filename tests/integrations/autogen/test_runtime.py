"""MeshAgentRuntime as an AutoGen AgentRuntime: one behaviour suite, in memory and over NATS.

Every test runs twice (``transport_factory``): on the in-memory bus and against a
real nats-server, with each runtime on its own connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from autogen_core import (
    AgentId,
    AgentRuntime,
    BaseAgent,
    CancellationToken,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    message_handler,
    try_get_known_serializers_for_type,
)
from autogen_core.exceptions import (
    CantHandleException,
    NotAccessibleError,
    UndeliverableException,
)

from agentmesh.errors import RemoteError
from agentmesh.integrations.autogen import (
    AgentUnreachable,
    DeliveryRefused,
    MeshAgentRuntime,
    OutboundRefused,
    RemoteCantHandle,
    RemoteHandlerError,
    RuntimeNotRunning,
    SenderNotHosted,
)
from agentmesh.integrations.autogen.wire import Routing, capability_for, envelope_type
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.policy.engine import CompiledPolicy
from iatp.identity import AgentIdentity
from tests.agentmesh.transport.waiting import eventually
from tests.integrations.autogen.conftest import Runtimes


@dataclass
class Ping:
    text: str


@dataclass
class Pong:
    text: str
    sender: str


@dataclass
class Boom:
    kind: str


@dataclass
class Secret:
    text: str


@dataclass
class Unhandled:
    text: str


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echoes pings")
        self.seen: list[tuple[str, str | None, TopicId | None]] = []

    @message_handler
    async def ping(self, message: Ping, ctx: MessageContext) -> Pong:
        self.seen.append((message.text, str(ctx.sender) if ctx.sender else None, ctx.topic_id))
        return Pong(message.text + "!", str(ctx.sender))

    @message_handler
    async def boom(self, message: Boom, ctx: MessageContext) -> None:
        if message.kind == "cant":
            raise CantHandleException("not today")
        raise ValueError("boom")

    @message_handler
    async def secret(self, message: Secret, ctx: MessageContext) -> Pong:
        return Pong(message.text, "")

    async def save_state(self) -> Mapping[str, Any]:
        return {"seen": [text for text, _, _ in self.seen]}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.seen = [(text, None, None) for text in state["seen"]]


class Caller(RoutedAgent):
    """Forwards a Ping to the echo agent, as itself (the runtime signs as its host)."""

    def __init__(self) -> None:
        super().__init__("calls the echo agent")
        self.heard: list[str] = []

    @message_handler
    async def relay(self, message: Ping, ctx: MessageContext) -> Pong | None:
        if not ctx.is_rpc:  # a publish it is subscribed to
            self.heard.append(message.text)
            return None
        reply = await self.send_message(Ping(message.text), AgentId("echo", "default"))
        assert isinstance(reply, Pong)
        return reply

    @message_handler
    async def announce(self, message: Secret, ctx: MessageContext) -> None:
        await self.publish_message(Ping(message.text), TopicId("news", "k"))


def pong_serializer(runtime: MeshAgentRuntime) -> None:
    runtime.add_message_serializer(try_get_known_serializers_for_type(Pong))


async def test_a_mesh_runtime_is_an_autogen_agent_runtime(runtimes: Runtimes) -> None:
    runtime = await runtimes.new()
    assert isinstance(runtime, AgentRuntime)


async def test_send_message_is_a_signed_request_to_the_recipients_own_identity(
    runtimes: Runtimes,
) -> None:
    a, b = await runtimes.new(), await runtimes.new()
    await Echo.register(b, "echo", Echo)
    await Caller.register(a, "caller", Caller)
    pong_serializer(a)
    echo_did = b.did_of("echo")
    assert echo_did is not None
    assert echo_did != b.did
    card = b.directory.get(echo_did)
    assert [c.name for c in card.capabilities] == [capability_for("echo")]

    assert await a.send_message(Ping("hi"), AgentId("echo", "default")) == Pong("hi!", "None")
    relayed = await a.send_message(Ping("via"), AgentId("caller", "default"))
    assert relayed == Pong("via!", "caller/default")  # the sender survived the mesh

    echo = await b.try_get_underlying_agent_instance(AgentId("echo", "default"), Echo)
    assert [(text, sender) for text, sender, _ in echo.seen] == [
        ("hi", None),
        ("via", "caller/default"),
    ]
    node = b.nodes[echo_did]
    assert node.counters.accepted == 2
    assert node.counters.handled == 2
    assert a.rejected() == {}
    assert b.rejected() == {}


async def test_publish_reaches_subscribed_agents_of_every_runtime_but_its_sender(
    runtimes: Runtimes,
) -> None:
    a, b = await runtimes.new(), await runtimes.new()
    for runtime in (a, b):
        await Echo.register(runtime, "echo-" + runtime.did[-4:], Echo)
        await runtime.add_subscription(TypeSubscription("news", "echo-" + runtime.did[-4:]))
    await Caller.register(a, "caller", Caller)
    await a.add_subscription(TypeSubscription("news", "caller"))

    await a.send_message(Secret("extra!"), AgentId("caller", "k"))
    await a.publish_message(Ping("direct"), TopicId("news", "k"))
    for runtime in (a, b):
        echo = await runtime.try_get_underlying_agent_instance(
            AgentId("echo-" + runtime.did[-4:], "k"), Echo
        )
        for _ in range(100):
            if len(echo.seen) == 2:
                break
            await asyncio.sleep(0.02)
        assert sorted((text, sender) for text, sender, _ in echo.seen) == [
            ("direct", None),
            ("extra!", "caller/k"),
        ]
        assert echo.seen[0][2] == TopicId("news", "k")
    # The caller is subscribed to the topic it published on, and never hears itself:
    caller = await a.try_get_underlying_agent_instance(AgentId("caller", "k"), Caller)
    assert caller.heard == ["direct"]
    assert a.counters["delivered"] == 3
    assert b.counters["delivered"] == 2


async def test_a_policy_refusal_reaches_the_caller_as_undeliverable_with_its_code(
    runtimes: Runtimes,
) -> None:
    policy = CompiledPolicy.from_data(
        {
            "version": 1,
            "name": "no-secrets",
            "default": "allow",
            "rules": [
                {
                    "id": "no-secrets",
                    "effect": "deny",
                    "match": {"actions": ["autogen.Secret"], "kinds": ["message"]},
                }
            ],
        }
    )
    identity = AgentIdentity.generate()
    guards = await runtimes.guards(identity, policy=policy)
    a, b = await runtimes.new(), await runtimes.new(identity=identity, guards=guards)
    await Echo.register(b, "echo", Echo)
    pong_serializer(a)

    assert await a.send_message(Ping("fine"), AgentId("echo", "default")) == Pong("fine!", "None")
    with pytest.raises(UndeliverableException) as refused:
        await a.send_message(Secret("psst"), AgentId("echo", "default"))
    assert isinstance(refused.value, DeliveryRefused)
    assert refused.value.refusal_code == "policy_denied"
    assert "no-secrets" in str(refused.value)
    assert b.rejected() == {"policy_denied": 1}


async def test_the_kill_switch_refuses_both_ways(runtimes: Runtimes) -> None:
    authority = AgentIdentity.generate()
    ids = AgentIdentity.generate(), AgentIdentity.generate(), AgentIdentity.generate()
    # a's own kill switch ignores the authority: only b's check can refuse a's sends.
    a = await runtimes.new(identity=ids[0], guards=await runtimes.guards(ids[0]))
    b_guards = await runtimes.guards(ids[1], authorities=[authority.did])
    b = await runtimes.new(identity=ids[1], guards=b_guards)
    c_guards = await runtimes.guards(ids[2], authorities=[authority.did])
    c = await runtimes.new(identity=ids[2], guards=c_guards)
    await Echo.register(b, "echo", Echo)
    pong_serializer(a)
    pong_serializer(c)
    await a.send_message(Ping("before"), AgentId("echo", "default"))
    await c.send_message(Ping("before"), AgentId("echo", "default"))

    kill_switch = b_guards.kill_switch
    assert kill_switch is not None
    await kill_switch.quarantine(authority, a.did, "test")
    await kill_switch.quarantine(authority, c.did, "test")
    await eventually(lambda: kill_switch.is_blocked(a.did))
    with pytest.raises(DeliveryRefused) as refused:  # b refuses a quarantined sender
        await a.send_message(Ping("after"), AgentId("echo", "default"))
    assert refused.value.refusal_code == "quarantined"

    guard_c = c_guards.kill_switch
    assert guard_c is not None
    await eventually(lambda: guard_c.is_blocked(c.did))  # the order reaches c over the mesh
    with pytest.raises(OutboundRefused) as stopped:  # a quarantined runtime sends nothing
        await c.send_message(Ping("again"), AgentId("echo", "default"))
    assert stopped.value.refusal_code == "quarantined"

    echo_did = b.did_of("echo")
    assert echo_did is not None
    assert c.hosts("echo") != []
    await kill_switch.quarantine(authority, echo_did, "test")
    await eventually(lambda: not c.hosts("echo"))  # a quarantined host is never routed to


async def test_handler_failures_map_to_autogen_exceptions(runtimes: Runtimes) -> None:
    a, b = await runtimes.new(), await runtimes.new()
    await Echo.register(b, "echo", Echo)
    with pytest.raises(RemoteHandlerError) as failed:
        await a.send_message(Boom("value"), AgentId("echo", "default"))
    assert failed.value.remote_type == "ValueError"
    with pytest.raises(CantHandleException) as cant:
        await a.send_message(Boom("cant"), AgentId("echo", "default"))
    assert isinstance(cant.value, RemoteCantHandle)
    with pytest.raises(RemoteCantHandle):  # b knows no serializer for it: no handler
        await a.send_message(Unhandled("?"), AgentId("echo", "default"))
    assert b.rejected() == {"no_handler": 1}


async def test_undeliverable_without_a_host_and_no_signing_for_others(runtimes: Runtimes) -> None:
    a = await runtimes.new()
    with pytest.raises(AgentUnreachable) as unreachable:
        await a.send_message(Ping("?"), AgentId("nobody", "default"))
    assert unreachable.value.cause == "no_host"
    assert isinstance(unreachable.value, UndeliverableException)
    with pytest.raises(SenderNotHosted):
        await a.send_message(Ping("?"), AgentId("nobody", "k"), sender=AgentId("impostor", "k"))
    with pytest.raises(SenderNotHosted):
        await a.publish_message(Ping("?"), TopicId("t", "s"), sender=AgentId("impostor", "k"))


async def test_a_signed_message_claiming_an_agent_its_signer_does_not_host_is_refused(
    runtimes: Runtimes,
) -> None:
    a, b = await runtimes.new(), await runtimes.new()
    await Echo.register(b, "echo", Echo)
    await Caller.register(a, "caller", Caller)
    echo_did = b.did_of("echo")
    assert echo_did is not None
    # A mesh agent with a valid identity of its own, but no card for "caller":
    intruder = MeshNode(
        AgentIdentity.generate(),
        await runtimes.factory.new("intruder"),
        config=NodeConfig(mesh=runtimes.mesh),
    )
    _, body = a.codec.encode(Ping("pay me"))
    async with intruder:
        claims = {
            "autogen_sender_unbound": Routing(
                "send", "m1", AgentId("caller", "default"), recipient=AgentId("echo", "default")
            ),
            "autogen_wrong_recipient": Routing("send", "m2", recipient=AgentId("other", "k")),
        }
        for code, routing in claims.items():
            with pytest.raises(RemoteError) as refused:
                await intruder.request(
                    echo_did, envelope_type("Ping"), body, headers=routing.headers(), timeout=5
                )
            assert refused.value.remote_code == code
        with pytest.raises(RemoteError) as malformed:
            await intruder.request(echo_did, envelope_type("Ping"), body, timeout=5)
        assert malformed.value.remote_code == "autogen_malformed"
    assert b.rejected() == {
        "autogen_sender_unbound": 1,
        "autogen_wrong_recipient": 1,
        "autogen_malformed": 1,
    }
    echo = await b.try_get_underlying_agent_instance(AgentId("echo", "default"), Echo)
    assert echo.seen == []


async def test_registration_lookup_and_state(runtimes: Runtimes) -> None:
    a, b = await runtimes.new(), await runtimes.new()
    await Echo.register(b, "echo", Echo)
    with pytest.raises(ValueError, match="already exists"):
        await Echo.register(b, "echo", Echo)
    await b.register_agent_instance(Echo(), AgentId("solo", "one"))
    with pytest.raises(ValueError):
        await b.register_agent_instance(Echo(), AgentId("solo", "one"))
    with pytest.raises(ValueError, match="cannot be registered to the same type"):
        await b.register_agent_instance(Echo(), AgentId("echo", "x"))
    with pytest.raises(LookupError):  # a type of instances only: no other key
        await b.try_get_underlying_agent_instance(AgentId("solo", "two"))

    assert await a.get("echo", "k") == AgentId("echo", "k")
    assert await a.get(AgentId("echo", "k"), lazy=False) == AgentId("echo", "k")
    with pytest.raises(LookupError):
        await a.get("missing", lazy=False)
    with pytest.raises(NotAccessibleError):
        await a.try_get_underlying_agent_instance(AgentId("echo", "default"))
    with pytest.raises(LookupError):
        await a.try_get_underlying_agent_instance(AgentId("missing", "default"))
    with pytest.raises(TypeError):
        await b.try_get_underlying_agent_instance(AgentId("echo", "default"), Caller)
    assert (await b.agent_metadata(AgentId("echo", "k")))["description"] == "echoes pings"
    remote = await a.agent_metadata(AgentId("echo", "k"))
    assert remote["description"] == f"hosted by {b.did_of('echo')}"

    state = await b.save_state()  # echo/default was made by the lookups above
    assert set(state) == {"echo/default", "echo/k", "solo/one"}
    await b.load_state(state)
    assert await b.agent_save_state(AgentId("echo", "k")) == state["echo/k"]
    await b.agent_load_state(AgentId("echo", "k"), state["echo/k"])

    subscription = TypeSubscription("news", "echo")
    await b.add_subscription(subscription)
    with pytest.raises(ValueError):
        await b.add_subscription(subscription)
    await b.remove_subscription(subscription.id)
    with pytest.raises(LookupError):
        await b.remove_subscription(subscription.id)


async def test_cancelling_stops_the_wait(runtimes: Runtimes) -> None:
    class Slow(BaseAgent):
        async def on_message_impl(self, message: object, ctx: MessageContext) -> object:
            await asyncio.sleep(5)
            return None

    a, b = await runtimes.new(), await runtimes.new()
    await Slow.register(b, "slow", lambda: Slow("sleeps"))
    b.add_message_serializer(try_get_known_serializers_for_type(Ping))
    token = CancellationToken()
    waiting = asyncio.create_task(
        a.send_message(Ping("zz"), AgentId("slow", "k"), cancellation_token=token)
    )
    await asyncio.sleep(0.2)
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_lifecycle(runtimes: Runtimes) -> None:
    runtime = MeshAgentRuntime(await runtimes.factory.new("lifecycle"), config=runtimes.config)
    with pytest.raises(RuntimeNotRunning):
        await runtime.send_message(Ping("?"), AgentId("x", "y"))
    with pytest.raises(RuntimeNotRunning):
        await Echo.register(runtime, "echo", Echo)
    async with runtime:
        with pytest.raises(RuntimeNotRunning):
            await runtime.start()
        await Echo.register(runtime, "echo", Echo)
    await runtime.aclose()  # idempotent
    await runtime.close()
    with pytest.raises(RuntimeNotRunning):
        await runtime.publish_message(Ping("?"), TopicId("t", "s"))
    never_started = MeshAgentRuntime(await runtimes.factory.new("unused"))
    await never_started.aclose()
