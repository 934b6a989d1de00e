"""Shared pieces of the simulations: deterministic agents and receipts."""

from __future__ import annotations

from dataclasses import dataclass, field

from iatp.clock import ManualClock
from iatp.identity import AgentIdentity
from trust import Outcome, Receipt, TrustConfig, TrustEngine

START_MS = 1_700_000_000_000
STEP_MS = 1_000


def agent_dids(count: int, *, namespace: int) -> list[str]:
    """``count`` real did:key names, the same for the same (count, namespace)."""
    return [
        AgentIdentity.from_seed(namespace.to_bytes(4, "big") + i.to_bytes(28, "big")).did
        for i in range(count)
    ]


@dataclass
class World:
    """An engine, its clock and a receipt counter."""

    pre_trusted: list[str]
    config: TrustConfig = field(default_factory=TrustConfig)
    clock: ManualClock = field(default_factory=lambda: ManualClock(START_MS))
    engine: TrustEngine = field(init=False)
    issued: int = 0

    def __post_init__(self) -> None:
        self.engine = TrustEngine(
            pre_trusted=self.pre_trusted, clock=self.clock, config=self.config
        )

    def report(
        self, observer: str, subject: str, outcome: Outcome, *, action: str | None = None
    ) -> None:
        """Record one receipt at the current time, then move the clock on."""
        self.issued += 1
        self.engine.record(
            Receipt.create(
                observer=observer,
                subject=subject,
                interaction_id=f"sim-{self.issued}",
                outcome=outcome,
                at_ms=self.clock.now_ms(),
                action=action,
            )
        )
        self.clock.advance(STEP_MS)
