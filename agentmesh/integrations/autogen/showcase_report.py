"""What the AutoGen showcase saw, and how it prints it: tool outcomes, refusals, trust.

:class:`TeamShowcaseReport` is what :func:`~.showcase.run_showcase` returns;
:meth:`TeamShowcaseReport.problems` lists what did not happen as the demo's
scripts say it must (the example's exit status). Tool outcomes are read from the
results the members saw (:func:`tool_outcomes`), so they are the same whether
the members ran here or in worker processes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
    ToolCallSummaryMessage,
)
from rich import box
from rich.console import Console
from rich.table import Table

from agentmesh.integrations.autogen.delivery import Judgement
from agentmesh.integrations.autogen.errors import REFUSAL_MARKER
from agentmesh.integrations.autogen.handoff import Handoff
from agentmesh.integrations.autogen.selection import Skip

FORGERIES = ("bad_signature", "autogen_sender_unbound", "autogen_team_forged", "malformed")
_REFUSAL = re.compile(re.escape(REFUSAL_MARKER) + r" code=(\S+) rule=(\S+) ring=\S+\] ?(.*)", re.S)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """One tool call of the run, as the member saw its result."""

    member: str
    tool: str
    allowed: bool
    code: str = "allowed"
    rule: str | None = None
    detail: str = ""


@dataclass
class Host:
    """A runtime hosting one member: where it runs and what it counted."""

    member: str
    did: str
    where: str
    rejected: dict[str, int] = field(default_factory=dict)
    governed: dict[str, int] = field(default_factory=dict)


@dataclass
class TeamShowcaseReport:
    """What happened, for the printout and the tests."""

    transcript: list[tuple[str, str]] = field(default_factory=list)
    tools: list[ToolOutcome] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    handoffs: list[Handoff] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    judged: list[Judgement] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    flagged_dids: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    stop_reason: str | None = None
    live: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        """What did not happen as the scripts say it must (empty: all did)."""
        if self.live:
            return [] if self.stop_reason is not None else ["the team did not finish"]
        outcomes = {(t.member, t.tool, t.code, t.rule) for t in self.tools}
        expected = {
            "the 4000 payment refused": (
                "accountant",
                "transfer",
                "policy_denied",
                "transfer-limit",
            ),
            "the 400 payment allowed": ("accountant", "transfer", "allowed", None),
            "the deletion refused": ("intern", "records_delete", "policy_denied", "no-deletes"),
            "the metadata fetch refused": ("intern", "fetch_url", "egress_denied", "egress"),
        }
        problems = [what for what, outcome in expected.items() if outcome not in outcomes]
        if len(self.handoffs) != 1 or self.handoffs[0].to_did is None:
            problems.append(f"one handoff to a standby expected: {self.handoffs}")
        if self.flagged != ["intern"] or not any(s.member == "intern" for s in self.skipped):
            problems.append(f"only the intern demoted and skipped: flagged {self.flagged}")
        last = self.transcript[-1] if self.transcript else ("", "")
        if last[0] != "accountant" or not last[1].startswith("APPROVED"):
            problems.append(f"the accountant approves last, not {last}")
        if any("forged" in text for _, text in self.transcript):
            problems.append("a forged message reached the team")
        for where, counts in [("coordinator", self.rejected)] + [
            (f"{h.member} {h.where}", h.rejected) for h in self.hosts
        ]:
            missing = [code for code in FORGERIES if counts.get(code, 0) < 1]
            if missing:
                problems.append(f"{where} did not reject {', '.join(missing)}")
        return problems


def tool_outcomes(event: ToolCallExecutionEvent) -> list[ToolOutcome]:
    """The outcome of each call in ``event`` (a refusal's code and rule read from its text)."""
    outcomes = []
    for result in event.content:
        refused = _REFUSAL.match(result.content) if result.is_error else None
        if refused is not None:
            code, rule, detail = refused.groups()
            outcomes.append(
                ToolOutcome(
                    event.source,
                    result.name,
                    False,
                    code,
                    None if rule == "None" else rule,
                    detail.strip(),
                )
            )
        elif result.is_error:
            outcomes.append(ToolOutcome(event.source, result.name, False, "error", None, ""))
        else:
            outcomes.append(ToolOutcome(event.source, result.name, True, detail=result.content))
    return outcomes


def short_did(did: str | None) -> str:
    return "-" if did is None else f"…{did[-8:]}"


# -- printing ------------------------------------------------------------------------------------


def print_event(out: Console, item: BaseAgentEvent | BaseChatMessage) -> list[ToolOutcome]:
    if isinstance(item, ToolCallRequestEvent):
        for call in item.content:
            out.print(f"  [cyan]{item.source}[/] calls {call.name}({call.arguments})")
        return []
    if isinstance(item, ToolCallExecutionEvent):
        outcomes = tool_outcomes(item)
        for o in outcomes:
            if o.allowed:
                out.print(f"  [magenta]governed[/] {o.tool}: [green]allowed[/] → {o.detail}")
            else:
                out.print(
                    f"  [magenta]governed[/] {o.tool}: [bold red]refused[/] {o.code}: {_why(o)}"
                )
        return outcomes
    if isinstance(item, BaseChatMessage) and not isinstance(item, ToolCallSummaryMessage):
        who = "task" if item.source == "user" else item.source
        out.print(f"[bold]{who}[/]: {item.to_text()}")
    return []


CODE_MEANINGS = {
    "bad_signature": "signed with another key than the sender's (a forgery in its name)",
    "autogen_sender_unbound": "validly signed, by an identity that does not host the member "
    "it claims to be",
    "autogen_team_forged": "no sender agent, but a member's name in the body (the team's "
    "manager would have believed it)",
    "malformed": "not an envelope at all",
    "replayed": "a frame every runtime had already seen",
    "quarantined": "from the quarantined host, after the order reached it",
}


def _why(outcome: ToolOutcome) -> str:
    if outcome.allowed:
        return outcome.detail[:48]
    if outcome.rule and outcome.rule != "egress":
        return f"rule {outcome.rule}"
    reason = re.search(r"\(([^()]*)\)\s*$", outcome.detail)
    return reason.group(1) if reason else outcome.detail[:36]


def print_tables(out: Console, report: TeamShowcaseReport, coordinator: str) -> None:
    tools = Table(title="Tool calls, as each member's governor decided them")
    for column in ("member", "tool", "decision", "why"):
        tools.add_column(column)
    for o in report.tools:
        decision = "[green]allowed[/]" if o.allowed else f"[red]refused {o.code}[/]"
        tools.add_row(o.member, o.tool, decision, _why(o))
    out.print(tools)

    primary = report.handoffs[0].from_did if report.handoffs else None
    runtimes: list[tuple[str, str, dict[str, int], dict[str, int]]] = [
        ("manager", "", report.rejected, {})
    ] + [
        (
            h.member,
            ("primary" if h.did == primary else "standby") if h.member == "researcher" else "",
            h.rejected,
            h.governed,
        )
        for h in report.hosts
    ]
    codes = sorted({code for _, _, rejected, _ in runtimes for code in rejected})
    refused = Table(
        title="Refused at the mesh boundary, by runtime (each counts its own)",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
    )
    refused.add_column("", no_wrap=True)
    for name, where, _, _ in runtimes:
        refused.add_column(f"{name}\n{where}", justify="right")
    for code in codes:
        refused.add_row(code, *(str(r.get(code, 0) or "-") for _, _, r, _ in runtimes))
    for kind in ("policy_allowed", "policy_denied"):
        label = "tools " + kind.split("_")[1]
        refused.add_row(label, "", *(str(g.get(kind, 0) or "-") for _, _, _, g in runtimes[1:]))
    out.print(refused)
    for code in codes:
        if code in CODE_MEANINGS:
            out.print(f"  [bold]{code}[/]: {CODE_MEANINGS[code]}")

    trust = Table(title=f"Trust at the coordinator {short_did(coordinator)}")
    for column in ("member host", "score", "judged bad", "drift alarm"):
        trust.add_column(column)
    bad = Counter(j.did for j in report.judged)
    for host in report.hosts:
        score = report.scores.get(host.did)
        alarm = "[bold red]yes: not selected[/]" if host.did in report.flagged_dids else "no"
        trust.add_row(
            f"{host.member} {short_did(host.did)}",
            "-" if score is None else f"{score:.3f}",
            str(bad[host.did]),
            alarm,
        )
    out.print(trust)
    for h in report.handoffs:
        member = h.agent_type.rsplit("_", 1)[0]
        out.print(
            f"[yellow]handed off[/] {member}'s turn: {short_did(h.from_did)} "
            f"→ {short_did(h.to_did)} ({h.reason.split(': ', 1)[-1]})"
        )
    skipped = Counter((s.member, s.reason) for s in report.skipped)
    for (member, reason), times in skipped.items():
        out.print(f"[yellow]left out[/] of {times} speaker selections: {member} ({reason})")


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


__all__ = [
    "CODE_MEANINGS",
    "FORGERIES",
    "Host",
    "TeamShowcaseReport",
    "ToolOutcome",
    "counts_text",
    "print_event",
    "print_tables",
    "short_did",
    "tool_outcomes",
]
