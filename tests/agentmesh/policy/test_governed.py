"""governed(): sync and async tools, the caller's identity, typed refusals, egress, budgets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.policy import (
    AgentQuarantined,
    ApprovalRequired,
    Budget,
    BudgetExceeded,
    BudgetLedger,
    CompiledPolicy,
    EgressDenied,
    EgressGuard,
    Governor,
    PolicyDenied,
    PolicyEngine,
    RateLimit,
    RateLimited,
    RateLimiter,
    RingDenied,
    RingEnforcer,
    StaticRings,
    acting_as,
    govern,
    governed,
)
from iatp.clock import ManualClock

ALICE, MALLORY = "did:key:z6MkAlice", "did:key:z6MkMallory"
POLICY = {
    "version": 1,
    "name": "tools",
    "rules": [
        {"id": "fetch", "effect": "allow", "match": {"actions": ["http.get"]}},
        {
            "id": "small-pay",
            "effect": "allow",
            "match": {"actions": ["pay"]},
            "when": {"args.amount": {"lt": 100}},
        },
        {
            "id": "big-pay",
            "effect": "require-approval",
            "match": {"actions": ["pay"]},
            "when": {"args.amount": {"ge": 100}},
        },
        {
            "id": "prod-only",
            "effect": "deny",
            "match": {"actions": ["pay"]},
            "unless": {"context.env": "prod"},
        },
    ],
}


@pytest.fixture
def setup() -> tuple[Governor, StaticRings, MemoryAuditSink, set[str]]:
    rings = StaticRings({ALICE: 2, MALLORY: 2})
    audit = MemoryAuditSink()
    blocked: set[str] = set()
    governor = Governor(
        PolicyEngine(CompiledPolicy.from_data(POLICY)),
        rings=RingEnforcer([rings], {1: ["*"], 2: ["http.get", "pay"], 3: []}),
        limiter=RateLimiter([RateLimit(("http.get",), rate=0.001, burst=2)]),
        budgets=BudgetLedger(
            [Budget(("pay",), window_ms=3_600_000, cost=150.0)], clock=ManualClock()
        ),
        egress=EgressGuard(resolver=lambda host: ["93.184.216.34"]),
        blocked=blocked.__contains__,
        audit=audit,
        node="node-1",
    )
    return governor, rings, audit, blocked


def test_sync_and_async_tools_are_governed(setup: Any) -> None:
    governor, _, audit, _ = setup
    calls: list[str] = []

    @governed(governor, "pay", cost_arg="amount")
    def pay(account: str, amount: float) -> str:
        calls.append(account)
        return "paid"

    @governed(governor, "http.get", url_args=("url",))
    async def fetch(url: str) -> str:
        return "body"

    with acting_as(ALICE, context={"env": "prod"}):
        assert pay("acct-1", amount=50) == "paid"
        assert asyncio.run(fetch("https://example.test/")) == "body"
    assert calls == ["acct-1"]
    assert audit.codes("policy_allowed") == ["allowed", "allowed"]
    assert pay.__name__ == "pay"
    assert pay.__agentmesh_action__ == "pay"


def test_refusals_are_typed_and_the_tool_never_runs(setup: Any) -> None:
    governor, rings, audit, blocked = setup
    ran: list[float] = []

    @governed(governor, "pay", cost_arg="amount")
    def pay(account: str, amount: float) -> None:
        ran.append(amount)

    with pytest.raises(PolicyDenied, match="no calling agent"):
        pay("a", 1)
    with acting_as(ALICE, context={"env": "dev"}), pytest.raises(PolicyDenied) as denied:
        pay("a", 1)
    assert (denied.value.rule, denied.value.did, denied.value.ring) == ("prod-only", ALICE, 2)
    with acting_as(ALICE, context={"env": "prod"}):
        with pytest.raises(ApprovalRequired) as approval:
            pay("a", 500)
        assert approval.value.rule == "big-pay"
        with pytest.raises(PolicyDenied, match="must be a non-negative number"):
            pay("a", "50")  # type: ignore[arg-type]
        with pytest.raises(PolicyDenied, match="do not fit"):
            pay("a", 1, 2)  # type: ignore[call-arg]
        pay("a", 99)
        with pytest.raises(BudgetExceeded):
            pay("a", 99)  # 198 > 150
    rings.set(ALICE, 3)
    with acting_as(ALICE, context={"env": "prod"}), pytest.raises(RingDenied):
        pay("a", 1)
    blocked.add(MALLORY)
    with acting_as(MALLORY, context={"env": "prod"}), pytest.raises(AgentQuarantined):
        pay("a", 1)
    assert ran == [99]
    codes = audit.codes("policy_denied")
    assert codes == [
        "policy_denied",
        "policy_denied",
        "approval_required",
        "policy_denied",
        "policy_denied",
        "budget_exceeded",
        "ring_denied",
        "quarantined",
    ]


def test_egress_and_rate_limits_through_the_wrapper(setup: Any) -> None:
    governor, _, _, _ = setup
    governor.egress = EgressGuard(resolver=lambda host: ["169.254.169.254"])

    def fetch(url: str) -> str:
        return url

    tool = govern(governor, fetch, "http.get", url_args=("url",))
    with acting_as(ALICE):
        with pytest.raises(EgressDenied) as caught:
            tool("http://innocent.test/")
        assert caught.value.did == ALICE
        assert caught.value.address == "169.254.169.254"
        governor.egress = None
        tool("http://a.test/")
        tool("http://a.test/")
        with pytest.raises(RateLimited):
            tool("http://a.test/")


async def test_identity_follows_asyncio_tasks(setup: Any) -> None:
    governor, _, _, _ = setup
    seen: list[str] = []

    @governed(governor, "http.get")
    async def fetch() -> None:
        seen.append("ok")

    async def as_alice() -> None:
        with acting_as(ALICE):
            await asyncio.gather(fetch(), fetch())

    await as_alice()
    with pytest.raises(PolicyDenied, match="no calling agent"):
        await fetch()
    assert seen == ["ok", "ok"]
