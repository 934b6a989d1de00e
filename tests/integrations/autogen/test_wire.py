"""The wire layer, without a mesh: names, signed routing headers, message bodies."""

from __future__ import annotations

import json
from dataclasses import dataclass

import msgpack
import pytest
from autogen_agentchat.base import Response, TaskResult
from autogen_agentchat.messages import (
    StopMessage,
    StructuredMessage,
    TextMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
)
from autogen_agentchat.teams._group_chat._events import (
    GroupChatAgentResponse,
    GroupChatMessage,
    GroupChatRequestPublish,
    GroupChatStart,
    GroupChatTeamResponse,
    GroupChatTermination,
)
from autogen_core import AgentId, FunctionCall, TopicId
from autogen_core.models import FunctionExecutionResult
from pydantic import BaseModel

from agentmesh.integrations.autogen import MessageCodec, WireError
from agentmesh.integrations.autogen.codec import type_name_of
from agentmesh.integrations.autogen.wire import (
    NONE_TYPE,
    Routing,
    capability_for,
    envelope_type,
    pack_body,
    parse_routing,
    unpack_body,
)
from registry.card import Capability


@dataclass
class Ping:
    text: str


class Verdict(BaseModel):
    score: int


def response_event() -> GroupChatAgentResponse:
    call = FunctionCall(id="c1", name="records_read", arguments='{"record_id": "r1"}')
    result = FunctionExecutionResult(
        content="ok", call_id="c1", is_error=False, name="records_read"
    )
    inner = [
        ToolCallRequestEvent(content=[call], source="coder"),
        ToolCallExecutionEvent(content=[result], source="coder"),
    ]
    return GroupChatAgentResponse(
        response=Response(
            chat_message=TextMessage(content="done", source="coder"), inner_messages=inner
        ),
        name="coder",
    )


def roundtrip(codec: MessageCodec, message: object) -> object:
    type_name, body = codec.encode(message)
    assert type_name == (NONE_TYPE if message is None else type_name_of(message))
    return codec.decode(body)


def test_agentchat_events_that_autogen_cannot_read_back_round_trip() -> None:
    codec = MessageCodec()
    event = response_event()
    # AutoGen's default (pydantic) serializer writes it but cannot read it back:
    with pytest.raises(TypeError):
        GroupChatAgentResponse.model_validate_json(event.model_dump_json())
    back = roundtrip(codec, event)
    assert isinstance(back, GroupChatAgentResponse)
    assert back.name == "coder"
    assert isinstance(back.response.chat_message, TextMessage)
    assert back.response.chat_message.content == "done"
    assert [type(m) for m in back.response.inner_messages or ()] == [
        ToolCallRequestEvent,
        ToolCallExecutionEvent,
    ]
    start = roundtrip(codec, GroupChatStart(messages=[TextMessage(content="go", source="user")]))
    assert isinstance(start, GroupChatStart)
    assert start.messages is not None
    assert start.messages[0].to_text() == "go"
    assert roundtrip(codec, GroupChatStart()) == GroupChatStart()
    team = GroupChatTeamResponse(
        result=TaskResult(messages=[TextMessage(content="x", source="a")], stop_reason="done"),
        name="sub",
    )
    back_team = roundtrip(codec, team)
    assert isinstance(back_team, GroupChatTeamResponse)
    assert back_team.result.stop_reason == "done"
    logged = roundtrip(
        codec, GroupChatMessage(message=ToolCallRequestEvent(content=[], source="a"))
    )
    assert isinstance(logged, GroupChatMessage)
    assert isinstance(logged.message, ToolCallRequestEvent)
    stop = GroupChatTermination(message=StopMessage(content="bye", source="manager"))
    assert roundtrip(codec, stop) == stop  # concrete fields: AutoGen's own serializer


def test_plain_messages_register_on_first_use_and_none_is_an_empty_response() -> None:
    codec = MessageCodec()
    assert roundtrip(codec, Ping("hi")) == Ping("hi")
    assert roundtrip(codec, Verdict(score=3)) == Verdict(score=3)
    assert roundtrip(codec, GroupChatRequestPublish()) == GroupChatRequestPublish()
    assert roundtrip(codec, None) is None


def test_pydantic_defaults_registered_by_agents_do_not_replace_the_event_serializers() -> None:
    from autogen_core import try_get_known_serializers_for_type

    codec = MessageCodec()
    codec.add(try_get_known_serializers_for_type(GroupChatAgentResponse))
    assert isinstance(roundtrip(codec, response_event()), GroupChatAgentResponse)


def test_custom_chat_messages_need_registering_on_the_reading_side() -> None:
    structured = StructuredMessage[Verdict]
    event = GroupChatAgentResponse(
        response=Response(chat_message=structured(content=Verdict(score=1), source="a")), name="a"
    )
    writer, reader = MessageCodec(), MessageCodec()
    _, body = writer.encode(event)
    with pytest.raises(WireError, match="nested chat message refused"):
        reader.decode(body)
    reader.register_chat_type(structured)
    back = reader.decode(body)
    assert isinstance(back, GroupChatAgentResponse)
    assert (
        back.response.chat_message.to_text()
        == structured(content=Verdict(score=1), source="a").to_text()
    )


def test_unknown_types_and_malformed_bodies_are_wire_errors() -> None:
    codec = MessageCodec()
    with pytest.raises(WireError, match="no serializer"):
        codec.encode(object())
    with pytest.raises(WireError, match="unknown message type 'Ping'"):
        MessageCodec().decode(codec.encode(Ping("x"))[1])
    bad_bodies = [
        b"\xc1",  # never valid msgpack
        msgpack.packb([1, 2, 3]),
        msgpack.packb(["Ping", "application/json"]),
        msgpack.packb(["Ping", "application/json", b"{}", b"extra"]),
        msgpack.packb({"t": "Ping"}),
        pack_body(NONE_TYPE, "application/json", b"null"),
        pack_body("GroupChatAgentResponse", "application/json", b"[1]"),
        pack_body("GroupChatAgentResponse", "application/json", b"not json"),
        pack_body("GroupChatAgentResponse", "application/json", json.dumps({"name": "a"}).encode()),
        pack_body(
            "GroupChatStart",
            "application/json",
            json.dumps({"messages": [{"type": "NoSuchMessage"}]}).encode(),
        ),
        pack_body(
            "GroupChatAgentResponse",  # an event where a chat message is required
            "application/json",
            json.dumps(
                {
                    "name": "a",
                    "chat_message": dict(ToolCallRequestEvent(content=[], source="a").dump()),
                }
            ).encode(),
        ),
        pack_body("Ping", "application/json", b"{}"),  # missing field
    ]
    codec.encode(Ping("register"))
    for body in bad_bodies:
        with pytest.raises(WireError):
            codec.decode(body)


def test_a_failing_user_serializer_is_a_wire_error() -> None:
    class Broken:
        data_content_type = "application/json"
        type_name = "Ping"

        def serialize(self, message: object) -> bytes:
            raise RuntimeError("boom")

        def deserialize(self, payload: bytes) -> object:
            raise RuntimeError("boom")

    codec = MessageCodec()
    codec.add(Broken())
    with pytest.raises(WireError, match="serializing Ping failed: RuntimeError"):
        codec.encode(Ping("x"))
    with pytest.raises(WireError, match="does not deserialize: RuntimeError"):
        codec.decode(pack_body("Ping", "application/json", b"{}"))


def test_routing_headers_round_trip_and_are_validated() -> None:
    send = Routing("send", "m1", AgentId("a", "k"), recipient=AgentId("b", "team/1"))
    assert parse_routing(tuple(sorted(send.headers().items()))) == send
    publish = Routing(
        "publish", "m2", None, topic=TopicId("group_topic_x", "x"), primary="did:key:z"
    )
    assert parse_routing(tuple(publish.headers().items())) == publish
    bad = [
        {},
        {"ag_kind": "broadcast", "ag_msg": "m"},
        {"ag_kind": "send", "ag_msg": "m"},
        {"ag_kind": "send", "ag_msg": "m", "ag_recipient": "no-slash"},
        {"ag_kind": "send", "ag_msg": "m", "ag_recipient": "a/k", "ag_topic": "t/s"},
        {"ag_kind": "publish", "ag_msg": "m"},
        {"ag_kind": "publish", "ag_msg": "m", "ag_topic": "bad topic/s"},
        {"ag_kind": "publish", "ag_msg": "m", "ag_topic": "t/s", "ag_recipient": "a/k"},
        {"ag_kind": "publish", "ag_msg": "m", "ag_topic": "t/s", "ag_sender": "bad type!/k"},
    ]
    for headers in bad:
        with pytest.raises(WireError):
            parse_routing(tuple(headers.items()))
    with pytest.raises(WireError, match="longer than"):
        Routing("send", "m", recipient=AgentId("a", "k" * 2000)).headers()


def test_names_fit_the_card_and_envelope_formats() -> None:
    capability = capability_for("Coder_3f2a-UUID.with.dots")
    Capability(name=capability)  # the card format accepts it
    assert capability != capability_for("coder_3f2a-uuid.with.dots")
    assert envelope_type("GroupChatStart") == "autogen.GroupChatStart"
    with pytest.raises(WireError):
        envelope_type("x" * 101)
    assert unpack_body(pack_body("T", "c", b"p")) == ("T", "c", b"p")
