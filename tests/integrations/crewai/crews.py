"""Builders for real CrewAI crews on real MeshCrews (no fakes of either)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from crewai import Agent, Crew, Task
from crewai.agents.agent_builder.base_agent import BaseAgent
from crewai.llms.base_llm import BaseLLM
from crewai.tools import BaseTool
from pydantic import BaseModel, Field, PrivateAttr

from agentmesh.integrations.crewai import CrewMeshConfig, DelegationSettings
from agentmesh.integrations.crewai.demo import DEMO_TOOLS, demo_policy, offline_egress
from agentmesh.policy.governed import ToolSpec


class _Text(BaseModel):
    text: str = Field(default="", description="text")


class CountingTool(BaseTool):
    """Records every run (so a test can prove a refused call never ran)."""

    name: str = "word_count"
    description: str = "Count the words of a text."
    args_schema: type[BaseModel] = _Text
    _runs: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @property
    def runs(self) -> list[dict[str, Any]]:
        return self._runs

    def _run(self, *args: Any, **kwargs: Any) -> str:
        self._runs.append(dict(kwargs))
        return f"words: {len(str(kwargs.get('text', '')).split())}"


class BlockingTool(BaseTool):
    """Blocks until released: an agent that is busy when the kill switch hits."""

    name: str = "word_count"
    description: str = "Count the words of a text (slowly)."
    args_schema: type[BaseModel] = _Text
    _entered: threading.Event = PrivateAttr(default_factory=threading.Event)
    _release: threading.Event = PrivateAttr(default_factory=threading.Event)

    @property
    def entered(self) -> threading.Event:
        return self._entered

    @property
    def release(self) -> threading.Event:
        return self._release

    def _run(self, *args: Any, **kwargs: Any) -> str:
        self._entered.set()
        self._release.wait(30)
        return f"words: {len(str(kwargs.get('text', '')).split())} (late)"


class NamedTool(CountingTool):
    """A counting tool under another name (``run_shell``, ``fetch_url``, ...)."""


def named(name: str) -> NamedTool:
    return NamedTool(name=name, description=f"The {name} tool.")


def agent(role: str, llm: BaseLLM, tools: Sequence[BaseTool] = ()) -> Agent:
    return Agent(
        role=role, goal=f"be a good {role}", backstory="A test agent.", llm=llm, tools=list(tools)
    )


def crew(*agents: Agent, task: str = "Count the words of: one two three") -> Crew:
    """One task per agent, in order."""
    members: list[BaseAgent] = list(agents)
    tasks = [Task(description=task, expected_output="An answer.", agent=a) for a in agents]
    return Crew(agents=members, tasks=tasks)


def mesh_name() -> str:
    return f"crewtest-{uuid.uuid4().hex[:10]}"


def config(
    name: str,
    mesh: str,
    *,
    capabilities: dict[str, tuple[str, ...]] | None = None,
    delegates: tuple[str, ...] = (),
    anchors: tuple[str, ...] = (),
    authorities: tuple[str, ...] = (),
    validate: Callable[[Any, str], bool] | None = None,
    timeout: float = 10.0,
    tools: dict[str, ToolSpec] | None = None,
    **fields: Any,
) -> CrewMeshConfig:
    return CrewMeshConfig(
        policy=fields.pop("policy", demo_policy()),
        name=name,
        mesh=mesh,
        capabilities=capabilities or {},
        delegates=delegates,
        tools=tools if tools is not None else DEMO_TOOLS,
        egress=offline_egress(),
        anchors=anchors,
        authorities=authorities,
        delegation=DelegationSettings(timeout=timeout, validate=validate, wait=60.0),
        **fields,
    )


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
