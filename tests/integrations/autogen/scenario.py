"""Scripted AgentChat members and the team policy shared by the tests and their worker processes.

A member is an ``AssistantAgent`` whose model is a ``ReplayChatCompletionClient``
playing a script: each step is either text (the member's reply) or
``{"call": TOOL, "args": {...}}`` (a tool call; the member's turn is then the
tool's summary). Its tools are governed by the process's governor. Worker
processes build members with :func:`scripted_member` (``--member
NAME=tests.integrations.autogen.scenario:scripted_member --option script=JSON``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from autogen_agentchat.agents import AssistantAgent
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient

from agentmesh.integrations.autogen import governed_tool
from agentmesh.integrations.autogen.worker import MemberSpec
from agentmesh.policy.governor import Governor

TEAM_POLICY: dict[str, Any] = {
    "version": 1,
    "name": "autogen-team",
    "default": "deny",
    "rules": [
        {"id": "team-messages", "effect": "allow", "match": {"actions": ["autogen.*"]}},
        {
            "id": "no-deletes",
            "effect": "deny",
            "description": "nobody deletes records",
            "match": {"actions": ["records.delete"], "kinds": ["tool"]},
        },
        {
            "id": "transfer-limit",
            "effect": "deny",
            "match": {"actions": ["payments.transfer"], "kinds": ["tool"]},
            "when": {"args.amount": {"gt": 1000}},
        },
        {
            "id": "tools",
            "effect": "allow",
            "match": {
                "actions": ["payments.transfer", "records.read", "research.lookup"],
                "kinds": ["tool"],
            },
        },
    ],
}

MODEL = ModelInfo(
    vision=False,
    function_calling=True,
    json_output=False,
    family=ModelFamily.UNKNOWN,
    structured_output=False,
)


def write_policy(path: Path) -> Path:
    path.write_text(yaml.safe_dump(TEAM_POLICY), encoding="utf-8")
    return path


def records_read(record_id: str) -> str:
    """Read a record."""
    return f"record {record_id}: ok"


def records_delete(record_id: str) -> str:
    """Delete a record."""
    return f"record {record_id} deleted"  # never reached: the policy refuses it


def transfer(account: str, amount: float) -> str:
    """Transfer money to an account."""
    return f"sent {amount} to {account}"


async def slow_lookup(topic: str, seconds: float) -> str:
    """Look a topic up (takes a while)."""
    await asyncio.sleep(seconds)
    return f"notes on {topic}"


def tools(governor: Governor | None) -> list[FunctionTool]:
    if governor is None:
        return [FunctionTool(f, description=f.__doc__ or f.__name__) for f in (records_read,)]
    return [
        governed_tool(governor, records_read, action="records.read"),
        governed_tool(governor, records_delete, action="records.delete"),
        governed_tool(governor, transfer, action="payments.transfer", cost_arg="amount"),
        governed_tool(governor, slow_lookup, action="research.lookup"),
    ]


def completions(script: Sequence[object]) -> list[str | CreateResult]:
    out: list[str | CreateResult] = []
    for number, step in enumerate(script):
        if isinstance(step, str):
            out.append(step)
        else:
            assert isinstance(step, dict)
            call = FunctionCall(
                id=f"call-{number}", name=step["call"], arguments=json.dumps(step["args"])
            )
            out.append(
                CreateResult(
                    finish_reason="function_calls",
                    content=[call],
                    usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
                    cached=False,
                )
            )
    return out


def member(name: str, governor: Governor | None, script: Sequence[object]) -> AssistantAgent:
    return AssistantAgent(
        name,
        model_client=ReplayChatCompletionClient(completions(script), model_info=MODEL),
        tools=tools(governor),
        description=f"{name}, a scripted member",
    )


def scripted_member(spec: MemberSpec) -> AssistantAgent:
    """Worker factory: ``--option script=JSON`` (a list of steps) for this member."""
    return member(spec.name, spec.governor, json.loads(spec.options["script"]))
