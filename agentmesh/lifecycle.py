"""``async with`` for the runtime's long-lived parts: started on entry, closed on exit.

A part that has ``async start()`` and ``async aclose()`` (a node, a directory, a
trust service, a framework runtime, ...) inherits :class:`Lifecycle` instead of
writing the two dunder methods again. ``aclose`` runs whatever happened inside
the block; an exception raised there is not swallowed.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Lifecycle:
    """``async with part:`` calls ``await part.start()``, then ``await part.aclose()``."""

    __slots__ = ()

    async def start(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


__all__ = ["Lifecycle"]
