"""Events the engine emits to its listeners (e.g. the ring enforcer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DriftDetected:
    """An agent's behaviour changed; its trust dropped at once.

    Attributes:
        did: the drifting agent.
        kind: ``"outcome_cusum"`` or ``"action_divergence"``.
        receipt_id: the receipt that raised the alarm (the evidence link).
        statistic: the detector's value when it fired.
        at_ms: the engine clock at detection.
    """

    did: str
    kind: str
    receipt_id: str
    statistic: float
    at_ms: int


@dataclass(frozen=True, slots=True)
class RingChanged:
    """An agent moved between rings (``new_ring > old_ring`` is a demotion).

    Attributes:
        reason: ``"drift"``, ``"recompute"``.
        receipt_id: the receipt behind a drift demotion, else None.
    """

    did: str
    old_ring: int
    new_ring: int
    reason: str
    receipt_id: str | None
    at_ms: int

    @property
    def demotion(self) -> bool:
        return self.new_ring > self.old_ring


TrustEvent = DriftDetected | RingChanged
TrustListener = Callable[[TrustEvent], None]
