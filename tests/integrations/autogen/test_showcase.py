"""The AutoGen showcase (``examples/autogen_team.py``) does what its printout says.

``tests/test_examples.py`` runs the example itself (embedded and over NATS, in
worker processes) and checks its exit status; this runs it in-process on the
embedded mesh and checks each outcome, and the refusal parser it reads results with.
"""

from __future__ import annotations

import io
from dataclasses import replace

from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_core.models import FunctionExecutionResult
from rich.console import Console

from agentmesh.integrations.autogen.showcase import run_showcase
from agentmesh.integrations.autogen.showcase_report import ToolOutcome, tool_outcomes


async def test_the_showcase_governs_refuses_demotes_hands_off_and_rejects() -> None:
    printed = io.StringIO()
    report = await run_showcase(console=Console(file=printed, width=100))

    assert report.problems() == []
    assert [(t.member, t.tool, t.code, t.rule) for t in report.tools] == [
        ("researcher", "lookup", "allowed", None),
        ("accountant", "transfer", "policy_denied", "transfer-limit"),
        ("intern", "records_delete", "policy_denied", "no-deletes"),
        ("accountant", "transfer", "allowed", None),
        ("intern", "fetch_url", "egress_denied", "egress"),
    ]
    assert [source for source, _ in report.transcript] == [
        "researcher",
        "accountant",
        "intern",
        "researcher",
        "accountant",
        "intern",
        "researcher",
        "accountant",
        "researcher",  # the intern's turn: it is left out
        "accountant",
    ]
    [handoff] = report.handoffs
    primary, standby = (h for h in report.hosts if h.member == "researcher")
    assert {handoff.from_did, handoff.to_did} == {primary.did, standby.did}
    assert report.flagged == ["intern"]
    assert [j.reason for j in report.judged] == [
        "tool calls refused by policy: transfer",
        "tool calls refused by policy: records_delete",
        "tool calls refused by policy: fetch_url",
    ]
    for counts in [report.rejected, *(h.rejected for h in report.hosts)]:
        assert {k: v for k, v in counts.items() if k != "quarantined"} == {
            "bad_signature": 1,
            "autogen_sender_unbound": 1,
            "autogen_team_forged": 1,
            "malformed": 1,
            "replayed": 1,
        }
    text = " ".join(printed.getvalue().split())
    assert "governed transfer: refused policy_denied: rule transfer-limit" in text
    assert "governed fetch_url: refused egress_denied: cloud metadata endpoint" in text
    assert "left out intern from now on: drift alarm" in text
    assert text.endswith("replayed 1")

    # Each outcome is needed: the report is not ok without it.
    assert not replace(report, handoffs=[]).ok
    assert not replace(report, flagged=[]).ok
    assert not replace(report, tools=[t for t in report.tools if t.rule != "no-deletes"]).ok
    assert not replace(report, transcript=[*report.transcript, ("accountant", "forged")]).ok
    assert not replace(report, rejected={}).ok
    assert replace(report, live=True, stop_reason="done").ok


def test_refusals_are_read_from_the_tool_results() -> None:
    event = ToolCallExecutionEvent(
        source="intern",
        content=[
            FunctionExecutionResult(
                content="[agentmesh:refused code=policy_denied rule=no-deletes ring=3] no",
                name="records_delete",
                call_id="1",
                is_error=True,
            ),
            FunctionExecutionResult(content="boom", name="lookup", call_id="2", is_error=True),
            FunctionExecutionResult(content="fine", name="lookup", call_id="3", is_error=False),
        ],
    )
    assert tool_outcomes(event) == [
        ToolOutcome("intern", "records_delete", False, "policy_denied", "no-deletes", "no"),
        ToolOutcome("intern", "lookup", False, "error", None, ""),
        ToolOutcome("intern", "lookup", True, detail="fine"),
    ]
