"""Judges: decide whether a delivered message is a bad result (evidence against its sender).

A judge sees every published message this runtime delivers to its agents and
returns a reason when the result is bad, ``None`` when it is fine. The message
is still delivered (a team must hear the answer to move on), but the receiving
node records the interaction as a failure, so the sender's trust receipt is
negative; repeated failures raise a drift alarm and demote the sender to ring 3.
Pure functions of the message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from autogen_agentchat.messages import BaseAgentEvent, BaseChatMessage, ToolCallExecutionEvent
from autogen_agentchat.teams._group_chat._events import GroupChatAgentResponse
from autogen_core import AgentId

from agentmesh.integrations.autogen.errors import REFUSAL_MARKER

Judge = Callable[[object, AgentId | None], str | None]
"""``judge(message, sender) -> reason | None``."""


def _inner(message: object) -> Iterable[BaseAgentEvent | BaseChatMessage]:
    if isinstance(message, GroupChatAgentResponse):
        yield from message.response.inner_messages or ()
        yield message.response.chat_message


def refused_tool_calls(message: object, sender: AgentId | None) -> str | None:
    """Bad when an agent's turn contains tool calls the mesh refused (``ToolCallRefused``)."""
    refused = [
        result.name
        for inner in _inner(message)
        if isinstance(inner, ToolCallExecutionEvent)
        for result in inner.content
        if result.is_error and result.content.startswith(REFUSAL_MARKER)
    ]
    if refused:
        return f"tool calls refused by policy: {', '.join(refused)}"
    return None


def text_check(check: Callable[[str], str | None]) -> Judge:
    """A judge that applies ``check`` to the text of an agent's final chat message."""

    def judge(message: object, sender: AgentId | None) -> str | None:
        if isinstance(message, GroupChatAgentResponse):
            return check(message.response.chat_message.to_text())
        return None

    return judge


def all_of(*judges: Judge) -> Judge:
    """The first reason any of ``judges`` gives."""

    def judge(message: object, sender: AgentId | None) -> str | None:
        for one in judges:
            reason = one(message, sender)
            if reason is not None:
                return reason
        return None

    return judge


__all__ = ["Judge", "all_of", "refused_tool_calls", "text_check"]
