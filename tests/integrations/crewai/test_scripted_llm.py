"""The scripted LLM: replays steps the way CrewAI parses them, on both tool-calling paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentmesh.integrations.crewai import (
    Answer,
    ScriptedLLM,
    ScriptError,
    ScriptExhausted,
    ToolCall,
    load_script,
    script_from_data,
)
from agentmesh.integrations.crewai.scripted_llm import last_tool_result
from tests.integrations.crewai.crews import CountingTool, agent, crew

TOOLS = [{"type": "function", "function": {"name": "word_count"}}]


def test_native_tool_calls_then_answer_then_exhausted() -> None:
    llm = ScriptedLLM.of(ToolCall("word_count", {"text": "a b"}), Answer("done"))
    first = llm.call("go", tools=TOOLS)  # type: ignore[arg-type]
    assert first == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "word_count", "arguments": json.dumps({"text": "a b"})},
        }
    ]
    assert llm.call("go", tools=TOOLS) == "done"  # type: ignore[arg-type]
    with pytest.raises(ScriptExhausted) as raised:
        llm.call("go", tools=TOOLS)  # type: ignore[arg-type]
    assert raised.value.calls == 3
    assert raised.value.code == "crewai_script_exhausted"
    assert llm.calls == 2


def test_text_mode_renders_react() -> None:
    llm = ScriptedLLM.of(ToolCall("word_count", {"text": "x"}), Answer("42"), native_tools=False)
    assert not llm.supports_function_calling()
    action = llm.call("go")
    assert "Action: word_count\nAction Input: " + json.dumps({"text": "x"}) in action
    assert llm.call("go").endswith("Final Answer: 42")


def test_repeat_cycles_the_script() -> None:
    llm = ScriptedLLM.of(Answer("a"), Answer("b"), repeat=True)
    assert [llm.call("x", tools=TOOLS) for _ in range(5)] == ["a", "b", "a", "b", "a"]  # type: ignore[arg-type]


def test_placeholders_are_substituted_once() -> None:
    class FakeTask:
        description = "count {last_tool_result} please"

    llm = ScriptedLLM.of(
        ToolCall("t", {"text": "{task}", "n": 3}), Answer("got {last_tool_result}")
    )
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "tool", "content": "words: 9"},
    ]
    call = llm.call(messages, tools=TOOLS, from_task=FakeTask())  # type: ignore[arg-type]
    # The task's own "{last_tool_result}" is text, not a placeholder: no second pass.
    assert json.loads(call[0]["function"]["arguments"]) == {
        "text": "count {last_tool_result} please",
        "n": 3,
    }
    assert llm.call(messages, tools=TOOLS) == "got words: 9"  # type: ignore[arg-type]


def test_last_tool_result_reads_react_observations() -> None:
    messages = [{"role": "user", "content": "Thought: x\nObservation: words: 4"}]
    assert last_tool_result(messages) == "words: 4"
    assert last_tool_result("nothing here") == ""


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "steps"),
        ({"steps": []}, "at least one"),
        ({"steps": [{"tool": "x", "args": []}]}, "must be an object"),
        ({"steps": [{"say": "x"}]}, "a step is"),
        ({"steps": [{"answer": 3}]}, "an answer is a string"),
        ({"steps": [{"answer": "x"}], "loop": True}, "unknown script field"),
        ({"steps": [{"answer": "x"}], "repeat": "yes"}, "booleans"),
        ({"steps": [{"tool": " "}]}, "tool name"),
    ],
)
def test_bad_scripts_are_typed_errors(raw: object, message: str) -> None:
    with pytest.raises(ScriptError, match=message) as raised:
        script_from_data(raw)
    assert raised.value.code == "crewai_script"


def test_load_script_from_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"steps": [{"answer": "hi"}], "repeat": True}))
    llm = load_script(path)
    assert llm.repeat
    assert llm.steps == [Answer("hi")]
    path.write_text("{not json")
    with pytest.raises(ScriptError, match="not JSON"):
        load_script(path)
    with pytest.raises(ScriptError, match="missing"):
        load_script(tmp_path / "missing.json")
    with pytest.raises(ScriptError, match="ToolCall or an Answer"):
        ScriptedLLM.of("hello")  # type: ignore[arg-type]


@pytest.mark.parametrize("native", [True, False], ids=["native", "react"])
def test_a_real_crew_runs_the_script_through_its_tools(native: bool) -> None:
    tool = CountingTool()
    llm = ScriptedLLM.of(
        ToolCall("word_count", {"text": "{task}"}),
        Answer("the count is {last_tool_result}"),
        native_tools=native,
    )
    output = crew(agent("analyst", llm, [tool]), task="one two three four").kickoff()
    assert tool.runs == [{"text": "one two three four"}]
    assert output.raw == "the count is words: 4"
