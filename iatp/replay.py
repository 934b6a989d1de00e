"""Replay protection: each (sender, id) is accepted once while it could be valid.

Entries live until the envelope's ``expires_at_ms + clock_skew_ms``: after that
the envelope is rejected as expired anyway, so the entry can go. Because the
decoder caps an envelope's lifetime, the number of live entries is bounded by
``arrival rate x (max_lifetime + skew)``; ``max_entries`` is a hard cap beyond
which new envelopes are refused (fail closed) rather than old entries evicted,
since eviction would re-open a replay window.

A cache lives in memory: after a receiver restarts, it has not seen what the
previous run accepted. ``since_ms`` records when the cache started remembering;
an envelope issued before it cannot be vouched for and is refused
(``IssuedBeforeStart``), so a captured envelope replayed after a restart does
not run twice (docs/iatp.md, replay protection).
"""

from __future__ import annotations

import heapq

from iatp.errors import IssuedBeforeStart, ReplayCacheFull, ReplayedEnvelope


class ReplayCache:
    """Remembers (sender, id) pairs until they can no longer be valid."""

    __slots__ = ("_clock_skew_ms", "_expiry_heap", "_max_entries", "_seen", "since_ms")

    def __init__(
        self,
        *,
        max_entries: int = 1_000_000,
        clock_skew_ms: int = 30_000,
        since_ms: int | None = None,
    ) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.since_ms = since_ms
        self._max_entries = max_entries
        self._clock_skew_ms = clock_skew_ms
        self._seen: dict[tuple[str, bytes], int] = {}
        self._expiry_heap: list[tuple[int, str, bytes]] = []

    def __len__(self) -> int:
        return len(self._seen)

    @property
    def max_entries(self) -> int:
        return self._max_entries

    def prune(self, now_ms: int) -> int:
        """Forget entries that can no longer be valid; returns how many went."""
        heap, seen, removed = self._expiry_heap, self._seen, 0
        while heap and heap[0][0] <= now_ms:
            _, sender, envelope_id = heapq.heappop(heap)
            seen.pop((sender, envelope_id), None)
            removed += 1
        return removed

    @property
    def clock_skew_ms(self) -> int:
        return self._clock_skew_ms

    def remember(
        self,
        sender: str,
        envelope_id: bytes,
        expires_at_ms: int,
        *,
        now_ms: int,
        clock_skew_ms: int | None = None,
        issued_at_ms: int | None = None,
    ) -> None:
        """Record an accepted envelope, or refuse it as a replay.

        The entry is kept until ``expires_at_ms`` plus the larger of the cache's
        skew and ``clock_skew_ms`` (the receiver's validity skew): a cache can
        never forget an envelope that its receiver would still accept.

        Raises:
            IssuedBeforeStart: ``issued_at_ms`` is before ``since_ms``.
            ReplayedEnvelope: (sender, id) was already accepted and may still be valid.
            ReplayCacheFull: the cache holds ``max_entries`` live entries.
        """
        since = self.since_ms
        if since is not None and issued_at_ms is not None and issued_at_ms < since:
            raise IssuedBeforeStart(
                f"issued {since - issued_at_ms} ms before this replay cache started",
                envelope_id=envelope_id,
                sender=sender,
            )
        heap = self._expiry_heap
        if heap and heap[0][0] <= now_ms:  # the test that starts prune(), inlined
            self.prune(now_ms)
        key = (sender, envelope_id)
        if key in self._seen:
            raise ReplayedEnvelope(
                "envelope id already seen from this sender", envelope_id=envelope_id, sender=sender
            )
        if len(self._seen) >= self._max_entries:
            raise ReplayCacheFull(
                f"replay cache holds {self._max_entries} live entries; refusing",
                envelope_id=envelope_id,
                sender=sender,
            )
        skew = (
            self._clock_skew_ms
            if clock_skew_ms is None
            else max(self._clock_skew_ms, clock_skew_ms)
        )
        forget_at = expires_at_ms + skew
        self._seen[key] = forget_at
        heapq.heappush(heap, (forget_at, sender, envelope_id))
