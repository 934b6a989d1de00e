"""ReplayCache: once per (sender, id) while valid, bounded memory, fail closed when full."""

from __future__ import annotations

import pytest

from iatp.clock import ManualClock
from iatp.envelope import DEFAULT_LIMITS, new_envelope, open_envelope, seal_envelope
from iatp.errors import ExpiredEnvelope, ReplayCacheFull, ReplayedEnvelope
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache

ALICE = AgentIdentity.from_seed(b"\xa1" * 32)
BOB = AgentIdentity.from_seed(b"\xb0" * 32)
T0 = 1_700_000_000_000
SKEW = 30_000
LIFETIME = 60_000


def _id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def test_second_sender_id_pair_is_refused_inside_the_window() -> None:
    cache = ReplayCache(clock_skew_ms=SKEW)
    cache.remember("alice", _id(1), T0 + LIFETIME, now_ms=T0)
    with pytest.raises(ReplayedEnvelope) as info:
        cache.remember("alice", _id(1), T0 + LIFETIME, now_ms=T0 + 1)
    assert info.value.envelope_id == _id(1)
    assert info.value.sender == "alice"
    # Still refused at the last instant the envelope could be valid.
    with pytest.raises(ReplayedEnvelope):
        cache.remember("alice", _id(1), T0 + LIFETIME, now_ms=T0 + LIFETIME + SKEW - 1)
    assert len(cache) == 1


def test_replay_with_a_different_claimed_expiry_is_still_refused() -> None:
    cache = ReplayCache(clock_skew_ms=SKEW)
    cache.remember("alice", _id(1), T0 + LIFETIME, now_ms=T0)
    with pytest.raises(ReplayedEnvelope):
        cache.remember("alice", _id(1), T0 + 10 * LIFETIME, now_ms=T0 + 1)


def test_same_id_from_another_sender_is_accepted() -> None:
    cache = ReplayCache(clock_skew_ms=SKEW)
    cache.remember("alice", _id(1), T0 + LIFETIME, now_ms=T0)
    cache.remember("bob", _id(1), T0 + LIFETIME, now_ms=T0)
    cache.remember("alice", _id(2), T0 + LIFETIME, now_ms=T0)
    assert len(cache) == 3


def test_id_is_accepted_again_after_expiry_plus_skew() -> None:
    cache = ReplayCache(clock_skew_ms=SKEW)
    cache.remember("alice", _id(1), T0 + LIFETIME, now_ms=T0)
    cache.remember("alice", _id(1), T0 + 2 * LIFETIME, now_ms=T0 + LIFETIME + SKEW)
    assert len(cache) == 1


def test_after_expiry_plus_skew_the_replayed_envelope_fails_as_expired() -> None:
    clock = ManualClock(T0)
    cache = ReplayCache(clock_skew_ms=DEFAULT_LIMITS.clock_skew_ms)
    envelope = new_envelope(
        sender=ALICE.did, type="t", recipient=BOB.did, body=b"x", now_ms=T0, lifetime_ms=LIFETIME
    )
    frame = seal_envelope(envelope, ALICE)
    open_envelope(frame, clock=clock, audience=BOB.did, replay=cache)
    with pytest.raises(ReplayedEnvelope):
        open_envelope(frame, clock=clock, audience=BOB.did, replay=cache)

    clock.set(envelope.expires_at_ms + DEFAULT_LIMITS.clock_skew_ms)
    # The cache itself has forgotten the id ...
    assert cache.prune(clock.now_ms()) == 1
    assert len(cache) == 0
    # ... but the envelope cannot be replayed: it is now expired.
    with pytest.raises(ExpiredEnvelope):
        open_envelope(frame, clock=clock, audience=BOB.did, replay=cache)
    assert len(cache) == 0


def test_prune_removes_only_entries_past_their_window() -> None:
    cache = ReplayCache(clock_skew_ms=SKEW)
    cache.remember("a", _id(1), T0 + 1_000, now_ms=T0)
    cache.remember("a", _id(2), T0 + 2_000, now_ms=T0)
    cache.remember("a", _id(3), T0 + 3_000, now_ms=T0)
    assert cache.prune(T0 + 1_000 + SKEW - 1) == 0
    assert cache.prune(T0 + 2_000 + SKEW) == 2
    assert len(cache) == 1
    with pytest.raises(ReplayedEnvelope):
        cache.remember("a", _id(3), T0 + 3_000, now_ms=T0 + 2_000 + SKEW)


def test_memory_is_bounded_by_rate_times_window_under_a_flood() -> None:
    # 200k distinct ids, 4 per millisecond, each valid for lifetime ms.
    lifetime, skew, per_ms, total = 2_000, 500, 4, 200_000
    bound = per_ms * (lifetime + skew)
    clock = ManualClock(T0)
    cache = ReplayCache(max_entries=10 * bound, clock_skew_ms=skew)
    peak = 0
    for n in range(total):
        if n % per_ms == 0:
            clock.advance(1)
        now = clock.now_ms()
        cache.remember("flooder", _id(n), now + lifetime, now_ms=now)
        peak = max(peak, len(cache))
        assert len(cache) <= bound + per_ms
    # The flood lasted 50 s, far longer than the window: the bound was reached.
    assert peak >= bound - per_ms
    # The expiry heap is pruned alongside the map (no hidden growth).
    assert len(cache._expiry_heap) <= bound + per_ms

    clock.advance(lifetime + skew)
    cache.prune(clock.now_ms())
    assert len(cache) == 0
    assert len(cache._expiry_heap) == 0


def test_remember_prunes_by_itself_without_an_explicit_prune_call() -> None:
    cache = ReplayCache(max_entries=10, clock_skew_ms=0)
    for n in range(10):
        cache.remember("a", _id(n), T0 + 100, now_ms=T0)
    # A full cache, but all ten have expired by now: the next remember makes room.
    cache.remember("a", _id(99), T0 + 300, now_ms=T0 + 200)
    assert len(cache) == 1


def test_full_cache_fails_closed_and_evicts_nothing() -> None:
    cache = ReplayCache(max_entries=3, clock_skew_ms=SKEW)
    for n in range(3):
        cache.remember("alice", _id(n), T0 + LIFETIME, now_ms=T0)
    with pytest.raises(ReplayCacheFull) as info:
        cache.remember("alice", _id(3), T0 + LIFETIME, now_ms=T0 + 1)
    assert info.value.envelope_id == _id(3)
    assert info.value.code == "replay_cache_full"
    assert len(cache) == 3
    # Nothing was evicted: the earlier ids are still refused as replays ...
    for n in range(3):
        with pytest.raises(ReplayedEnvelope):
            cache.remember("alice", _id(n), T0 + LIFETIME, now_ms=T0 + 2)
    # ... and the refused id was not recorded.
    with pytest.raises(ReplayCacheFull):
        cache.remember("alice", _id(3), T0 + LIFETIME, now_ms=T0 + 3)


def test_full_cache_accepts_again_once_entries_expire() -> None:
    cache = ReplayCache(max_entries=2, clock_skew_ms=SKEW)
    cache.remember("alice", _id(0), T0 + 1_000, now_ms=T0)
    cache.remember("alice", _id(1), T0 + LIFETIME, now_ms=T0)
    with pytest.raises(ReplayCacheFull):
        cache.remember("alice", _id(2), T0 + LIFETIME, now_ms=T0)
    cache.remember("alice", _id(2), T0 + LIFETIME, now_ms=T0 + 1_000 + SKEW)
    assert len(cache) == 2


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReplayCache(max_entries=0)
    assert ReplayCache(max_entries=5).max_entries == 5


def test_replay_errors_through_open_envelope_are_distinct_from_a_full_cache() -> None:
    clock = ManualClock(T0)
    cache = ReplayCache(max_entries=1)
    frames = [
        seal_envelope(
            new_envelope(sender=ALICE.did, type="t", recipient=BOB.did, body=b"", now_ms=T0), ALICE
        )
        for _ in range(2)
    ]
    open_envelope(frames[0], clock=clock, audience=BOB.did, replay=cache)
    with pytest.raises(ReplayCacheFull):
        open_envelope(frames[1], clock=clock, audience=BOB.did, replay=cache)
    with pytest.raises(ReplayedEnvelope):
        open_envelope(frames[0], clock=clock, audience=BOB.did, replay=cache)
