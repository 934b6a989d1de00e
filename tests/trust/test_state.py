"""Engine state export and load: a snapshot plus the tail equals the whole history."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iatp.clock import ManualClock
from tests.trust.conftest import dids
from trust import (
    MalformedSnapshot,
    Outcome,
    Receipt,
    SnapshotMismatch,
    TrustConfig,
    TrustEngine,
    TrustError,
    pack_state,
    unpack_state,
)
from trust.state import EngineState

AGENTS = dids(14)
T0 = 1_700_000_000_000
CONFIG = TrustConfig(receipt_horizon_ms=120_000, max_future_skew_ms=60_000)


def history(count: int = 900, seed: int = 5) -> list[Receipt]:
    """Random interactions, late arrivals, replays, a stale one and a traitor (drift)."""
    rng = random.Random(seed)
    out: list[Receipt] = []
    for k in range(count):
        o, s = rng.sample(AGENTS, 2)
        traitor = s == AGENTS[5] and k > count // 2
        outcome = (
            Outcome.POLICY_VIOLATION
            if traitor
            else rng.choice([Outcome.SUCCESS] * 9 + [Outcome.FAILURE])
        )
        at_ms = T0 + k * 1_000 - rng.randrange(20_000)  # arrives up to 20 s late
        out.append(
            Receipt.create(
                observer=o,
                subject=s,
                interaction_id=f"h{seed}-{k}",
                outcome=outcome,
                at_ms=max(at_ms, T0),
                action=rng.choice(["read", "write", "plan"]),
            )
        )
        if k % 97 == 0 and out:
            out.append(rng.choice(out))  # a replay inside the horizon
        if k % 211 == 0 and k:
            out.append(out[0])  # a replay long after: stale
    return out


def engine() -> TrustEngine:
    return TrustEngine(pre_trusted=AGENTS[:2], clock=ManualClock(T0 + 10**9), config=CONFIG)


def fold(target: TrustEngine, receipts: list[Receipt], start: int = 0) -> None:
    """Fold like a ledger with ``recompute_every=10`` (position-based recomputes)."""
    for k, r in enumerate(receipts, start):
        with contextlib.suppress(TrustError):
            target.record(r)
        if k % 10 == 9:
            target.recompute(at_ms=T0 + k * 1_000)


def test_snapshot_then_tail_equals_the_whole_history_bit_for_bit() -> None:
    receipts = history()
    cut = len(receipts) // 2
    full = engine()
    fold(full, receipts[:cut])
    body = pack_state(full.export_state())
    joined = engine()
    joined.load_state(unpack_state(body))
    assert pack_state(joined.export_state()) == body
    fold(full, receipts[cut:], cut)
    fold(joined, receipts[cut:], cut)
    assert pack_state(joined.export_state()) == pack_state(full.export_state())
    at = T0 + len(receipts) * 1_000
    for did in AGENTS:
        assert joined.score(did) == full.score(did)
        assert joined.ring(did) == full.ring(did)
        assert joined.flagged(did) == full.flagged(did)
        assert joined.credible_evidence(did) == full.credible_evidence(did)
        assert joined.explain(did).receipts == full.explain(did).receipts
        for other in AGENTS:
            assert joined.local(did, other, at_ms=at) == full.local(did, other, at_ms=at)
    assert full.flagged(AGENTS[5])  # the history exercised drift
    assert full.rejections["stale_receipt"] > 0  # and the replay horizon
    assert joined.rejections["stale_receipt"] > 0  # the tail's stale replays, on both


def _fresh_and_state() -> tuple[TrustEngine, EngineState]:
    source = engine()
    fold(source, history(200))
    return engine(), source.export_state()


def test_a_state_for_another_config_or_anchors_is_refused_whole() -> None:
    _, state = _fresh_and_state()
    other_config = TrustEngine(
        pre_trusted=AGENTS[:2],
        clock=ManualClock(T0),
        config=TrustConfig(receipt_horizon_ms=120_000, max_future_skew_ms=60_000, damping=0.2),
    )
    with pytest.raises(SnapshotMismatch, match="damping"):
        other_config.load_state(state)
    other_anchors = TrustEngine(pre_trusted=AGENTS[2:4], clock=ManualClock(T0), config=CONFIG)
    with pytest.raises(SnapshotMismatch, match="pre-trusted"):
        other_anchors.load_state(state)
    used = engine()
    fold(used, history(20, seed=9))
    with pytest.raises(SnapshotMismatch, match="without evidence"):
        used.load_state(state)
    for refused in (other_config, other_anchors):  # nothing half-applied: still fresh
        assert len(refused) == 2
        assert refused.remembered_receipts == 0


def test_invalid_edges_or_names_in_a_state_are_refused() -> None:
    fresh, state = _fresh_and_state()
    looped = EngineState(
        **{
            **{name: getattr(state, name) for name in EngineState.__slots__},
            "subject": state.observer.copy(),
        }
    )
    with pytest.raises(MalformedSnapshot, match="self-evidence"):
        fresh.load_state(looped)
    renamed = EngineState(
        **{
            **{name: getattr(state, name) for name in EngineState.__slots__},
            "agents": (*state.agents[:-1], "not-a-did"),
        }
    )
    with pytest.raises(MalformedSnapshot, match="did:key"):
        fresh.load_state(renamed)
    assert len(fresh) == 2
    fresh.load_state(state)  # the genuine state still loads
    assert len(fresh) == len(state.agents)


def test_damaged_bodies_raise_only_malformed_snapshot() -> None:
    _, state = _fresh_and_state()
    body = pack_state(state)
    rng = random.Random(3)
    for _ in range(300):
        damaged = bytearray(body)
        for _ in range(rng.randrange(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        cut = bytes(damaged[: rng.randrange(len(damaged) + 1)])
        for candidate in (bytes(damaged), cut):
            with contextlib.suppress(MalformedSnapshot):
                unpack_state(candidate)
    with pytest.raises(MalformedSnapshot):
        unpack_state(body[:-1])
    non_finite = pack_state(
        EngineState(
            **{
                **{name: getattr(state, name) for name in EngineState.__slots__},
                "alpha": np.full(len(state.alpha), np.nan),
            }
        )
    )
    with pytest.raises(MalformedSnapshot, match="finite"):
        unpack_state(non_finite)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_escape_as_anything_but_malformed(data: bytes) -> None:
    with pytest.raises(MalformedSnapshot):
        unpack_state(data)
