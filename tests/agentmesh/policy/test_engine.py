"""Combining algorithms, the action index, fail-closed evaluation and live reload."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agentmesh.policy import CompiledPolicy, DecisionRequest, Effect, PolicyEngine, PolicyLoadError
from agentmesh.policy.engine import EVALUATION_ERROR_RULE, request_from_mapping


def engine(*rules: dict[str, Any], **top: Any) -> PolicyEngine:
    return PolicyEngine(
        CompiledPolicy.from_data({"version": 1, "name": "t", "rules": list(rules), **top})
    )


def r(rule_id: str, effect: str, actions: list[str], **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "effect": effect, "match": {"actions": actions, **extra}}


RULES = [
    r("allow-all", "allow", ["*"]),
    r("approve-pay", "require-approval", ["pay.*"]),
    r("deny-pay-big", "deny", ["pay.transfer"]),
]


@pytest.mark.parametrize(
    ("combining", "action", "rule"),
    [
        ("deny-overrides", "pay.transfer", "deny-pay-big"),
        ("deny-overrides", "pay.refund", "approve-pay"),
        ("deny-overrides", "read", "allow-all"),
        ("allow-overrides", "pay.transfer", "allow-all"),
        ("first-applicable", "pay.transfer", "allow-all"),
    ],
)
def test_combining_algorithms(combining: str, action: str, rule: str) -> None:
    decision = engine(*RULES, combining=combining).check(action)
    assert decision.rule == rule


def test_allow_overrides_prefers_approval_over_deny() -> None:
    e = engine(
        r("d", "deny", ["x"]), r("a", "require-approval", ["x"]), combining="allow-overrides"
    )
    assert e.check("x").effect is Effect.REQUIRE_APPROVAL


def test_default_effect_and_empty_engine_deny() -> None:
    assert engine(r("a", "allow", ["x"])).check("y").rule is None
    assert not engine(r("a", "allow", ["x"])).check("y").allowed
    assert engine(default="allow").check("anything").allowed
    assert not PolicyEngine().check("anything").allowed


def test_match_fields() -> None:
    e = engine(
        r(
            "a",
            "allow",
            ["pay"],
            kinds=["tool"],
            direction="outbound",
            resources=["acct:*"],
            peers=["did:key:z6MkGood*"],
            orgs=["did:key:z6MkOrg"],
            rings=[1, 2],
            trust={"ge": 0.5},
        )
    )
    good = DecisionRequest(
        "pay",
        kind="tool",
        direction="outbound",
        resource="acct:1",
        peer="did:key:z6MkGood1",
        org="did:key:z6MkOrg",
        ring=2,
        trust=0.7,
    )
    assert e.decide(good).allowed
    from dataclasses import replace

    for change in (
        {"kind": "message"},
        {"direction": "inbound"},
        {"resource": "file:/etc"},
        {"resource": None},
        {"peer": "did:key:z6MkBad"},
        {"org": "did:key:z6MkOther"},
        {"ring": 3},
        {"trust": 0.4},
    ):
        assert not e.decide(replace(good, **change)).allowed, change


def test_type_mismatch_at_run_time_denies_even_past_an_allow() -> None:
    # The classic bypass: a deny rule on amount, an attacker sends the amount as a string.
    e = engine(
        r("allow", "allow", ["pay"]),
        {**r("big", "deny", ["pay"]), "when": {"args.amount": {"ge": 1000}}},
    )
    assert not e.check("pay", args={"amount": 5000}).allowed
    decision = e.check("pay", args={"amount": "5000"})
    assert decision.effect is Effect.DENY
    assert decision.rule == EVALUATION_ERROR_RULE
    assert e.errors == 1


def test_index_consults_only_candidate_rules() -> None:
    rules = [r(f"exact-{i}", "allow", [f"tool.{i}"]) for i in range(500)]
    rules.append(r("glob", "deny", ["tool.4*"]))
    e = engine(*rules)
    assert [c.id for c in e.policy.candidates("tool.42")] == ["exact-42", "glob"]
    assert [c.id for c in e.policy.candidates("tool.7")] == ["exact-7"]
    assert e.check("tool.7").allowed
    assert not e.check("tool.42").allowed


def test_live_reload_keeps_deciding_and_bad_reload_changes_nothing(tmp_path: Any) -> None:
    e = engine(r("a", "allow", ["x"]))
    results: list[bool] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            results.append(e.check("x").rule in ("a", "b"))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for i in range(50):
            rule_id = "b" if i % 2 else "a"
            e.reload(
                CompiledPolicy.from_data(
                    {
                        "version": 1,
                        "name": "t",
                        "revision": i,
                        "rules": [r(rule_id, "allow", ["x"])],
                    }
                )
            )
    finally:
        stop.set()
        thread.join()
    assert results
    assert all(results)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nname: t\nrules: [{id: z, effect: allow, match: {actions: [x]},"
        " when: {args.a: {bogus: 1}}}]\n"
    )
    before = e.policy
    with pytest.raises(PolicyLoadError):
        e.reload_file(bad)
    assert e.policy is before


def test_request_from_mapping_rejects_unknown_fields() -> None:
    assert request_from_mapping({"action": "x", "ring": 2}).ring == 2
    with pytest.raises(ValueError, match="unknown request field"):
        request_from_mapping({"action": "x", "rnig": 2})
    with pytest.raises(ValueError, match="action"):
        request_from_mapping({"ring": 2})
