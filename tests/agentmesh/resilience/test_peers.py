"""Which failures count, and PeerBreakers as the node's request guard (injected clock)."""

from __future__ import annotations

import asyncio
import random

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.errors import (
    CircuitOpen,
    ConnectionLost,
    InterceptorDenied,
    NoResponders,
    NoSession,
    RemoteError,
    RequestTimeout,
)
from agentmesh.resilience import (
    Attribution,
    BreakerConfig,
    BreakerSnapshot,
    BreakerState,
    CallResult,
    PeerBreakers,
    attribute,
    classify,
)
from agentmesh.resilience.failures import last_failure, note_failure, relayed_circuit_open
from iatp.clock import ManualClock

C = "did:key:z6MkCccc"
D = "did:key:z6MkDddd"


def remote(code: str, reason: str = "") -> RemoteError:
    return RemoteError(f"peer answered {code}", remote_code=code, reason=reason)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, CallResult.ANSWERED),
        (RequestTimeout("slow"), CallResult.FAILED),
        (NoResponders("gone"), CallResult.FAILED),
        (remote("handler_error", "ValueError"), CallResult.FAILED),
        (remote("malformed_error"), CallResult.FAILED),
        # The peer's own dependency failed: the peer answered, it is not the culprit.
        (remote("handler_error", "RequestTimeout"), CallResult.ANSWERED),
        (remote("handler_error", "CircuitOpen"), CallResult.ANSWERED),
        (remote("circuit_open", f"root={D} depth=1"), CallResult.ANSWERED),
        # A refusal of *us* says nothing about the peer's health.
        (remote("quarantined"), CallResult.ANSWERED),
        (remote("policy_denied"), CallResult.ANSWERED),
        (remote("rate_limited"), CallResult.ANSWERED),
        (remote("no_handler"), CallResult.ANSWERED),
        # Never reached the peer.
        (InterceptorDenied("local hook", denial_code="quarantined"), CallResult.IGNORED),
        (NoSession("no session"), CallResult.IGNORED),
        (ConnectionLost("our side"), CallResult.IGNORED),
        (asyncio.CancelledError(), CallResult.IGNORED),
    ],
)
def test_classify(error: BaseException | None, expected: CallResult) -> None:
    assert classify(error) is expected


def test_failure_codes_are_configurable() -> None:
    assert classify(remote("no_handler"), failure_codes=frozenset({"no_handler"})) is (
        CallResult.FAILED
    )


def test_attribution_and_relayed_circuit_open() -> None:
    assert attribute(C, RequestTimeout("x")) == Attribution(C, C, 1, "request_timeout")
    assert attribute(C, remote("policy_denied")) == Attribution(C, C, 1, "policy_denied")
    assert attribute(C, InterceptorDenied("x", denial_code="y")) is None
    relayed = relayed_circuit_open(C, remote("circuit_open", f"root={D} depth=2"))
    assert (relayed.peer, relayed.root, relayed.depth) == (C, D, 3)
    assert attribute(C, relayed) == Attribution(C, D, 3, "circuit_open")
    garbled = relayed_circuit_open(C, remote("circuit_open", "root=<script> depth=x"))
    assert (garbled.root, garbled.depth) == (C, 1)
    assert CircuitOpen("x", peer=C, root=D, depth=2).reply_reason == f"root={D} depth=2"


async def test_last_failure_is_per_task() -> None:
    note_failure(Attribution(C, C, 1, "request_timeout"))
    assert last_failure() == Attribution(C, C, 1, "request_timeout")

    async def child() -> Attribution | None:
        return last_failure()  # inherited context, but not this task's own call

    assert await asyncio.create_task(child()) is None
    note_failure(None)
    assert last_failure() is None


class Peer:
    """A stand-in for the request to C: answers, fails or times out as told."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.sent = 0

    async def send(self) -> str:
        self.sent += 1
        if self.error is not None:
            raise self.error
        return "reply"


def guard(**config: object) -> tuple[PeerBreakers, ManualClock, MemoryAuditSink]:
    clock, audit = ManualClock(), MemoryAuditSink()
    breakers = PeerBreakers(
        BreakerConfig(**config),  # type: ignore[arg-type]
        clock=clock,
        rng=random.Random(1),
        audit=audit,
        node="did:key:z6MkBbbb",
    )
    return breakers, clock, audit


async def test_open_circuit_fails_fast_without_sending_then_recovers() -> None:
    breakers, clock, audit = guard(failure_threshold=3, cool_down_ms=1000, jitter=0.0)
    peer = Peer()
    peer.error = RequestTimeout("slow")
    for _ in range(3):
        with pytest.raises(RequestTimeout):
            await breakers.call(C, peer.send)
    assert breakers.state(C) is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as refused:
        await breakers.call(C, peer.send)
    assert peer.sent == 3  # failed fast: nothing sent
    assert refused.value.peer == C
    assert refused.value.root == C
    assert refused.value.depth == 1
    assert refused.value.retry_at_ms == clock.now_ms() + 1000
    assert last_failure() == Attribution(C, C, 1, "circuit_open")

    clock.advance(1000)
    peer.error = None
    assert await breakers.call(C, peer.send) == "reply"  # the probe
    assert breakers.state(C) is BreakerState.CLOSED
    assert last_failure() is None
    assert [(e.code, e.peer) for e in audit.of_kind("circuit")] == [
        ("open", C),
        ("half_open", C),
        ("closed", C),
    ]
    assert breakers.transitions == {"open": 1, "half_open": 1, "closed": 1}
    assert breakers.snapshot() == [
        BreakerSnapshot(
            peer=C,
            state="closed",
            consecutive_failures=0,
            probes_in_flight=0,
            retry_at_ms=None,
            opened=1,
            rejected=1,
        )
    ]


async def test_policy_refusals_of_us_never_open_the_breaker() -> None:
    breakers, _, _ = guard(failure_threshold=2)
    peer = Peer()
    peer.error = remote("quarantined")
    for _ in range(10):
        with pytest.raises(RemoteError):
            await breakers.call(C, peer.send)
    assert breakers.state(C) is BreakerState.CLOSED
    assert peer.sent == 10


async def test_a_circuit_open_reply_is_relayed_one_hop_deeper() -> None:
    breakers, _, _ = guard(failure_threshold=1)
    peer = Peer()
    peer.error = remote("circuit_open", f"root={D} depth=1")
    with pytest.raises(CircuitOpen) as relayed:
        await breakers.call(C, peer.send)
    assert (relayed.value.peer, relayed.value.root, relayed.value.depth) == (C, D, 2)
    assert isinstance(relayed.value.__cause__, RemoteError)
    assert breakers.state(C) is BreakerState.CLOSED  # C answered: it is alive
    assert last_failure() == Attribution(C, D, 2, "circuit_open")


async def test_half_open_admits_one_probe_while_it_is_in_flight() -> None:
    breakers, clock, _ = guard(failure_threshold=1, cool_down_ms=10, jitter=0.0)
    peer = Peer()
    peer.error = NoResponders("gone")
    with pytest.raises(NoResponders):
        await breakers.call(C, peer.send)
    clock.advance(10)
    release = asyncio.Event()

    async def slow_probe() -> str:
        await release.wait()
        return "late reply"

    probe = asyncio.create_task(breakers.call(C, slow_probe))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpen):
        await breakers.call(C, peer.send)
    release.set()
    assert await probe == "late reply"
    assert breakers.state(C) is BreakerState.CLOSED


async def test_peers_are_independent_and_bounded() -> None:
    breakers, _, _ = guard(failure_threshold=1, max_peers=2)
    failing, healthy = Peer(), Peer()
    failing.error = RequestTimeout("slow")
    with pytest.raises(RequestTimeout):
        await breakers.call(C, failing.send)
    assert await breakers.call(D, healthy.send) == "reply"
    assert await breakers.call("did:key:z6MkEeee", healthy.send) == "reply"
    # D (healthy, closed) was forgotten to make room; the open breaker on C is kept.
    assert [s.peer for s in breakers.snapshot()] == [C, "did:key:z6MkEeee"]
    assert breakers.state(C) is BreakerState.OPEN
