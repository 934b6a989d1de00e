"""``agentmesh demo``, governance act: signed cards, trust rings, drift, policy on the next message.

Five agents on their own mesh (``demo-gov``), each on its own connection:

* a **planner** (the trust anchor) and a **treasury**;
* three research providers, **researcher**, **analyst** and **newcomer**.

All five publish signed agent cards to the :class:`~agentmesh.directory.Directory`.
The providers deliver findings to the planner, whose node turns every handled
delivery into a signed receipt (:class:`~agentmesh.trustnet.ReceiptInterceptor`);
the planner and the treasury both fold the receipt stream into their own
:class:`trust.TrustEngine` (:class:`~agentmesh.trustnet.MeshTrust`). The planner
then finds ``research`` providers ranked by trust. The treasury runs a small policy
(:class:`~agentmesh.policy.governance.Governance` with the trust engine as ring
source, :class:`~agentmesh.policy.PolicyInterceptor` on its node). The researcher
starts delivering bad results until the outcome-drift detector demotes it to
ring 3, and its very next ``payments.refund`` is refused by the rule named in the
error, while the analyst's identical request goes through. Two governed tool calls
are refused too (an amount over the limit, the cloud metadata address).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.table import Table

from agentmesh.audit import MemoryAuditSink
from agentmesh.demo.governance_report import Attempt, GovernanceReport
from agentmesh.demo.waiting import wait_for
from agentmesh.directory.directory import Directory
from agentmesh.errors import RemoteError
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage, Stage
from agentmesh.node.node import MeshNode
from agentmesh.policy import (
    CompiledPolicy,
    EgressGuard,
    PolicyDenied,
    PolicyInterceptor,
    acting_as,
    governed,
)
from agentmesh.policy.governance import Governance
from agentmesh.transport.factory import make_transport
from agentmesh.transport.memory import InMemoryBus
from agentmesh.trustnet import MeshTrust, find_trusted
from iatp.identity import AgentIdentity
from registry import Capability
from trust import DriftDetected, RingChanged, TrustEvent

MESH = "demo-gov"
PROVIDERS = ("researcher", "analyst", "newcomer")
ROSTER = ("planner", "treasury", *PROVIDERS)
#: Good deliveries per provider in each honest round (three: ring 2 is earned by qualifying
#: on two recomputes in a row, ``docs/trust.md`` section 5a).
DELIVERIES = {"researcher": 7, "analyst": 6, "newcomer": 1}
HONEST_ROUNDS = 3
#: The drifting agent fails until it is demoted; this bounds the run if it never is.
MAX_BAD = 20
CARD_TTL_MS = 60_000
METADATA_URL = "http://169.254.169.254/"
OFFERS = {"planner": "planning", "treasury": "payments"} | dict.fromkeys(PROVIDERS, "research")

#: The treasury's policy. Ring capabilities stay open so that the named rules decide.
TREASURY_POLICY: dict[str, object] = {
    "version": 1,
    "name": "treasury",
    "revision": 1,
    "default": "deny",
    "rules": [
        {
            "id": "sandbox-no-payments",
            "effect": "deny",
            "description": "agents in ring 3 (sandbox) never touch payments",
            "match": {"actions": ["payments.*"], "rings": [3]},
        },
        {
            "id": "refunds-for-trusted-agents",
            "effect": "allow",
            "match": {"actions": ["payments.refund"], "kinds": ["message"], "rings": [1, 2]},
        },
        {
            "id": "transfer-limit",
            "effect": "deny",
            "match": {"actions": ["payments.transfer"], "kinds": ["tool"]},
            "when": {"args.amount": {"gt": 1000}},
        },
        {
            "id": "small-transfers",
            "effect": "allow",
            "match": {"actions": ["payments.transfer"], "kinds": ["tool"]},
            "when": {"args.amount": {"gt": 0}},
        },
        {"id": "web-fetch", "effect": "allow", "match": {"actions": ["web.fetch"]}},
    ],
    "rings": {
        "capabilities": {ring: ["payments.*", "web.fetch"] for ring in (1, 2, 3)},
        "default": 1,  # no cap from the policy: the trust engine's ring decides
    },
}


def _rule_of(text: str) -> str | None:
    found = re.search(r"rule=([\w.-]+)", text)
    return found.group(1) if found else None


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Cast:
    """The act's nodes, directories and trust services, and how to wait for them."""

    def __init__(self, nats_url: str | None) -> None:
        bus = InMemoryBus() if nats_url is None else None
        self.nodes = {
            name: MeshNode(
                AgentIdentity.generate(),
                make_transport(nats_url, name=f"gov-{name}", bus=bus),
                config=NodeConfig(mesh=MESH),
            )
            for name in ROSTER
        }
        self.names = {node.did: name for name, node in self.nodes.items()}
        self.directories: dict[str, Directory] = {}
        self.trust: dict[str, MeshTrust] = {}

    def __getitem__(self, name: str) -> MeshNode:
        return self.nodes[name]

    async def start(self) -> None:
        """Start every node, publish every card, start the two trust services."""
        for name, node in self.nodes.items():
            await node.start()
            directory = Directory(node.transport, mesh=MESH, node=node.did)
            self.directories[name] = directory
            await directory.start()
            await directory.register(
                node.identity,
                display_name=name,
                capabilities=(Capability(name=OFFERS[name], version="1"),),
                ttl_ms=CARD_TTL_MS,
            )
        anchor = (self["planner"].did,)
        for name in ("planner", "treasury"):
            node = self[name]
            service = MeshTrust(
                node.transport,
                node.identity,
                mesh=MESH,
                pre_trusted=anchor,
                recompute_interval=None,
            )
            await service.start()
            self.trust[name] = service
        self["planner"].add_interceptor(self.trust["planner"].interceptor, stage=Stage.TRUST)

    async def settle(self, receipts: int) -> None:
        """Wait until ``receipts`` receipts were published and both engines folded them."""
        interceptor = self.trust["planner"].interceptor
        await wait_for(
            lambda: (
                interceptor.published + interceptor.failed_publishes + interceptor.dropped
                >= receipts
            ),
            5.0,
        )
        for service in self.trust.values():
            await service.ledger.catch_up(timeout=5.0)

    async def aclose(self) -> None:
        for service in self.trust.values():
            await service.aclose()
        for name, directory in self.directories.items():
            with contextlib.suppress(Exception):  # best effort: the card expires anyway
                await directory.deregister(self[name].identity)
            await directory.aclose()
        for node in self.nodes.values():
            await node.aclose()


def _say(out: Console, tag: str, text: str) -> None:
    colour = {"policy": "magenta", "tool": "magenta", "drift": "red"}.get(tag, "cyan")
    out.print(f"[{colour}]{tag:<9}[/] {text}")


def _verdict(attempt: Attempt) -> str:
    if attempt.outcome == "allowed":
        return "[green]allowed[/]"
    return f"[bold red]refused[/] {attempt.outcome} ({attempt.rule})"


async def _refund(cast: _Cast, agent: str, report: GovernanceReport, out: Console) -> None:
    """``agent`` asks the treasury for a refund (always the same body); record the outcome."""
    ring = cast.trust["treasury"].engine.ring(cast[agent].did)
    body = json.dumps({"order": "A-17", "amount": 42}).encode()
    try:
        await cast[agent].request(cast["treasury"].did, "payments.refund", body)
        attempt = Attempt(agent, "payments.refund", "allowed", ring=ring)
    except RemoteError as refused:
        attempt = Attempt(
            agent, "payments.refund", refused.remote_code, _rule_of(str(refused)), ring
        )
    report.attempts.append(attempt)
    _say(out, "policy", f"{agent:<10} payments.refund (ring {ring}): {_verdict(attempt)}")


def _tool_calls(
    cast: _Cast, governance: Governance, report: GovernanceReport, out: Console
) -> None:
    """Two governed tools on the treasury, called as the analyst."""

    @governed(governance.governor, "payments.transfer", cost_arg="amount")
    def transfer(account: str, amount: float) -> str:
        return f"sent {amount} to {account}"

    @governed(governance.governor, "web.fetch", url_args=("url",))
    def fetch(url: str) -> str:  # never runs here: the egress guard refuses first
        raise AssertionError(f"the egress guard let {url} through")

    calls: list[tuple[str, str, Callable[[], str]]] = [
        ("payments.transfer", "transfer(250)", lambda: transfer("acct-7", 250)),
        ("payments.transfer", "transfer(5000)", lambda: transfer("acct-7", 5000)),
        ("web.fetch", f"fetch({METADATA_URL})", lambda: fetch(METADATA_URL)),
    ]
    with acting_as(cast["analyst"].did):
        for action, label, call in calls:
            try:
                call()
                attempt = Attempt("analyst", action, "allowed")
            except PolicyDenied as denied:
                reason = re.search(r"\(([^()]*)\)$", str(denied))  # the egress guard's reason
                rule = reason.group(1) if denied.code == "egress_denied" and reason else denied.rule
                attempt = Attempt("analyst", action, denied.code, rule, denied.ring)
            report.attempts.append(attempt)
            _say(out, "tool", f"analyst    {label}: {_verdict(attempt)}")


def _ranking(cast: _Cast, *, worst_ring: int = 3) -> list[tuple[str, float]]:
    engine = cast.trust["planner"].engine
    cards = find_trusted(cast.directories["planner"], engine, "research", worst_ring=worst_ring)
    return [(cast.names[c.did], engine.score(c.did)) for c in cards if c.did in cast.names]


def _trust_table(cast: _Cast, report: GovernanceReport, tally: dict[str, list[int]]) -> Table:
    table = Table(title="Trust, as the treasury folded it")
    for column in ("agent", "ok", "failed", "score", "ring"):
        table.add_column(column)
    for name in PROVIDERS:
        before, after = report.rings_before[name], report.rings_after[name]
        ring = str(after) if before == after else f"[bold red]{before} → {after}[/] (drift)"
        table.add_row(
            name, str(tally[name][0]), str(tally[name][1]), f"{report.scores[name]:.2f}", ring
        )
    return table


async def run_governance_act(
    nats_url: str | None = None, *, console: Console | None = None
) -> GovernanceReport:
    """Run the governance act (see the module docstring); returns a :class:`GovernanceReport`."""
    out = console or Console(emoji=False, highlight=False)
    report = GovernanceReport()
    out.rule("[bold]governance[/]: signed cards, trust rings, policy on the next message")
    cast = _Cast(nats_url)
    tally = {name: [0, 0] for name in PROVIDERS}  # good, bad deliveries
    events: list[TrustEvent] = []

    async def judge(message: InboundMessage) -> bytes:
        if json.loads(message.body)["quality"] != "good":
            raise ValueError("the finding does not hold up")
        return b'{"accepted": true}'

    async def refund(message: InboundMessage) -> bytes:
        return b'{"refund": "queued"}'

    async def deliver(name: str, quality: str) -> None:
        body = json.dumps({"finding": f"{name} #{sum(tally[name])}", "quality": quality})
        with contextlib.suppress(RemoteError):  # a refused finding is the failure receipt
            await cast[name].request(cast["planner"].did, "research.deliver", body.encode())
        tally[name][quality != "good"] += 1
        report.receipts += 1

    try:
        await cast.start()
        planner_directory = cast.directories["planner"]

        def verified() -> int:  # this run's cards only (a crashed run's may still be live)
            return sum(card.did in cast.names for card in planner_directory.cards())

        await wait_for(lambda: verified() >= len(ROSTER), 5.0)
        report.cards = verified()
        _say(
            out,
            "cards",
            f"{len(ROSTER)} agents publish signed cards; the planner verifies {report.cards}",
        )
        cast["planner"].handle("research.deliver", judge)
        cast["treasury"].handle("payments.refund", refund)
        governance = Governance(
            CompiledPolicy.from_data(TREASURY_POLICY, file="<treasury policy>"),
            ring_sources=[cast.trust["treasury"].engine],
            egress=EgressGuard(resolver=lambda host: []),  # offline: literal addresses only
            audit=cast["treasury"].audit,  # tool refusals; the node audits message refusals
            node=cast["treasury"].did,
        )
        cast["treasury"].add_interceptor(PolicyInterceptor(governance.governor), stage=Stage.POLICY)
        treasury_engine = cast.trust["treasury"].engine
        treasury_engine.add_listener(events.append)

        for _ in range(HONEST_ROUNDS):
            for name, count in DELIVERIES.items():
                for _ in range(count):
                    await deliver(name, "good")
            await cast.settle(report.receipts)
            for service in cast.trust.values():
                service.engine.recompute()
        _say(
            out,
            "trust",
            f"{report.receipts} deliveries → {report.receipts} signed receipts, "
            f"folded by planner and treasury",
        )
        ranked = _ranking(cast)
        report.ranking = [name for name, _ in ranked]
        _say(out, "discovery", "research: " + " > ".join(f"{n} {s:.2f}" for n, s in ranked))
        report.rings_before = {n: treasury_engine.ring(cast[n].did) for n in PROVIDERS}
        await _refund(cast, "researcher", report, out)

        researcher = cast["researcher"].did
        with _quiet(logging.getLogger("agentmesh.node.node")):  # refused findings are expected
            while treasury_engine.ring(researcher) != 3 and report.bad_deliveries < MAX_BAD:
                await deliver("researcher", "bad")
                report.bad_deliveries += 1
                await cast.settle(report.receipts)
        drift = next((e for e in events if isinstance(e, DriftDetected)), None)
        demotion = next((e for e in events if isinstance(e, RingChanged) and e.demotion), None)
        report.drifted = cast.names.get(drift.did) if drift is not None else None
        report.rings_after = {n: treasury_engine.ring(cast[n].did) for n in PROVIDERS}
        report.scores = {n: treasury_engine.score(cast[n].did) for n in PROVIDERS}
        planner_engine = cast.trust["planner"].engine
        report.engines_agree = all(
            planner_engine.ring(cast[n].did) == report.rings_after[n] for n in PROVIDERS
        )
        if drift is not None and demotion is not None:
            _say(
                out,
                "drift",
                f"researcher fails {report.bad_deliveries} in a row: {drift.kind} → "
                f"ring {demotion.old_ring} → {demotion.new_ring} at once",
            )
        out.print(_trust_table(cast, report, tally))

        await _refund(cast, "researcher", report, out)
        await _refund(cast, "analyst", report, out)
        _tool_calls(cast, governance, report, out)
        report.ranking_after = [name for name, _ in _ranking(cast, worst_ring=2)]
        _say(
            out,
            "discovery",
            "research, rings 1-2: " + (", ".join(report.ranking_after) or "nobody"),
        )
        treasury = cast["treasury"]
        report.treasury_rejected = dict(treasury.counters.rejected)
        if isinstance(treasury.audit, MemoryAuditSink):
            report.treasury_audited = dict(Counter(event.code for event in treasury.audit))
        refused = sum(a.outcome != "allowed" for a in report.attempts)
        out.print(
            f"[bold green]governance: {report.cards} verified cards, {report.receipts} signed "
            f"receipts; researcher demoted ring {report.rings_before.get('researcher')} → "
            f"{report.rings_after.get('researcher')} by drift and refused on its next request; "
            f"{refused} of {len(report.attempts)} governed actions refused.[/]"
        )
    finally:
        await cast.aclose()
    return report


__all__ = ["MESH", "TREASURY_POLICY", "Attempt", "GovernanceReport", "run_governance_act"]
