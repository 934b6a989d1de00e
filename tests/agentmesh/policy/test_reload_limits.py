"""A live policy reload keeps rate-limit buckets and budget spend whose entry still exists.

A caller at its limit must not get fresh tokens or a fresh budget because the
operator reloaded the policy (for an unrelated change, or to tune the very limit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentmesh.policy import BudgetExceeded, CompiledPolicy, DecisionRequest, RateLimited
from agentmesh.policy.governance import Governance
from iatp.clock import ManualClock
from iatp.identity import AgentIdentity

AGENT = AgentIdentity.generate().did
SLOW = 0.001  # tokens per second: none comes back during a test


def policy(
    revision: int,
    *,
    rate_actions: tuple[str, ...] = ("search.*",),
    burst: int = 2,
    budget_actions: tuple[str, ...] = ("llm.*",),
    window_s: float = 3600,
    calls: int = 2,
) -> CompiledPolicy:
    document: dict[str, Any] = {
        "version": 1,
        "name": "limits",
        "revision": revision,
        "default": "allow",
        "rate_limits": [{"actions": list(rate_actions), "rate": SLOW, "burst": burst}],
        "budgets": [{"actions": list(budget_actions), "window_s": window_s, "calls": calls}],
    }
    return CompiledPolicy.from_data(document)


def call(governance: Governance, action: str) -> None:
    governance.governor.authorize(DecisionRequest(action, kind="tool", peer=AGENT))


def exhausted() -> Governance:
    """A governance whose agent used up its burst on search.web and its budget on llm.chat."""
    governance = Governance(policy(1), clock=ManualClock())
    for _ in range(2):
        call(governance, "search.web")
        call(governance, "llm.chat")
    with pytest.raises(RateLimited):
        call(governance, "search.web")
    with pytest.raises(BudgetExceeded):
        call(governance, "llm.chat")
    return governance


def test_an_unrelated_reload_gives_no_new_tokens_and_no_new_budget() -> None:
    governance = exhausted()
    governance.reload(policy(2))
    with pytest.raises(RateLimited):
        call(governance, "search.web")
    with pytest.raises(BudgetExceeded):
        call(governance, "llm.chat")
    # Other agents and actions are as fresh as before.
    call(governance, "search.news")


def test_a_tuned_limit_keeps_what_was_spent() -> None:
    governance = exhausted()
    governance.reload(policy(2, burst=5, calls=3))
    with pytest.raises(RateLimited):  # a bigger bucket, but still empty
        call(governance, "search.web")
    call(governance, "llm.chat")  # one more call allowed by the new budget, not three
    with pytest.raises(BudgetExceeded):
        call(governance, "llm.chat")


def test_a_smaller_burst_caps_the_carried_tokens() -> None:
    governance = Governance(policy(1, burst=5), clock=ManualClock())
    call(governance, "search.web")  # 4 tokens left
    governance.reload(policy(2, burst=2))
    for _ in range(2):
        call(governance, "search.web")
    with pytest.raises(RateLimited):
        call(governance, "search.web")


def test_a_replaced_entry_starts_afresh() -> None:
    governance = exhausted()
    governance.reload(
        policy(2, rate_actions=("search.web",), budget_actions=("llm.chat",), window_s=60)
    )
    call(governance, "search.web")
    call(governance, "llm.chat")


def test_a_reload_from_file_keeps_the_spend(tmp_path: Path) -> None:
    governance = exhausted()
    path = tmp_path / "limits.yaml"
    path.write_text(
        "version: 1\nname: limits\nrevision: 3\ndefault: allow\n"
        f"rate_limits: [{{actions: ['search.*'], rate: {SLOW}, burst: 2}}]\n"
        "budgets: [{actions: ['llm.*'], window_s: 3600, calls: 2}]\n",
        encoding="utf-8",
    )
    assert governance.reload_file(path).label == "limits@3"
    with pytest.raises(RateLimited):
        call(governance, "search.web")
    with pytest.raises(BudgetExceeded):
        call(governance, "llm.chat")
