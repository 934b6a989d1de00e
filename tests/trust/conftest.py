"""Helpers for the trust tests: deterministic identities and receipts."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from iatp.clock import ManualClock
from iatp.identity import AgentIdentity
from trust import Outcome, Receipt, TrustConfig, TrustEngine


def identity(n: int) -> AgentIdentity:
    return AgentIdentity.from_seed(n.to_bytes(4, "big") * 8)


def dids(count: int, start: int = 0) -> list[str]:
    return [identity(i).did for i in range(start, start + count)]


_counter = itertools.count()


def receipt(
    observer: str,
    subject: str,
    outcome: Outcome = Outcome.SUCCESS,
    *,
    at_ms: int = 1_700_000_000_000,
    action: str | None = None,
    weight: float = 1.0,
) -> Receipt:
    return Receipt.create(
        observer=observer,
        subject=subject,
        interaction_id=f"i{next(_counter)}",
        outcome=outcome,
        at_ms=at_ms,
        action=action,
        weight=weight,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000_000)


EngineFactory = Callable[..., TrustEngine]


@pytest.fixture
def make_engine(clock: ManualClock) -> EngineFactory:
    def build(pre_trusted: list[str] | None = None, **config: object) -> TrustEngine:
        return TrustEngine(
            pre_trusted=pre_trusted or [],
            clock=clock,
            config=TrustConfig(**config),  # type: ignore[arg-type]
        )

    return build
