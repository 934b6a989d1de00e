"""The embedded policy engine: compiled rules, indexed by action, combined explicitly.

Evaluation is a pure function of a :class:`CompiledPolicy` and a
:class:`DecisionRequest`. Rules are indexed by action: exact action names go into
a dict, glob actions into a short list, and the merged candidate list for each
action seen is cached, so a decision touches only the rules that can apply to
it even with thousands of rules.

Fail closed: any exception while evaluating denies with rule
``"<evaluation-error>"``. :meth:`PolicyEngine.reload` swaps the compiled policy
in one reference assignment, so decisions in flight finish on the old policy and
the next one uses the new policy; no message is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentmesh.policy.compiler import CompiledRule, PatternSet, compile_rules, is_glob
from agentmesh.policy.decision import Decision, DecisionRequest
from agentmesh.policy.document import (
    Combining,
    Effect,
    PolicyDocument,
    parse_policy,
    read_policy_file,
    rule_lines,
)
from agentmesh.policy.errors import PolicyLoadError

logger = logging.getLogger(__name__)

EVALUATION_ERROR_RULE = "<evaluation-error>"
_CACHE_LIMIT = 4096


class CompiledPolicy:
    """A validated, compiled, action-indexed policy document."""

    def __init__(self, document: PolicyDocument, *, file: str = "<memory>") -> None:
        self.document = document
        self.file = file
        self.rules = compile_rules(document, file=file)
        self.label = f"{document.name}@{document.revision}"
        self._exact: dict[str, list[CompiledRule]] = {}
        self._globbed: list[tuple[PatternSet, CompiledRule]] = []
        for rule in self.rules:
            exact = [a for a in rule.actions if not is_glob(a)]
            globs = [a for a in rule.actions if is_glob(a)]
            for action in exact:
                self._exact.setdefault(action, []).append(rule)
            if globs:
                self._globbed.append((PatternSet(globs), rule))
        self._candidates: dict[str, tuple[CompiledRule, ...]] = {}
        self._lock = threading.Lock()
        # Decisions are immutable: build each rule's (and the default's) once.
        self._decisions = {
            rule.id: Decision(rule.effect, rule.id, rule.reason, self.label) for rule in self.rules
        }
        default = document.default
        self._default = Decision(
            default, None, f"no rule matched: default {default.value}", self.label
        )

    @classmethod
    def from_data(cls, raw: object, *, file: str = "<memory>") -> CompiledPolicy:
        """Raises: PolicyLoadError."""
        return cls(parse_policy(raw, file=file), file=file)

    @classmethod
    def from_file(cls, path: str | Path) -> CompiledPolicy:
        """Load a YAML or JSON policy file.

        Raises:
            PolicyLoadError: naming the file, the rule and the reason.
        """
        raw, file = read_policy_file(path)
        try:
            return cls.from_data(raw, file=file)
        except PolicyLoadError as exc:
            if exc.rule is None:
                raise
            text = Path(path).read_text(encoding="utf-8")
            raise exc.at_line(rule_lines(text).get(exc.rule)) from None

    def candidates(self, action: str) -> tuple[CompiledRule, ...]:
        """Rules that may apply to ``action``, in document order (cached per action)."""
        found = self._candidates.get(action)
        if found is not None:
            return found
        rules = {rule.order: rule for rule in self._exact.get(action, ())}
        for patterns, rule in self._globbed:
            if patterns.matches(action):
                rules[rule.order] = rule
        found = tuple(rules[order] for order in sorted(rules))
        with self._lock:
            if len(self._candidates) >= _CACHE_LIMIT:
                self._candidates.clear()
            self._candidates[action] = found
        return found

    def evaluate(self, request: DecisionRequest) -> Decision:
        """Decide ``request`` (may raise; :class:`PolicyEngine` turns errors into deny)."""
        combining = self.document.combining
        approval: CompiledRule | None = None
        allow: CompiledRule | None = None
        deny: CompiledRule | None = None
        for rule in self.candidates(request.action):
            if not rule.matches(request):
                continue
            if combining is Combining.FIRST_APPLICABLE:
                return self._decided(rule)
            effect = rule.effect
            if effect is Effect.DENY:
                if combining is Combining.DENY_OVERRIDES:
                    return self._decided(rule)
                deny = deny or rule
            elif effect is Effect.ALLOW:
                if combining is Combining.ALLOW_OVERRIDES:
                    return self._decided(rule)
                allow = allow or rule
            else:
                approval = approval or rule
        winner = deny or approval or allow
        if combining is Combining.ALLOW_OVERRIDES:
            winner = approval or deny
        if winner is not None:
            return self._decided(winner)
        return self._default

    def _decided(self, rule: CompiledRule) -> Decision:
        return self._decisions[rule.id]


def _deny_all() -> CompiledPolicy:
    return CompiledPolicy(PolicyDocument(version=1, name="deny-all"))


class PolicyEngine:
    """The node's engine: holds the current policy, evaluates fail-closed, reloads live.

    Args:
        policy: the compiled policy; default denies everything (fail closed).
    """

    def __init__(self, policy: CompiledPolicy | None = None) -> None:
        self._policy = policy or _deny_all()
        self.decisions = 0
        self.errors = 0

    @property
    def policy(self) -> CompiledPolicy:
        return self._policy

    def reload(self, policy: CompiledPolicy) -> CompiledPolicy:
        """Switch to ``policy`` atomically; returns the previous one."""
        previous, self._policy = self._policy, policy
        logger.info("policy %s replaced by %s", previous.label, policy.label)
        return previous

    def reload_file(self, path: str | Path) -> CompiledPolicy:
        """Compile ``path`` and switch to it; on a load error the current policy stays.

        Raises:
            PolicyLoadError: the new file does not load (nothing changes).
        """
        return self.reload(CompiledPolicy.from_file(path))

    def decide(self, request: DecisionRequest) -> Decision:
        """Never raises: an evaluation error is a deny naming ``<evaluation-error>``."""
        self.decisions += 1
        policy = self._policy
        try:
            return policy.evaluate(request)
        except Exception as exc:  # fail closed, whatever went wrong
            self.errors += 1
            logger.warning("policy evaluation failed for %s: %s", request.action, exc)
            return Decision(
                Effect.DENY, EVALUATION_ERROR_RULE, f"evaluation failed: {exc}", policy.label
            )

    def check(self, action: str, **fields: Any) -> Decision:
        """Shorthand: ``engine.check("tool.x", kind="tool", args={...})``."""
        return self.decide(DecisionRequest(action, **fields))


def request_from_mapping(data: Mapping[str, Any]) -> DecisionRequest:
    """Build a request from JSON (the CLI's ``--request``); unknown keys are an error.

    Raises:
        ValueError: a key that is not a :class:`DecisionRequest` field, or no ``action``.
    """
    allowed = set(DecisionRequest.__dataclass_fields__)
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"unknown request field(s): {sorted(unknown)}; known: {sorted(allowed)}")
    if not isinstance(data.get("action"), str):
        raise ValueError("the request needs an 'action' string")
    return DecisionRequest(**data)


__all__ = [
    "EVALUATION_ERROR_RULE",
    "CompiledPolicy",
    "PolicyEngine",
    "request_from_mapping",
]
