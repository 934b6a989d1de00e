"""What the policy engine is asked (:class:`DecisionRequest`) and answers (:class:`Decision`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from agentmesh.policy.document import Effect

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """One governed action.

    Attributes:
        action: the message type (``payments.transfer``) or tool name (``http.get``).
        kind: ``"message"`` or ``"tool"``.
        direction: ``"inbound"`` or ``"outbound"`` (tool calls are ``"outbound"``).
        peer: the other agent's DID (the sender of an inbound message, the caller
            of a tool, the recipient of an outbound message).
        org: the organization DID the peer belongs to, when known.
        ring: the peer's ring (0..3) at decision time.
        trust: the peer's trust score in [0, 1].
        resource: what the action touches (a URL, an account, a file), when known.
        args: the tool's arguments or the message's decoded fields.
        context: anything else the caller knows (environment, saga id, time of day).
    """

    action: str
    kind: str = "message"
    direction: str = "inbound"
    peer: str | None = None
    org: str | None = None
    ring: int = 3
    trust: float = 0.0
    resource: str | None = None
    args: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    context: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer. ``rule`` is the id of the rule that decided (``None``: the default)."""

    effect: Effect
    rule: str | None
    reason: str
    policy: str = ""

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    @property
    def code(self) -> str:
        """The stable code of a refusal (``policy_denied`` / ``approval_required``)."""
        if self.effect is Effect.ALLOW:
            return "allowed"
        if self.effect is Effect.REQUIRE_APPROVAL:
            return "approval_required"
        return "policy_denied"

    def to_dict(self) -> dict[str, object]:
        return {
            "effect": self.effect.value,
            "rule": self.rule,
            "reason": self.reason,
            "policy": self.policy,
        }


__all__ = ["Decision", "DecisionRequest"]
