"""The policy document model (YAML or JSON), validated by pydantic.

A document is versioned (``version`` is the schema, ``revision`` the author's
counter) and holds an ordered list of rules. Every model forbids unknown fields,
so a typo is a load error instead of a rule that silently never matches. The
structured conditions under ``when`` / ``unless`` are checked by
:mod:`agentmesh.policy.compiler`, which knows the operators and their types.

This module is pure: no I/O beyond reading the file it is asked to load.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentmesh.policy.errors import PolicyLoadError

SCHEMA_VERSION = 1


class Effect(enum.Enum):
    """What a matching rule decides."""

    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require-approval"


class Combining(enum.Enum):
    """How the effects of several matching rules combine (documented in docs/policy.md)."""

    DENY_OVERRIDES = "deny-overrides"
    ALLOW_OVERRIDES = "allow-overrides"
    FIRST_APPLICABLE = "first-applicable"


class Kind(enum.Enum):
    """What is being governed: a mesh message or a tool call."""

    MESSAGE = "message"
    TOOL = "tool"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class MatchModel(_Strict):
    """Which requests a rule applies to. Omitted fields match anything."""

    actions: list[str] = Field(min_length=1)
    kinds: list[Kind] | None = None
    resources: list[str] | None = None
    direction: Literal["inbound", "outbound", "any"] = "any"
    peers: list[str] | None = None
    orgs: list[str] | None = None
    rings: list[int] | None = None
    trust: dict[str, Any] | None = None

    @field_validator("rings")
    @classmethod
    def _rings_in_range(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            bad = [ring for ring in value if not 0 <= ring <= 3]
            if bad:
                raise ValueError(f"rings are 0..3, got {bad}")
        return value

    @field_validator("actions", "resources", "peers", "orgs")
    @classmethod
    def _non_empty_patterns(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not pattern for pattern in value):
            raise ValueError("patterns must be non-empty strings")
        return value


class RuleModel(_Strict):
    """One rule: an effect, what it matches, and conditions on arguments and context."""

    id: str = Field(min_length=1, max_length=128)
    effect: Effect
    description: str = ""
    match: MatchModel
    when: dict[str, Any] = Field(default_factory=dict)
    unless: dict[str, Any] = Field(default_factory=dict)

    @field_validator("effect", mode="before")
    @classmethod
    def _effect_spelling(cls, value: object) -> object:
        return value.replace("_", "-") if isinstance(value, str) else value


class RingsModel(_Strict):
    """Ring capabilities and policy-assigned rings (caps: an agent is never better than this)."""

    capabilities: dict[int, list[str]] = Field(default_factory=dict)
    agents: dict[str, int] = Field(default_factory=dict)
    default: int = Field(default=3, ge=1, le=3)

    @field_validator("capabilities")
    @classmethod
    def _capability_rings(cls, value: dict[int, list[str]]) -> dict[int, list[str]]:
        bad = [ring for ring in value if not 1 <= ring <= 3]
        if bad:
            raise ValueError(f"capabilities are listed for rings 1..3, got {bad}")
        return value

    @field_validator("agents")
    @classmethod
    def _agent_rings(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {did: ring for did, ring in value.items() if not 1 <= ring <= 3}
        if bad:
            raise ValueError(f"agents get rings 1..3 (0 is the node's kernel), got {bad}")
        return value


class RateLimitModel(_Strict):
    """``rate`` calls per second per agent and action, bursts up to ``burst``."""

    actions: list[str] = Field(min_length=1)
    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


class BudgetModel(_Strict):
    """Calls, tokens or cost per agent per window of ``window_s`` seconds."""

    actions: list[str] = Field(min_length=1)
    window_s: float = Field(gt=0)
    calls: int | None = Field(default=None, ge=0)
    tokens: int | None = Field(default=None, ge=0)
    cost: float | None = Field(default=None, ge=0)


class PolicyDocument(_Strict):
    """A whole policy file."""

    version: Literal[1]
    name: str = Field(min_length=1, max_length=128)
    revision: int = Field(default=0, ge=0)
    description: str = ""
    combining: Combining = Combining.DENY_OVERRIDES
    default: Effect = Effect.DENY
    rules: list[RuleModel] = Field(default_factory=list)
    rings: RingsModel | None = None
    rate_limits: list[RateLimitModel] = Field(default_factory=list)
    budgets: list[BudgetModel] = Field(default_factory=list)


def _rule_name(raw: object, index: int) -> str:
    if isinstance(raw, dict):
        rules = raw.get("rules")
        if isinstance(rules, list) and index < len(rules) and isinstance(rules[index], dict):
            rule_id = rules[index].get("id")
            if isinstance(rule_id, str) and rule_id:
                return rule_id
    return f"#{index}"


def parse_policy(raw: object, *, file: str = "<memory>") -> PolicyDocument:
    """Validate an already-parsed document (a dict from YAML or JSON).

    Raises:
        PolicyLoadError: naming ``file``, the rule (by id, else by position) and the reason.
    """
    if not isinstance(raw, dict):
        raise PolicyLoadError("a policy document is a mapping at the top level", file=file)
    try:
        return PolicyDocument.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        rule: str | None = None
        field_path = ".".join(str(part) for part in loc)
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rule = _rule_name(raw, loc[1])
            field_path = ".".join(str(part) for part in loc[2:]) or "rule"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field (typo? see docs/policy.md for the fields)"
        raise PolicyLoadError(
            f"{field_path}: {message} ({exc.error_count()} error(s) in total)",
            file=file,
            rule=rule,
        ) from None


def rule_lines(text: str) -> dict[str, int]:
    """Rule id (or ``#index``) -> the 1-based line where it starts, for error locations."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    found: dict[str, int] = {}
    if not isinstance(root, yaml.MappingNode):
        return found
    for key, value in root.value:
        if getattr(key, "value", None) != "rules" or not isinstance(value, yaml.SequenceNode):
            continue
        for index, item in enumerate(value.value):
            name = f"#{index}"
            if isinstance(item, yaml.MappingNode):
                for field_key, field_value in item.value:
                    if getattr(field_key, "value", None) == "id" and isinstance(
                        field_value, yaml.ScalarNode
                    ):
                        name = str(field_value.value)
            found.setdefault(name, item.start_mark.line + 1)
    return found


def read_policy_file(path: str | Path) -> tuple[object, str]:
    """Read and parse a ``.yaml``/``.yml``/``.json`` file; returns (raw data, file name).

    Raises:
        PolicyLoadError: the file is missing, unreadable or not valid YAML/JSON.
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyLoadError(f"cannot read the file: {exc.strerror}", file=file) from None
    try:
        if file.endswith(".json"):
            return json.loads(text), file
        return yaml.safe_load(text), file
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise PolicyLoadError(f"not valid YAML/JSON: {exc}", file=file) from None


__all__ = [
    "SCHEMA_VERSION",
    "BudgetModel",
    "Combining",
    "Effect",
    "Kind",
    "MatchModel",
    "PolicyDocument",
    "RateLimitModel",
    "RingsModel",
    "RuleModel",
    "parse_policy",
    "read_policy_file",
    "rule_lines",
]
