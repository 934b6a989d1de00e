"""The policy language: every mistake is a load error naming the file, the rule and the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentmesh.policy import CompiledPolicy, DecisionRequest, PolicyEngine, PolicyLoadError


def doc(*rules: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "name": "t", "rules": list(rules), **top}


def rule(rule_id: str = "r1", effect: str = "allow", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": rule_id, "effect": effect, "match": {"actions": ["pay"]}}
    body.update(extra)
    return body


@pytest.mark.parametrize(
    ("bad_rule", "needle"),
    [
        (rule(when={"args.amount": {"lessthan": 3}}), "unknown operator 'lessthan'"),
        (rule(when={"args.amount": {"lt": "100"}}), "'lt' needs a number"),
        (rule(when={"args.amount": {"lt": True}}), "'lt' needs a number"),
        (rule(when={"args.name": {"regex": "(unclosed"}}), "invalid regex"),
        (rule(when={"args.tags": {"in": []}}), "non-empty list"),
        (rule(when={"args.tags": {"in": [{"a": 1}]}}), "list of scalars"),
        (rule(when={"args.tags": [1, 2]}), "a list is ambiguous"),
        (rule(when={"args.x": {"exists": "yes"}}), "'exists' takes true or false"),
        (rule(when={"args.x": {"exists": False, "eq": 1}}), "cannot be combined"),
        (rule(when={"args.x": {}}), "empty condition"),
        (rule(when={"body.amount": {"lt": 1}}), "unknown condition path 'body.amount'"),
        (rule(when={"args": {"lt": 1}}), "name a field under 'args'"),
        (rule(when={"args.x": {"glob": 5}}), "'glob' needs a string"),
        (rule(when={"args.x": {"contains": [1]}}), "'contains' looks for a scalar"),
        (rule(when={"args.x": {"eq": [1]}}), "compares with a scalar"),
        (rule(match={"actions": ["pay"], "trust": {"above": 0.5}}), "unknown operator 'above'"),
        (rule(match={"actions": ["pay"], "ring": [1]}), "match.ring: unknown field"),
        (rule(match={"actions": ["pay"], "rings": [4]}), "rings are 0..3"),
        (rule(match={"actions": []}), "match.actions"),
        (rule(match={"actions": [""]}), "non-empty strings"),
        (rule(match={"actions": ["pay"], "direction": "sideways"}), "match.direction"),
        (rule(effect="permit"), "effect"),
        (rule(unless={"args.amount": {"between": [1, 2]}}), "unknown operator 'between'"),
        (rule(conditions={"args.amount": {"lt": 1}}), "conditions: unknown field"),
    ],
)
def test_every_mistake_is_a_load_error_naming_the_rule(
    bad_rule: dict[str, Any], needle: str
) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        CompiledPolicy.from_data(doc(rule("fine"), bad_rule), file="p.yaml")
    error = caught.value
    assert error.file == "p.yaml"
    assert error.rule == "r1"
    assert needle in str(error)
    assert str(error).startswith("p.yaml: rule 'r1': ")
    assert error.code == "policy_load"


def test_document_level_errors() -> None:
    with pytest.raises(PolicyLoadError, match="duplicate rule id"):
        CompiledPolicy.from_data(doc(rule("a"), rule("a")))
    with pytest.raises(PolicyLoadError, match="version"):
        CompiledPolicy.from_data({"version": 2, "name": "t"})
    with pytest.raises(PolicyLoadError, match="combining"):
        CompiledPolicy.from_data(doc(combining="most-specific"))
    with pytest.raises(PolicyLoadError, match="mapping at the top level"):
        CompiledPolicy.from_data(["not", "a", "mapping"])
    with pytest.raises(PolicyLoadError, match="unknown field"):
        CompiledPolicy.from_data(doc(rulez=[]))


def test_rule_named_by_position_when_it_has_no_id() -> None:
    with pytest.raises(PolicyLoadError) as caught:
        CompiledPolicy.from_data(doc(rule("a"), {"effect": "allow", "match": {"actions": ["x"]}}))
    assert caught.value.rule == "#1"


def test_files_yaml_json_and_unreadable(tmp_path: Path) -> None:
    good = tmp_path / "p.yaml"
    good.write_text(
        "version: 1\nname: t\nrules:\n  - id: a\n    effect: allow\n"
        "    match: {actions: [pay]}\n    when: {args.amount: {lt: 100}}\n"
    )
    policy = CompiledPolicy.from_file(good)
    assert PolicyEngine(policy).check("pay", args={"amount": 5}).allowed
    as_json = tmp_path / "p.json"
    as_json.write_text(json.dumps(doc(rule("a"))))
    assert CompiledPolicy.from_file(as_json).label == "t@0"
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nrules: [\n")
    with pytest.raises(PolicyLoadError, match=r"broken\.yaml: not valid YAML"):
        CompiledPolicy.from_file(broken)
    with pytest.raises(PolicyLoadError, match="cannot read"):
        CompiledPolicy.from_file(tmp_path / "missing.yaml")


def test_effect_spellings_and_aliases() -> None:
    policy = CompiledPolicy.from_data(
        doc(rule("a", "require_approval", when={"args.amount": {"gte": 100, "lte": 200}}))
    )
    decision = PolicyEngine(policy).check("pay", args={"amount": 150})
    assert decision.code == "approval_required"
    assert decision.rule == "a"


NUMBERS = st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False))


@given(value=NUMBERS, bound=NUMBERS, op=st.sampled_from(["lt", "le", "gt", "ge", "eq", "ne"]))
def test_numeric_operators_agree_with_python(value: float, bound: float, op: str) -> None:
    policy = CompiledPolicy.from_data(doc(rule("a", when={"args.v": {op: bound}})))
    expected = {
        "lt": value < bound,
        "le": value <= bound,
        "gt": value > bound,
        "ge": value >= bound,
        "eq": value == bound,
        "ne": value != bound,
    }[op]
    assert PolicyEngine(policy).check("pay", args={"v": value}).allowed is expected


@given(
    value=st.text(alphabet="ab.*", max_size=6),
    pattern=st.text(alphabet="ab.*", min_size=1, max_size=6),
)
def test_glob_operator_agrees_with_fnmatchcase(value: str, pattern: str) -> None:
    import fnmatch

    policy = CompiledPolicy.from_data(doc(rule("a", when={"args.v": {"glob": pattern}})))
    decision = PolicyEngine(policy).check("pay", args={"v": value})
    assert decision.allowed is fnmatch.fnmatchcase(value, pattern)


def test_condition_operators() -> None:
    policy = CompiledPolicy.from_data(
        doc(
            rule(
                "a",
                when={
                    "args.env": {"in": ["prod", "staging"]},
                    "args.tags": {"contains": "safe"},
                    "args.name": {"regex": "[a-z]+"},
                    "context.user.role": "admin",
                    "args.note": {"exists": False},
                },
                unless={"args.env": {"eq": "staging"}},
            )
        )
    )
    engine = PolicyEngine(policy)
    ok = {"env": "prod", "tags": ["safe"], "name": "abc"}
    ctx = {"user": {"role": "admin"}}
    assert engine.check("pay", args=ok, context=ctx).allowed
    assert not engine.check("pay", args={**ok, "env": "staging"}, context=ctx).allowed
    assert not engine.check("pay", args={**ok, "name": "ABC"}, context=ctx).allowed
    assert not engine.check("pay", args={**ok, "note": "x"}, context=ctx).allowed
    assert not engine.check("pay", args=ok, context={"user": {"role": "guest"}}).allowed
    assert not engine.check("pay", args=ok, context={"user": "flat"}).allowed


def test_request_paths_on_attributes() -> None:
    policy = CompiledPolicy.from_data(
        doc(rule("a", when={"peer": {"glob": "did:key:z6MkA*"}, "ring": {"le": 2}}))
    )
    engine = PolicyEngine(policy)
    assert engine.decide(DecisionRequest("pay", peer="did:key:z6MkAbc", ring=2)).allowed
    assert not engine.decide(DecisionRequest("pay", peer="did:key:z6MkB", ring=2)).allowed
    assert not engine.decide(DecisionRequest("pay", peer=None, ring=2)).allowed
