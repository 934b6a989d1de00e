"""Serializers for AgentChat's group-chat events, which AutoGen's defaults cannot read back.

A group chat's events hold chat messages typed as the abstract ``BaseChatMessage``
(``GroupChatAgentResponse.response.chat_message``, ``GroupChatStart.messages``, ...).
Pydantic writes the concrete message out (``SerializeAsAny``) but cannot build it
again: ``model_validate_json`` tries to instantiate the abstract class. These
serializers write each nested message with ``message.dump()`` (which names its
``type``) and rebuild it with a :class:`~autogen_agentchat.messages.MessageFactory`,
as AgentChat's own state loading does. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from autogen_agentchat.base import Response, TaskResult
from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, MessageFactory
from autogen_agentchat.teams._group_chat._events import (  # AgentChat keeps these private
    GroupChatAgentResponse,
    GroupChatMessage,
    GroupChatStart,
    GroupChatTeamResponse,
)
from autogen_core import JSON_DATA_CONTENT_TYPE, MessageSerializer
from pydantic import BaseModel, ValidationError

from agentmesh.integrations.autogen.errors import WireError

M = TypeVar("M", bound=BaseModel)
AnyMessage = BaseAgentEvent | BaseChatMessage


class _Reader:
    """Rebuilds nested chat messages; every malformed part is a :class:`WireError`."""

    def __init__(self, factory: MessageFactory) -> None:
        self.factory = factory

    def any(self, data: object) -> AnyMessage:
        if not isinstance(data, Mapping):
            raise WireError("a nested chat message must be an object")
        try:
            return self.factory.create(data)
        except (ValidationError, ValueError, TypeError, KeyError) as exc:
            raise WireError(f"nested chat message refused: {type(exc).__name__}") from None

    def chat(self, data: object) -> BaseChatMessage:
        message = self.any(data)
        if not isinstance(message, BaseChatMessage):
            raise WireError(f"{type(message).__name__} is an event, a chat message is required")
        return message

    def many(self, data: object) -> list[AnyMessage]:
        if not isinstance(data, list):
            raise WireError("nested chat messages must be a list")
        return [self.any(item) for item in data]

    def chats(self, data: object) -> list[BaseChatMessage]:
        if not isinstance(data, list):
            raise WireError("nested chat messages must be a list")
        return [self.chat(item) for item in data]


def _object(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise WireError("event payload is not JSON") from None
    if not isinstance(data, dict):
        raise WireError("event payload must be a JSON object")
    return data


class _EventSerializer(Generic[M]):
    """A :class:`MessageSerializer` for one event class, via a dump and a load function."""

    def __init__(
        self,
        cls: type[M],
        dump: Callable[[M], dict[str, Any]],
        load: Callable[[_Reader, dict[str, Any]], M],
        reader: _Reader,
    ) -> None:
        self._cls = cls
        self._dump = dump
        self._load = load
        self._reader = reader

    @property
    def data_content_type(self) -> str:
        return JSON_DATA_CONTENT_TYPE

    @property
    def type_name(self) -> str:
        return self._cls.__name__

    def serialize(self, message: M) -> bytes:
        return json.dumps(self._dump(message)).encode()

    def deserialize(self, payload: bytes) -> M:
        data = _object(payload)
        try:
            return self._load(self._reader, data)
        except WireError:
            raise
        except (ValidationError, ValueError, TypeError, KeyError) as exc:
            raise WireError(f"{self._cls.__name__} refused: {type(exc).__name__}") from None


def _dump_all(messages: Sequence[AnyMessage] | None) -> list[Any] | None:
    return None if messages is None else [dict(m.dump()) for m in messages]


def _start_dump(event: GroupChatStart) -> dict[str, Any]:
    return {
        "messages": _dump_all(event.messages),
        "output_task_messages": event.output_task_messages,
    }


def _start_load(read: _Reader, data: dict[str, Any]) -> GroupChatStart:
    messages = data.get("messages")
    return GroupChatStart(
        messages=None if messages is None else read.chats(messages),
        output_task_messages=data.get("output_task_messages", True),
    )


def _agent_response_dump(event: GroupChatAgentResponse) -> dict[str, Any]:
    response = event.response
    return {
        "name": event.name,
        "chat_message": dict(response.chat_message.dump()),
        "inner_messages": _dump_all(response.inner_messages),
    }


def _agent_response_load(read: _Reader, data: dict[str, Any]) -> GroupChatAgentResponse:
    inner = data.get("inner_messages")
    response = Response(
        chat_message=read.chat(data["chat_message"]),
        inner_messages=None if inner is None else read.many(inner),
    )
    return GroupChatAgentResponse(response=response, name=data["name"])


def _team_response_dump(event: GroupChatTeamResponse) -> dict[str, Any]:
    return {
        "name": event.name,
        "messages": _dump_all(event.result.messages),
        "stop_reason": event.result.stop_reason,
    }


def _team_response_load(read: _Reader, data: dict[str, Any]) -> GroupChatTeamResponse:
    result = TaskResult(messages=read.many(data["messages"]), stop_reason=data.get("stop_reason"))
    return GroupChatTeamResponse(result=result, name=data["name"])


def _message_dump(event: GroupChatMessage) -> dict[str, Any]:
    return {"message": dict(event.message.dump())}


def _message_load(read: _Reader, data: dict[str, Any]) -> GroupChatMessage:
    return GroupChatMessage(message=read.any(data["message"]))


def chat_event_serializers(factory: MessageFactory) -> list[MessageSerializer[Any]]:
    """Serializers for the group-chat events that nest chat messages, reading with ``factory``.

    Register custom message types (``StructuredMessage[...]``, your own) on ``factory``
    so that they can be read back.
    """
    read = _Reader(factory)
    return [
        _EventSerializer(GroupChatStart, _start_dump, _start_load, read),
        _EventSerializer(GroupChatAgentResponse, _agent_response_dump, _agent_response_load, read),
        _EventSerializer(GroupChatTeamResponse, _team_response_dump, _team_response_load, read),
        _EventSerializer(GroupChatMessage, _message_dump, _message_load, read),
    ]


__all__ = ["chat_event_serializers"]
