"""Compile a :class:`PolicyDocument` into predicates, once, at load time.

Everything a rule can get wrong is caught here and raised as a
:class:`PolicyLoadError` naming the file, the rule and the reason: an unknown
operator, an operand of the wrong type (``lt: "100"``), an unknown condition
root, a regex that does not compile, a duplicate rule id. A compiled rule can
therefore never silently never match.

At run time a value of the wrong type (``amount: "5000"`` against ``lt: 100``)
raises :class:`PolicyEvaluationError`; the engine turns that into a deny.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from agentmesh.policy.decision import DecisionRequest
from agentmesh.policy.document import Effect, PolicyDocument, RuleModel
from agentmesh.policy.errors import PolicyEvaluationError, PolicyLoadError

Predicate = Callable[[DecisionRequest], bool]

_MISSING = object()
_GLOB_CHARS = frozenset("*?[")
# Roots a condition path may start with: nested mappings, then request attributes.
_MAPPING_ROOTS = ("args", "context")
_ATTRIBUTE_ROOTS = ("action", "direction", "kind", "org", "peer", "resource", "ring", "trust")
_ALIASES = {"gte": "ge", "lte": "le", "neq": "ne", "equals": "eq"}
_SCALARS = (str, int, float, bool, type(None))


def is_glob(pattern: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(pattern)


class PatternSet:
    """Exact strings in a frozenset, globs in one compiled regex (``*`` spans dots)."""

    __slots__ = ("_exact", "_regex")

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        self._exact = frozenset(p for p in patterns if not is_glob(p))
        globs = [fnmatch.translate(p) for p in patterns if is_glob(p)]
        self._regex = re.compile("|".join(f"(?:{g})" for g in globs)) if globs else None

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if value in self._exact:
            return True
        return self._regex is not None and self._regex.match(value) is not None


def _is_number(value: object) -> bool:
    kind = type(value)
    if kind is int or kind is float:  # the usual case, without the isinstance calls
        return True
    return isinstance(value, int | float) and not isinstance(value, bool)


_PLAIN_MAPPINGS = (dict, MappingProxyType)


def _mismatch(path: str, op: str, value: object) -> PolicyEvaluationError:
    return PolicyEvaluationError(
        f"{path}: operator {op!r} cannot apply to a {type(value).__name__} value"
    )


def _compile_operator(
    path: str, op: str, operand: object, fail: Callable[[str], PolicyLoadError]
) -> Callable[[object], bool]:
    op = _ALIASES.get(op, op)
    if op in ("lt", "le", "gt", "ge"):
        if not _is_number(operand):
            raise fail(f"{path}: {op!r} needs a number, got {operand!r}")
        bound = float(operand)  # type: ignore[arg-type]
        compare: Callable[[float, float], bool] = {
            "lt": float.__lt__,
            "le": float.__le__,
            "gt": float.__gt__,
            "ge": float.__ge__,
        }[op]

        def numeric(value: object) -> bool:
            if not _is_number(value):
                raise _mismatch(path, op, value)
            return compare(float(value), bound)  # type: ignore[arg-type]

        return numeric
    if op in ("eq", "ne"):
        if not isinstance(operand, _SCALARS):
            raise fail(f"{path}: {op!r} compares with a scalar, got {type(operand).__name__}")
        if op == "eq":
            return lambda value: bool(value == operand)
        return lambda value: bool(value != operand)
    if op in ("in", "not_in"):
        if not isinstance(operand, list) or not operand:
            raise fail(f"{path}: {op!r} needs a non-empty list")
        if not all(isinstance(item, _SCALARS) for item in operand):
            raise fail(f"{path}: {op!r} takes a list of scalars")
        members = frozenset(operand)
        wanted = op == "in"

        def membership(value: object) -> bool:
            if not isinstance(value, _SCALARS):
                raise _mismatch(path, op, value)
            return (value in members) is wanted

        return membership
    if op in ("glob", "regex"):
        patterns = [operand] if isinstance(operand, str) else operand
        if not isinstance(patterns, list) or not patterns:
            raise fail(f"{path}: {op!r} needs a string or a non-empty list of strings")
        if not all(isinstance(p, str) and p for p in patterns):
            raise fail(f"{path}: {op!r} needs non-empty strings")
        if op == "glob":
            matcher = PatternSet(patterns).matches
        else:
            try:
                regex = re.compile("|".join(f"(?:{p})" for p in patterns))
            except re.error as exc:
                raise fail(f"{path}: invalid regex: {exc}") from None

            def matcher(value: str | None) -> bool:
                return value is not None and regex.fullmatch(value) is not None

        def textual(value: object) -> bool:
            if not isinstance(value, str):
                raise _mismatch(path, op, value)
            return matcher(value)

        return textual
    if op == "contains":
        if not isinstance(operand, _SCALARS):
            raise fail(f"{path}: 'contains' looks for a scalar, got {type(operand).__name__}")

        def container(value: object) -> bool:
            if isinstance(value, str):
                return isinstance(operand, str) and operand in value
            if isinstance(value, list | tuple | set | frozenset):
                return operand in value
            raise _mismatch(path, op, value)

        return container
    known = "eq, ne, lt, le, gt, ge, in, not_in, glob, regex, contains, exists"
    raise fail(f"{path}: unknown operator {op!r} (known: {known})")


def _getter(path: str, fail: Callable[[str], PolicyLoadError]) -> Callable[[DecisionRequest], Any]:
    parts = path.split(".")
    root = parts[0]
    if root in _MAPPING_ROOTS:
        if len(parts) < 2 or not all(parts):
            raise fail(f"{path!r}: name a field under {root!r}, e.g. {root}.amount")
        keys = parts[1:]

        def nested(request: DecisionRequest) -> Any:
            value: Any = getattr(request, root)
            for key in keys:
                # Exact types first: an ABC isinstance check costs more than the lookup.
                if type(value) not in _PLAIN_MAPPINGS and not isinstance(value, Mapping):
                    return _MISSING
                value = value.get(key, _MISSING)
                if value is _MISSING:
                    return _MISSING
            return value

        return nested
    if root in _ATTRIBUTE_ROOTS and len(parts) == 1:

        def attribute(request: DecisionRequest) -> Any:
            value = getattr(request, root)
            return _MISSING if value is None else value

        return attribute
    roots = ", ".join((*(f"{r}.<field>" for r in _MAPPING_ROOTS), *_ATTRIBUTE_ROOTS))
    raise fail(f"unknown condition path {path!r} (paths start with: {roots})")


def compile_condition(path: str, spec: object, fail: Callable[[str], PolicyLoadError]) -> Predicate:
    """One ``path: {op: operand, ...}`` entry; a bare scalar means ``eq``. All ops must hold.

    A missing value makes every operator false except ``exists: false``.
    """
    get = _getter(path, fail)
    if not isinstance(spec, dict):
        if isinstance(spec, list):
            raise fail(f"{path}: a list is ambiguous here; write {{in: [...]}}")
        spec = {"eq": spec}
    if not spec:
        raise fail(f"{path}: empty condition")
    exists: bool | None = None
    checks: list[Callable[[object], bool]] = []
    for op, operand in spec.items():
        if not isinstance(op, str):
            raise fail(f"{path}: operator names are strings, got {op!r}")
        if op == "exists":
            if not isinstance(operand, bool):
                raise fail(f"{path}: 'exists' takes true or false")
            exists = operand
            continue
        checks.append(_compile_operator(path, op, operand, fail))
    if exists is False and checks:
        raise fail(f"{path}: 'exists: false' cannot be combined with other operators")

    def condition(request: DecisionRequest) -> bool:
        value = get(request)
        if value is _MISSING:
            return exists is False
        if exists is False:
            return False
        for check in checks:  # noqa: SIM110 - a plain loop: no generator on the hot path
            if not check(value):
                return False
        return True

    return condition


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to evaluate. ``order`` is its position in the document."""

    id: str
    order: int
    effect: Effect
    actions: tuple[str, ...]
    matches: Predicate
    reason: str = ""

    def applies(self, request: DecisionRequest) -> bool:
        return self.matches(request)


def _compile_rule(rule: RuleModel, order: int, file: str) -> CompiledRule:
    def fail(reason: str) -> PolicyLoadError:
        return PolicyLoadError(reason, file=file, rule=rule.id)

    match = rule.match
    tests: list[Predicate] = []
    if match.kinds is not None:
        kinds = frozenset(kind.value for kind in match.kinds)
        tests.append(lambda r: r.kind in kinds)
    if match.direction != "any":
        direction = match.direction
        tests.append(lambda r: r.direction == direction)
    for attribute in ("resources", "peers", "orgs"):
        patterns = getattr(match, attribute)
        if patterns is not None:
            field = {"resources": "resource", "peers": "peer", "orgs": "org"}[attribute]
            tests.append(_pattern_test(field, PatternSet(patterns)))
    if match.rings is not None:
        rings = frozenset(match.rings)
        tests.append(lambda r: r.ring in rings)
    if match.trust is not None:
        tests.append(compile_condition("trust", match.trust, fail))
    tests.extend(compile_condition(path, spec, fail) for path, spec in rule.when.items())
    negated = [compile_condition(path, spec, fail) for path, spec in rule.unless.items()]

    if not negated:
        if not tests:
            return CompiledRule(
                rule.id, order, rule.effect, tuple(match.actions), _always, _reason(rule)
            )
        if len(tests) == 1:
            return CompiledRule(
                rule.id, order, rule.effect, tuple(match.actions), tests[0], _reason(rule)
            )

    def matches(request: DecisionRequest) -> bool:
        for test in tests:
            if not test(request):
                return False
        for test in negated:  # noqa: SIM110 - a plain loop: no generator on the hot path
            if test(request):
                return False
        return True

    return CompiledRule(rule.id, order, rule.effect, tuple(match.actions), matches, _reason(rule))


def _always(request: DecisionRequest) -> bool:
    return True


def _reason(rule: RuleModel) -> str:
    return f"rule {rule.id!r}: {rule.effect.value}"


def _pattern_test(field: str, patterns: PatternSet) -> Predicate:
    return lambda request: patterns.matches(getattr(request, field))


def compile_rules(document: PolicyDocument, *, file: str = "<memory>") -> list[CompiledRule]:
    """Compile every rule of ``document``.

    Raises:
        PolicyLoadError: the first problem found, naming the file and the rule.
    """
    seen: set[str] = set()
    compiled = []
    for order, rule in enumerate(document.rules):
        if rule.id in seen:
            raise PolicyLoadError("duplicate rule id", file=file, rule=rule.id)
        seen.add(rule.id)
        compiled.append(_compile_rule(rule, order, file))
    return compiled


__all__ = ["CompiledRule", "PatternSet", "compile_condition", "compile_rules", "is_glob"]
