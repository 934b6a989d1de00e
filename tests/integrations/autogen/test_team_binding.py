"""Who may say what on a team's topics, and that the policy sees the type that is delivered.

The rules of :mod:`agentmesh.integrations.autogen.team_binding` as a pure function
first, then two refusals end to end (on the in-memory bus and over NATS): a
member's turn published with no sender by an identity that hosts nothing, and
an envelope whose type is not its body's (the policy decides on the envelope's
type; the runtime would have delivered the body's).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from autogen_agentchat.base import Response
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams._group_chat._events import (
    GroupChatAgentResponse,
    GroupChatMessage,
    GroupChatRequestPublish,
    GroupChatStart,
)
from autogen_core import AgentId, MessageContext, RoutedAgent, TopicId, message_handler

from agentmesh.errors import RemoteError
from agentmesh.integrations.autogen import TeamLayout, TeamLayoutError
from agentmesh.integrations.autogen.codec import MessageCodec
from agentmesh.integrations.autogen.team_binding import TEAM_FORGED, TeamBinding, claimed_member
from agentmesh.integrations.autogen.wire import Routing, envelope_type, pack_body, unpack_body
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.policy.engine import CompiledPolicy
from iatp.identity import AgentIdentity
from tests.agentmesh.transport.waiting import eventually
from tests.integrations.autogen.conftest import Runtimes

LAYOUT = TeamLayout("t1", "RoundRobinGroupChatManager", ("writer", "editor"))
MANAGER = LAYOUT.manager_type
WRITER = LAYOUT.member_type("writer")
EDITOR = LAYOUT.member_type("editor")
CODEC = MessageCodec()


def turn(name: str) -> GroupChatAgentResponse:
    text = TextMessage(content="done", source=name)
    return GroupChatAgentResponse(response=Response(chat_message=text), name=name)


def check(
    message: object, sender: str | None, topic: str = LAYOUT.group_topic, *, here: bool = False
) -> str | None:
    """Why ``sender`` may not publish ``message`` on ``topic`` (``None``: it may)."""
    binding = TeamBinding()
    binding.add(LAYOUT)
    type_name, body = CODEC.encode(message)
    agent = AgentId(sender, "t1") if sender is not None else None
    routing = Routing("publish", "m1", agent, topic=TopicId(topic, "t1"))
    return binding.check(routing, type_name, unpack_body(body)[2], signed_here=here)


def test_the_team_rules() -> None:
    # What AgentChat itself publishes is fine:
    assert check(GroupChatStart(messages=None), MANAGER) is None
    assert check(GroupChatRequestPublish(), MANAGER, WRITER) is None
    assert check(turn("writer"), WRITER) is None
    assert check(GroupChatMessage(message=TextMessage(content="x", source="e")), EDITOR) is None
    # ...and the topics of other teams are not this binding's business:
    assert check(turn("writer"), None, "group_topic_other") is None

    assert "no sender" in str(check(turn("writer"), None))
    assert check(turn("writer"), None, here=True) is None  # this runtime signed it
    assert "not an agent of team t1" in str(check(turn("writer"), "stranger_t1"))
    assert "only the manager" in str(check(GroupChatRequestPublish(), EDITOR, WRITER))
    assert "only the manager" in str(check(GroupChatStart(messages=None), WRITER))
    assert "in the name of 'writer'" in str(check(turn("writer"), EDITOR))
    assert "in the name of 'nobody'" in str(check(turn("nobody"), MANAGER))


def test_the_name_a_turn_claims_and_the_layouts_a_binding_takes() -> None:
    assert claimed_member(b'{"name": "writer"}') == "writer"
    for junk in (b"\xff", b"[]", b'{"name": 3}', b"{}"):
        assert claimed_member(junk) is None
    binding = TeamBinding()
    binding.add(LAYOUT)
    binding.add(LAYOUT)  # hosting a second member of the same team
    assert len(binding) == 1
    assert binding.team_of(LAYOUT.group_topic) == LAYOUT
    with pytest.raises(TeamLayoutError):
        binding.add(TeamLayout("t1", "SelectorGroupChatManager", ("writer",)))
    binding.add(TeamLayout("t2", "RoundRobinGroupChatManager", ("writer",)))
    assert len(binding) == 2
    assert LAYOUT.topics == {
        "group_topic_t1",
        "output_topic_t1",
        "RoundRobinGroupChatManager_t1",
        "writer_t1",
        "editor_t1",
    }


@dataclass
class Ping:
    text: str


@dataclass
class Secret:
    text: str


class Keeper(RoutedAgent):
    """Answers pings; keeps secrets (the policy refuses them)."""

    def __init__(self) -> None:
        super().__init__("keeps secrets")
        self.told: list[str] = []

    @message_handler
    async def ping(self, message: Ping, ctx: MessageContext) -> None:
        self.told.append(f"ping {message.text}")

    @message_handler
    async def secret(self, message: Secret, ctx: MessageContext) -> None:
        self.told.append(f"secret {message.text}")


NO_SECRETS = CompiledPolicy.from_data(
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


async def test_a_body_of_another_type_than_its_envelope_is_refused(runtimes: Runtimes) -> None:
    identity = AgentIdentity.generate()
    guards = await runtimes.guards(identity, policy=NO_SECRETS)
    keeper_runtime = await runtimes.new(identity=identity, guards=guards)
    await Keeper.register(keeper_runtime, "keeper", Keeper)
    keeper_did = keeper_runtime.did_of("keeper")
    assert keeper_did is not None
    intruder = MeshNode(
        AgentIdentity.generate(),
        await runtimes.factory.new("intruder"),
        config=NodeConfig(mesh=runtimes.mesh),
    )
    _, secret = keeper_runtime.codec.encode(Secret("the key"))
    routing = Routing("send", "m1", recipient=AgentId("keeper", "default"))
    async with intruder:
        with pytest.raises(RemoteError) as refused:  # the policy sees autogen.Secret
            await intruder.request(
                keeper_did, envelope_type("Secret"), secret, headers=routing.headers(), timeout=5
            )
        assert refused.value.remote_code == "policy_denied"
        with pytest.raises(RemoteError) as disguised:  # a Secret dressed as a Ping
            await intruder.request(
                keeper_did, envelope_type("Ping"), secret, headers=routing.headers(), timeout=5
            )
        assert disguised.value.remote_code == "autogen_malformed"
        _, ping = keeper_runtime.codec.encode(Ping("hello"))
        await intruder.request(
            keeper_did, envelope_type("Ping"), ping, headers=routing.headers(), timeout=5
        )
    keeper = await keeper_runtime.try_get_underlying_agent_instance(
        AgentId("keeper", "default"), Keeper
    )
    assert keeper.told == ["ping hello"]
    assert keeper_runtime.rejected() == {"policy_denied": 1, "autogen_malformed": 1}


async def test_a_turn_published_without_a_sender_is_refused_where_the_team_is_known(
    runtimes: Runtimes,
) -> None:
    runtime = await runtimes.new()
    runtime.add_team(LAYOUT)
    intruder = MeshNode(
        AgentIdentity.generate(),
        await runtimes.factory.new("intruder"),
        config=NodeConfig(mesh=runtimes.mesh),
    )
    type_name, body = CODEC.encode(turn("writer"))
    in_team = Routing("publish", "m1", None, topic=TopicId(LAYOUT.group_topic, "t1"))
    elsewhere = Routing("publish", "m2", None, topic=TopicId("news", "t1"))
    async with intruder:
        for routing in (in_team, elsewhere):
            await intruder.publish(
                runtime.config.channel,
                envelope_type(type_name),
                pack_body(*unpack_body(body)),
                headers=routing.headers(),
            )
        await eventually(
            lambda: runtime.node.counters.accepted + sum(runtime.rejected().values()) == 2
        )
    assert runtime.rejected() == {TEAM_FORGED: 1}
    assert runtime.node.counters.accepted == 1  # the other topic: no team's business
