"""Directory change events, fanned out to every :meth:`Directory.watch` iterator."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass

from registry.card import AgentCard


class DirectoryEventKind(enum.StrEnum):
    REGISTERED = "registered"
    UPDATED = "updated"
    REMOVED = "removed"
    EXPIRED = "expired"
    DRIFT = "drift"
    APPROVED = "approved"
    ROTATED = "rotated"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class DirectoryEvent:
    """``kind`` happened to ``did``; ``card`` is the card involved when there is one."""

    kind: DirectoryEventKind
    did: str | None
    card: AgentCard | None = None
    detail: str = ""


class EventFanout:
    """Unbounded per-watcher queues; a closed fanout ends every iterator."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[DirectoryEvent | None]] = set()
        self._closed = False

    def emit(self, event: DirectoryEvent) -> None:
        for queue in self._queues:
            queue.put_nowait(event)

    async def events(self) -> AsyncIterator[DirectoryEvent]:
        queue: asyncio.Queue[DirectoryEvent | None] = asyncio.Queue()
        if self._closed:
            return
        self._queues.add(queue)
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._queues.discard(queue)

    def close(self) -> None:
        self._closed = True
        for queue in self._queues:
            queue.put_nowait(None)
