"""Replay protection for receipt ids in memory that does not grow with history.

A receipt's id is a hash of its content, ``at_ms`` included, so a replayed receipt
carries the time of the original. The window keeps the *watermark*, the newest
``at_ms`` accepted so far, and refuses any receipt older than
``watermark - horizon_ms`` (:class:`~trust.errors.StaleReceipt`). An id is
forgotten exactly when its receipt becomes that old: from then on a replay is
refused by its time, so forgetting never re-admits it. Ids inside the horizon
are remembered, so memory is O(receipts per horizon), not O(history).

The watermark comes from the receipts themselves (stream order), not from a
clock, so every node that folds the same stream refuses the same receipts.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class ReceiptWindow:
    """Receipt ids seen inside the horizon. Not thread-safe (the engine owns it).

    Args:
        horizon_ms: how far behind the watermark a receipt may be; ``None`` keeps
            every id forever (the unbounded behaviour, for simulations and analysis).
    """

    __slots__ = ("_heap", "_ids", "horizon_ms", "watermark_ms")

    def __init__(self, horizon_ms: int | None) -> None:
        if horizon_ms is not None and horizon_ms <= 0:
            raise ValueError("horizon_ms must be > 0 (or None)")
        self.horizon_ms = horizon_ms
        self.watermark_ms = 0
        self._ids: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __contains__(self, receipt_id: object) -> bool:
        return receipt_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def floor_ms(self) -> int | None:
        """Receipts with ``at_ms`` below this are refused (None: nothing is)."""
        return None if self.horizon_ms is None else self.watermark_ms - self.horizon_ms

    def is_stale(self, at_ms: int) -> bool:
        floor = self.floor_ms
        return floor is not None and at_ms < floor

    def add(self, receipt_id: str, at_ms: int) -> None:
        """Remember an accepted receipt; advance the watermark and forget what fell out."""
        self._ids[receipt_id] = at_ms
        if self.horizon_ms is None:
            return
        heapq.heappush(self._heap, (at_ms, receipt_id))
        if at_ms > self.watermark_ms:
            self.watermark_ms = at_ms
            self._forget(at_ms - self.horizon_ms)

    def _forget(self, floor: int) -> None:
        heap, ids = self._heap, self._ids
        while heap and heap[0][0] < floor:
            _, receipt_id = heapq.heappop(heap)
            ids.pop(receipt_id, None)

    def entries(self) -> list[tuple[str, int]]:
        """Remembered ``(receipt_id, at_ms)``, oldest first (ties by id): canonical order."""
        return sorted(self._ids.items(), key=lambda item: (item[1], item[0]))

    def restore(self, watermark_ms: int, entries: Iterable[tuple[str, int]]) -> None:
        """Replace the state (snapshot restore); entries below the floor are dropped."""
        self.watermark_ms = watermark_ms
        self._ids = dict(entries)
        self._heap = [(at, rid) for rid, at in self._ids.items()] if self.horizon_ms else []
        heapq.heapify(self._heap)
        if self.horizon_ms is not None:
            self._forget(watermark_ms - self.horizon_ms)
