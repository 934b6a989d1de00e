"""One runtime's message serializers: AutoGen's, the ones agents register, and ours for AgentChat.

AutoGen's in-process runtime never serializes; a runtime that crosses processes
must, and both ends must know the type. Agents register the types they handle
(``BaseAgent.register`` calls ``runtime.add_message_serializer``); a message sent
from outside any agent, or a response, is registered on first use from its class
(dataclass, pydantic model or protobuf, as ``try_get_known_serializers_for_type``
does). A type the receiving end does not know is refused with :class:`WireError`
naming it, never passed on as an opaque payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, MessageFactory
from autogen_core import (
    JSON_DATA_CONTENT_TYPE,
    MessageSerializer,
    try_get_known_serializers_for_type,
)

from agentmesh.integrations.autogen.chat_events import chat_event_serializers
from agentmesh.integrations.autogen.errors import WireError
from agentmesh.integrations.autogen.wire import NONE_TYPE, pack_body, unpack_body

Key = tuple[str, str]


def type_name_of(message: object) -> str:
    """AutoGen's type name of a message: the protobuf full name, else the class name."""
    descriptor = getattr(type(message), "DESCRIPTOR", None)
    full_name = getattr(descriptor, "full_name", None)
    return full_name if isinstance(full_name, str) else type(message).__name__


class MessageCodec:
    """Encodes messages into envelope bodies and back (see :mod:`.wire` for the layout)."""

    def __init__(self) -> None:
        self.chat_types = MessageFactory()
        self._serializers: dict[Key, MessageSerializer[Any]] = {}
        self._by_name: dict[str, MessageSerializer[Any]] = {}
        pinned = chat_event_serializers(self.chat_types)
        self._pinned = frozenset((s.type_name, s.data_content_type) for s in pinned)
        for serializer in pinned:
            self._put(serializer)

    def add(self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]) -> None:
        """Register serializers (deduplicated by type name and content type, last one wins).

        The AgentChat event serializers stay: the pydantic defaults agents register
        for those events cannot read them back.
        """
        if isinstance(serializer, Sequence):
            for one in serializer:
                self.add(one)
            return
        if (serializer.type_name, serializer.data_content_type) not in self._pinned:
            self._put(serializer)

    def register_chat_type(self, message_type: type[BaseAgentEvent | BaseChatMessage]) -> None:
        """Let nested chat messages of ``message_type`` be read back (custom AgentChat types)."""
        if not self.chat_types.is_registered(message_type):
            self.chat_types.register(message_type)

    def knows(self, type_name: str) -> bool:
        return type_name in self._by_name

    @property
    def type_names(self) -> frozenset[str]:
        return frozenset(self._by_name)

    def _put(self, serializer: MessageSerializer[Any]) -> None:
        self._serializers[(serializer.type_name, serializer.data_content_type)] = serializer
        current = self._by_name.get(serializer.type_name)
        if current is None or serializer.data_content_type == JSON_DATA_CONTENT_TYPE:
            self._by_name[serializer.type_name] = serializer

    def _for_message(self, message: object, type_name: str) -> MessageSerializer[Any]:
        serializer = self._by_name.get(type_name)
        if serializer is None:
            try:
                known = try_get_known_serializers_for_type(type(message))
            except (TypeError, ValueError) as exc:
                raise WireError(f"cannot serialize {type_name}: {exc}") from None
            if not known:
                raise WireError(
                    f"no serializer for {type_name}: use a dataclass, a pydantic model or a "
                    "protobuf message, or runtime.add_message_serializer(...)"
                )
            self.add(known)
            serializer = self._by_name[type_name]
        return serializer

    def encode(self, message: object) -> tuple[str, bytes]:
        """``(type_name, body)`` of ``message`` (``None`` encodes as an empty response).

        Raises:
            WireError: no serializer for the message's type, or it failed.
        """
        if message is None:
            return NONE_TYPE, pack_body(NONE_TYPE, "", b"")
        type_name = type_name_of(message)
        serializer = self._for_message(message, type_name)
        try:
            payload = serializer.serialize(message)
        except WireError:
            raise
        except Exception as exc:  # a user serializer: any failure is a wire error here
            raise WireError(f"serializing {type_name} failed: {type(exc).__name__}") from None
        return type_name, pack_body(type_name, serializer.data_content_type, payload)

    def decode(self, body: bytes) -> object:
        """The message in ``body``.

        Raises:
            WireError: malformed body, unknown type or content type, or the payload
                does not deserialize.
        """
        type_name, content_type, payload = unpack_body(body)
        if type_name == NONE_TYPE:
            if content_type or payload:
                raise WireError("an empty response carries no payload")
            return None
        serializer = self._serializers.get((type_name, content_type))
        if serializer is None:
            raise WireError(
                f"unknown message type {type_name!r} ({content_type}): register it on the "
                "receiving runtime (runtime.add_message_serializer(...))"
            )
        try:
            return serializer.deserialize(payload)
        except WireError:
            raise
        except Exception as exc:  # pydantic, json, protobuf, or a user serializer
            raise WireError(f"{type_name} does not deserialize: {type(exc).__name__}") from None


__all__ = ["MessageCodec", "type_name_of"]
