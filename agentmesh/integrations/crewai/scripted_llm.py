"""A CrewAI ``BaseLLM`` that replays scripted completions, tool calls included.

Crews, examples and tests run without a model provider or an API key: each call
of the model returns the next :class:`ToolCall` or :class:`Answer` of a script.
A tool call drives CrewAI's real tool path (and so the mesh's hooks) either as a
native function call (the OpenAI ``tool_calls`` shape CrewAI parses when the
LLM supports function calling, the default) or as ReAct text (``Action:`` /
``Action Input:``, what CrewAI parses otherwise; ``native_tools=False``).

Two placeholders are filled in when a step is replayed, by plain substitution
(never ``str.format``, so text coming from a task cannot inject anything):
``{task}`` is the description of the task being worked on, and
``{last_tool_result}`` is the output of the most recent tool call the agent saw
(a refusal by the mesh included).

Example::

    llm = ScriptedLLM.of(
        ToolCall("word_count", {"text": "{task}"}),
        Answer("The analysis: {last_tool_result}"),
    )
    analyst = Agent(role="analyst", goal="...", backstory="...", llm=llm, tools=[...])

A script can also be loaded from JSON (:func:`load_script`), e.g. for the worker
process: ``{"steps": [{"tool": "word_count", "args": {"text": "{task}"}},
{"answer": "{last_tool_result}"}], "repeat": true}``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from crewai.llms.base_llm import BaseLLM
from pydantic import Field, PrivateAttr, model_validator

from agentmesh.integrations.crewai.errors import ScriptError, ScriptExhausted

if TYPE_CHECKING:
    from crewai.agents.agent_builder.base_agent import BaseAgent
    from crewai.task import Task
    from crewai.tools.base_tool import BaseTool
    from crewai.utilities.types import LLMMessage
    from pydantic import BaseModel

TASK = "{task}"
LAST_TOOL_RESULT = "{last_tool_result}"
_PLACEHOLDER = re.compile(r"\{task\}|\{last_tool_result\}")
_OBSERVATION = "Observation:"
MAX_SCRIPT_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks to run tool ``name`` with ``args`` (placeholders allowed in strings)."""

    name: str
    args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ScriptError("a tool call needs a tool name")
        if not isinstance(self.args, Mapping) or not all(isinstance(k, str) for k in self.args):
            raise ScriptError(f"the arguments of {self.name!r} must be a mapping of names")


@dataclass(frozen=True, slots=True)
class Answer:
    """The model's final answer (placeholders allowed)."""

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ScriptError("an answer is a string")


Step = ToolCall | Answer


def _substitute(value: Any, task: str, last: str) -> Any:
    if isinstance(value, str):
        # One pass: text put in by one placeholder is never read for another.
        values = {TASK: task, LAST_TOOL_RESULT: last}
        return _PLACEHOLDER.sub(lambda match: values[match[0]], value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, task, last) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(v, task, last) for v in value]
    return value


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def last_tool_result(messages: str | Sequence[Mapping[str, Any]]) -> str:
    """The newest tool output in a conversation (native ``tool`` message or ReAct text)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    for message in reversed(messages):
        if message.get("role") == "tool":
            return _content(message)
        text = _content(message)
        if _OBSERVATION in text:
            return text.rsplit(_OBSERVATION, 1)[1].strip()
    return ""


class ScriptedLLM(BaseLLM):
    """Replays ``steps`` in order, one per call; thread-safe.

    Attributes:
        steps: the script.
        repeat: start again from the first step when the script is done (a worker
            that answers every delegated task the same way); otherwise a call past
            the end raises :class:`ScriptExhausted`.
        native_tools: answer tool calls as native function calls (CrewAI's function
            calling path); ``False`` renders ReAct text instead.
    """

    model: str = "agentmesh/scripted"
    llm_type: str = "scripted"
    steps: list[Step] = Field(default_factory=list)
    repeat: bool = False
    native_tools: bool = True
    _position: int = PrivateAttr(default=0)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="before")
    @classmethod
    def _default_model(cls, data: Any) -> Any:
        # BaseLLM insists on a model name; a script needs none.
        if isinstance(data, dict) and not data.get("model"):
            return {**data, "model": "agentmesh/scripted"}
        return data

    @classmethod
    def of(cls, *steps: Step, repeat: bool = False, native_tools: bool = True) -> ScriptedLLM:
        """A scripted LLM replaying ``steps``."""
        for step in steps:
            if not isinstance(step, ToolCall | Answer):
                raise ScriptError(f"a step is a ToolCall or an Answer, not {type(step).__name__}")
        return cls(steps=list(steps), repeat=repeat, native_tools=native_tools)

    @property
    def calls(self) -> int:
        """How many completions were served so far."""
        return self._position

    def supports_function_calling(self) -> bool:
        return self.native_tools

    def supports_stop_words(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 128_000

    def get_input_tokens_count(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None = None,
        response_model: type[BaseModel] | None = None,
    ) -> int:
        """One token per four characters, without the base class's warning on every call."""
        if isinstance(messages, str):
            return (len(messages) + 3) // 4
        return sum((len(_content(m)) + 3) // 4 for m in messages)

    def _next(self) -> tuple[int, Step]:
        with self._lock:
            position = self._position
            if not self.steps or (position >= len(self.steps) and not self.repeat):
                raise ScriptExhausted(
                    f"the script has {len(self.steps)} step(s) and call {position + 1} "
                    "asked for another",
                    calls=position + 1,
                )
            self._position = position + 1
        return position, self.steps[position % len(self.steps)]

    def call(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Task | None = None,
        from_agent: BaseAgent | None = None,
        response_model: type[BaseModel] | None = None,
    ) -> str | Any:
        """The next step, rendered the way CrewAI parses it.

        Raises:
            ScriptExhausted: past the end of a non-repeating script.
        """
        position, step = self._next()
        task = str(getattr(from_task, "description", "") or "")
        last = last_tool_result(messages)
        if isinstance(step, Answer):
            text = _substitute(step.text, task, last)
            return text if tools else f"Thought: I now know the final answer\nFinal Answer: {text}"
        args = _substitute(dict(step.args), task, last)
        if tools and self.native_tools:
            return [
                {
                    "id": f"call_{position + 1}",
                    "type": "function",
                    "function": {"name": step.name, "arguments": json.dumps(args)},
                }
            ]
        return (
            f"Thought: I should use {step.name}.\nAction: {step.name}\n"
            f"Action Input: {json.dumps(args)}"
        )

    async def acall(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Task | None = None,
        from_agent: BaseAgent | None = None,
        response_model: type[BaseModel] | None = None,
    ) -> str | Any:
        return self.call(messages, tools, callbacks, available_functions, from_task, from_agent)


def step_from_data(raw: object) -> Step:
    """One step from JSON: ``{"tool": NAME, "args": {...}}`` or ``{"answer": TEXT}``.

    Raises:
        ScriptError: anything else.
    """
    if isinstance(raw, dict) and set(raw) <= {"tool", "args"} and "tool" in raw:
        args = raw.get("args", {})
        if not isinstance(args, dict):
            raise ScriptError(f"the args of tool {raw['tool']!r} must be an object")
        return ToolCall(raw["tool"], MappingProxyType(args))
    if isinstance(raw, dict) and set(raw) == {"answer"}:
        return Answer(raw["answer"])
    raise ScriptError(
        f'a step is {{"tool": ..., "args": {{...}}}} or {{"answer": ...}}: {raw!r:.80}'
    )


def script_from_data(raw: object) -> ScriptedLLM:
    """A scripted LLM from ``{"steps": [...], "repeat": bool, "native_tools": bool}``.

    Raises:
        ScriptError: a malformed document or step.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list):
        raise ScriptError('a script is an object with a "steps" list')
    unknown = set(raw) - {"steps", "repeat", "native_tools"}
    if unknown:
        raise ScriptError(f"unknown script field(s): {sorted(unknown)}")
    flags = {name: raw.get(name, default) for name, default in (("repeat", False),)}
    flags["native_tools"] = raw.get("native_tools", True)
    if not all(isinstance(value, bool) for value in flags.values()):
        raise ScriptError('"repeat" and "native_tools" are booleans')
    steps = [step_from_data(step) for step in raw["steps"]]
    if not steps:
        raise ScriptError("a script needs at least one step")
    return ScriptedLLM.of(*steps, repeat=flags["repeat"], native_tools=flags["native_tools"])


def load_script(path: str | Path) -> ScriptedLLM:
    """Load a JSON script file (see :func:`script_from_data`).

    Raises:
        ScriptError: unreadable, too large, not JSON, or malformed.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ScriptError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SCRIPT_BYTES:
        raise ScriptError(f"{path}: larger than {MAX_SCRIPT_BYTES} bytes")
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ScriptError(f"{path}: not JSON ({exc})") from None
    return script_from_data(raw)


__all__ = [
    "LAST_TOOL_RESULT",
    "TASK",
    "Answer",
    "ScriptedLLM",
    "Step",
    "ToolCall",
    "last_tool_result",
    "load_script",
    "script_from_data",
    "step_from_data",
]
