"""Directory change events, fanned out to every :meth:`Directory.watch` iterator."""

from __future__ import annotations

import asyncio
import enum
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


class EventStream:
    """Events from the moment :meth:`Directory.watch` was called; ends when the directory closes.

    Use ``async for event in stream``; call :meth:`close` to stop early.
    """

    def __init__(self, fanout: EventFanout) -> None:
        self._fanout = fanout
        self._queue: asyncio.Queue[DirectoryEvent | None] = asyncio.Queue()

    def put(self, event: DirectoryEvent | None) -> None:
        self._queue.put_nowait(event)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> DirectoryEvent:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # stay ended
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        self._fanout.discard(self)
        self._queue.put_nowait(None)


class EventFanout:
    """One unbounded queue per open stream; closing the fanout ends every stream."""

    def __init__(self) -> None:
        self._streams: set[EventStream] = set()
        self._closed = False

    def emit(self, event: DirectoryEvent) -> None:
        for stream in self._streams:
            stream.put(event)

    def stream(self) -> EventStream:
        stream = EventStream(self)
        if self._closed:
            stream.put(None)
        else:
            self._streams.add(stream)
        return stream

    def discard(self, stream: EventStream) -> None:
        self._streams.discard(stream)

    def close(self) -> None:
        self._closed = True
        for stream in list(self._streams):
            stream.close()
