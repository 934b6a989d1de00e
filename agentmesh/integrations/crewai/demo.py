"""The demo crews' tools, policy and scripts (used by the example, the worker and the tests).

Every tool is offline and harmless: ``fetch_url`` never opens a connection (it
says what it would fetch) and ``run_shell`` never runs anything; they exist so a
crew has something the policy allows, something it forbids and something the
egress guard stops.
"""

from __future__ import annotations

from typing import Any

from crewai.tools import BaseTool
from pydantic import BaseModel, Field

from agentmesh.integrations.crewai.scripted_llm import Answer, ScriptedLLM, ToolCall
from agentmesh.policy.egress import EgressGuard
from agentmesh.policy.engine import CompiledPolicy
from agentmesh.policy.governed import ToolSpec

ANALYSIS = "analysis"


class _Text(BaseModel):
    text: str = Field(description="The text to work on.")


class _Url(BaseModel):
    url: str = Field(description="The URL to fetch.")


class _Command(BaseModel):
    command: str = Field(description="The shell command.")


class WordCountTool(BaseTool):
    """Counts words: a deterministic stand-in for real analysis."""

    name: str = "word_count"
    description: str = "Count the words of a text."
    args_schema: type[BaseModel] = _Text

    def _run(self, *args: Any, **kwargs: Any) -> str:
        text = str(kwargs.get("text", args[0] if args else ""))
        return f"words: {len(text.split())}"


class FetchUrlTool(BaseTool):
    """Offline: reports what it would fetch (the mesh's egress guard sees the URL first)."""

    name: str = "fetch_url"
    description: str = "Fetch a web page."
    args_schema: type[BaseModel] = _Url

    def _run(self, *args: Any, **kwargs: Any) -> str:
        url = str(kwargs.get("url", args[0] if args else ""))
        return f"(offline demo) the page at {url} says hello"


class ShellTool(BaseTool):
    """Never runs anything: the demo policy forbids it, and it is a stub anyway."""

    name: str = "run_shell"
    description: str = "Run a shell command on the host."
    args_schema: type[BaseModel] = _Command

    def _run(self, *args: Any, **kwargs: Any) -> str:
        return "(demo stub) nothing was run"


def demo_tools() -> list[BaseTool]:
    return [WordCountTool(), FetchUrlTool(), ShellTool()]


#: How the demo policy reads each tool call (action names, URL arguments).
DEMO_TOOLS: dict[str, ToolSpec] = {
    "word_count": ToolSpec("text.word_count"),
    "fetch_url": ToolSpec("web.fetch", url_args=("url",)),
    "run_shell": ToolSpec("shell.exec"),
    "delegate_to_mesh": ToolSpec("mesh.delegate"),
}

#: The crews' policy: text tools and web fetches (egress-guarded) are fine, the shell
#: is not; delegating and serving delegated tasks are allowed between crews.
DEMO_POLICY: dict[str, Any] = {
    "version": 1,
    "name": "crewai-demo",
    "revision": 1,
    "default": "deny",
    "rules": [
        {
            "id": "no-shell",
            "effect": "deny",
            "description": "no agent runs shell commands",
            "match": {"actions": ["shell.*"], "kinds": ["tool"]},
        },
        {
            "id": "text-tools",
            "effect": "allow",
            "match": {"actions": ["text.*"], "kinds": ["tool"]},
        },
        {
            "id": "web-fetch",
            "effect": "allow",
            "match": {"actions": ["web.fetch"], "kinds": ["tool"]},
        },
        {
            "id": "delegate",
            "effect": "allow",
            "match": {"actions": ["mesh.delegate"], "kinds": ["tool"]},
        },
        {
            "id": "crew-tasks",
            "effect": "allow",
            "match": {"actions": ["crewai.task"], "kinds": ["message"]},
        },
    ],
}


def demo_policy() -> CompiledPolicy:
    return CompiledPolicy.from_data(DEMO_POLICY, file="<crewai demo policy>")


def offline_egress() -> EgressGuard:
    """An egress guard that resolves nothing (literal addresses only): no DNS in demos."""
    return EgressGuard(resolver=lambda host: [])


def analyst_llm() -> ScriptedLLM:
    """Answers every task by counting its words."""
    return ScriptedLLM.of(
        ToolCall("word_count", {"text": "{task}"}), Answer("{last_tool_result}"), repeat=True
    )


def delegating_llm(capability: str = ANALYSIS, task: str = "{task}") -> ScriptedLLM:
    """Hands its task to the mesh once, then answers with what came back."""
    return ScriptedLLM.of(
        ToolCall("delegate_to_mesh", {"capability": capability, "task": task}),
        Answer("{last_tool_result}"),
    )


__all__ = [
    "ANALYSIS",
    "DEMO_POLICY",
    "DEMO_TOOLS",
    "FetchUrlTool",
    "ShellTool",
    "WordCountTool",
    "analyst_llm",
    "delegating_llm",
    "demo_policy",
    "demo_tools",
    "offline_egress",
]
