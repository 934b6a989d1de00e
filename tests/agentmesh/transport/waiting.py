"""Small async helpers for transport tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from agentmesh.transport import Message

T = TypeVar("T")


class Recorder:
    """A message handler that records what it gets and lets a test wait for it."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self._changed.set()

    @property
    def payloads(self) -> list[bytes]:
        return [m.data for m in self.messages]

    @property
    def subjects(self) -> list[str]:
        return [m.subject for m in self.messages]

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Message]:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``check`` until it holds (fails the test with TimeoutError otherwise)."""
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(0.02)  # polling: the condition has no event to wait on


async def take(iterator: AsyncIterator[T], count: int, timeout: float = 5.0) -> list[T]:
    """The next ``count`` items of ``iterator``."""
    out: list[T] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            out.append(await anext(iterator))
    return out
