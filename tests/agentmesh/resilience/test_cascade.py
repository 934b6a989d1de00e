"""The cascade rule on an injected clock: spread, depth, window, re-arming, quarantine action."""

from __future__ import annotations

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.node.interceptors import InboundMessage, Outcome
from agentmesh.resilience import Attribution, CascadeConfig, CascadeDetector, CascadeEvent
from agentmesh.resilience.failures import note_failure
from iatp.clock import ManualClock
from iatp.envelope import new_envelope

B = "did:key:z6MkBbbb"
C = "did:key:z6MkCccc"
D = "did:key:z6MkDddd"
CALLERS = [f"did:key:z6MkCaller{i}" for i in range(5)]


def detector(
    quarantine: object = None, **config: object
) -> tuple[CascadeDetector, ManualClock, MemoryAuditSink, list[CascadeEvent]]:
    clock, audit = ManualClock(start_ms=0), MemoryAuditSink()
    made = CascadeDetector(
        CascadeConfig(**config),  # type: ignore[arg-type]
        quarantine=quarantine,  # type: ignore[arg-type]
        clock=clock,
        audit=audit,
        node=B,
    )
    events: list[CascadeEvent] = []
    made.on_cascade(events.append)
    return made, clock, audit, events


def timeout_of(root: str, depth: int = 1) -> Attribution:
    return Attribution(root, root, depth, "request_timeout")


def test_spread_to_k_distinct_callers_raises_one_event() -> None:
    cascades, clock, audit, events = detector(window_ms=1000, min_callers=3)
    for _ in range(5):
        cascades.observe(CALLERS[0], timeout_of(C))  # one caller, many failures: no cascade
    cascades.observe(CALLERS[1], timeout_of(C))
    assert events == []
    clock.advance(10)
    cascades.observe(CALLERS[2], Attribution(C, C, 1, "circuit_open"))
    assert len(events) == 1
    event = events[0]
    assert event.root == C
    assert event.node == B
    assert event.affected == (B, *sorted(CALLERS[:3]))
    assert (event.failures, event.depth, event.first_hand) == (7, 2, True)
    assert event.codes == ("circuit_open", "request_timeout")
    assert (event.window_ms, event.at_ms) == (1000, 10)
    cascades.observe(CALLERS[3], timeout_of(C))  # re-armed only after rearm_ms (= window)
    assert len(events) == 1
    assert [(e.code, e.peer) for e in audit.of_kind("cascade")] == [("detected", C)]


def test_failures_outside_the_window_do_not_add_up() -> None:
    cascades, clock, _, events = detector(window_ms=1000, min_callers=2)
    cascades.observe(CALLERS[0], timeout_of(C))
    clock.advance(1000)
    cascades.observe(CALLERS[1], timeout_of(C))
    assert events == []
    clock.advance(500)
    cascades.observe(CALLERS[0], timeout_of(C))
    assert len(events) == 1


def test_roots_are_counted_apart() -> None:
    cascades, _, _, events = detector(min_callers=2)
    cascades.observe(CALLERS[0], timeout_of(C))
    cascades.observe(CALLERS[1], timeout_of(D))
    assert events == []


def test_a_deep_chain_alone_is_a_cascade_and_rearms_after_quiet_time() -> None:
    cascades, clock, _, events = detector(window_ms=1000, min_callers=5, min_depth=3, rearm_ms=0)
    cascades.observe(CALLERS[0], timeout_of(D))  # chain 2 (caller -> B -> D): not enough
    assert events == []
    cascades.observe(CALLERS[0], Attribution(C, D, 2, "circuit_open"))  # caller->B->C->D
    assert len(events) == 1
    assert events[0].depth == 3
    assert events[0].root == D
    assert events[0].first_hand  # B also called D itself, and saw it time out
    clock.advance(1)
    cascades.observe(CALLERS[1], Attribution(C, D, 2, "circuit_open"))
    assert len(events) == 2


async def test_quarantine_action_asks_for_first_hand_roots_only() -> None:
    asked: list[tuple[str, str]] = []

    async def quarantine(did: str, reason: str) -> None:
        asked.append((did, reason))

    cascades, _, audit, events = detector(
        quarantine, min_callers=2, min_depth=3, action="quarantine"
    )
    cascades.observe(CALLERS[0], timeout_of(C))
    cascades.observe(CALLERS[1], timeout_of(C))
    # D is named only by C's relayed circuit_open: an event, but no quarantine.
    cascades.observe(CALLERS[0], Attribution(C, D, 2, "circuit_open"))
    await cascades.drain()
    assert [e.root for e in events] == [C, D]
    assert [did for did, _ in asked] == [C]
    assert "2 callers" in asked[0][1]
    assert audit.codes("cascade") == [
        "detected",
        "quarantine_requested",
        "detected",
        "quarantine_skipped",
    ]
    assert cascades.counters["quarantines_requested"] == 1


async def test_a_failing_quarantine_is_audited() -> None:
    async def quarantine(did: str, reason: str) -> None:
        raise RuntimeError("not an authority")

    cascades, _, audit, _ = detector(quarantine, min_callers=1, action="quarantine")
    cascades.observe(CALLERS[0], timeout_of(C))
    await cascades.drain()
    assert audit.codes("cascade") == ["detected", "quarantine_requested", "quarantine_failed"]
    assert cascades.counters["quarantines_failed"] == 1


async def test_without_a_callback_the_quarantine_action_only_alerts() -> None:
    cascades, _, audit, events = detector(min_callers=1, action="quarantine")
    cascades.observe(CALLERS[0], timeout_of(C))
    assert len(events) == 1
    assert audit.codes("cascade") == ["detected", "quarantine_unavailable"]


async def test_record_outcome_reads_the_failed_call_of_the_same_task() -> None:
    cascades, _, _, events = detector(min_callers=1)
    envelope = new_envelope(
        sender=CALLERS[0], type="work", recipient=B, body=b"", now_ms=0, lifetime_ms=60_000
    )
    message = InboundMessage(envelope, "subject", is_request=True)
    await cascades.record_outcome(message, Outcome.FAILURE)  # no downstream call failed
    note_failure(timeout_of(C))
    await cascades.record_outcome(message, Outcome.SUCCESS)  # the handler coped
    await cascades.record_outcome(message, Outcome.REJECTED)
    assert events == []
    await cascades.record_outcome(message, Outcome.FAILURE)
    assert [e.root for e in events] == [C]
    note_failure(None)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="min_depth"):
        CascadeConfig(min_depth=1)
