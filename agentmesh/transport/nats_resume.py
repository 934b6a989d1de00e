"""Ordered JetStream consumers that start again after a reconnect.

A stream reader or KV watch is an ephemeral ordered push consumer. When the
``nats-server`` restarts, the consumer is gone with it, and nats-py only notices
after missing idle heartbeats (about 15 s here, during which nothing arrives).
:class:`ResumingSubscription` creates a fresh consumer as soon as the connection
is back, from the sequence after the last one delivered, and drops any message
at or below it (the old consumer may still deliver a few, or the server may not
have lost it at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import nats.errors

from agentmesh.errors import TransportError

logger = logging.getLogger(__name__)

RESUME_ATTEMPTS = 40
RESUME_BACKOFF_MAX_S = 1.0


class Unsubscribable(Protocol):
    async def unsubscribe(self) -> None: ...


class ReconnectOwner(Protocol):
    """The transport side: keeps the subscription for closing, reports reconnects."""

    def adopt(self, subscription: Unsubscribable) -> None: ...

    def release(self, subscription: Unsubscribable) -> None: ...

    def on_reconnect(self, callback: Callable[[], None]) -> int: ...

    def discard_reconnect(self, token: int) -> None: ...


class ResumingSubscription:
    """One ordered consumer, re-created from ``last + 1`` after each reconnect.

    ``make(start_seq)`` creates the consumer (``None``: the first one, with the
    caller's own deliver policy). The message callback calls :meth:`fresh` with
    each stream sequence and drops the message when it returns False.
    """

    def __init__(
        self,
        owner: ReconnectOwner,
        make: Callable[[int | None], Awaitable[Unsubscribable]],
        *,
        name: str,
    ) -> None:
        self._owner = owner
        self._make = make
        self._name = name
        self.last_seq = 0
        self.resumes = 0
        self._subscription: Unsubscribable | None = None
        self._task: asyncio.Task[None] | None = None
        self._token: int | None = None

    async def start(self) -> None:
        self._subscription = await self._make(None)
        self._owner.adopt(self._subscription)
        self._token = self._owner.on_reconnect(self._reconnected)

    def fresh(self, seq: int) -> bool:
        """True once per sequence, in increasing order (a resumed consumer repeats none)."""
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    def _reconnected(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._resume())

    async def _resume(self) -> None:
        delay = 0.05
        for _ in range(RESUME_ATTEMPTS):
            try:
                fresh = await self._make(self.last_seq + 1)
                break
            except (nats.errors.Error, TransportError, TimeoutError) as error:
                logger.debug("resuming %s failed (%s); retrying", self._name, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUME_BACKOFF_MAX_S)
        else:
            logger.warning("could not resume %s after a reconnect", self._name)
            return
        old, self._subscription = self._subscription, fresh
        self._owner.adopt(fresh)
        self.resumes += 1
        logger.info("resumed %s from seq %d after a reconnect", self._name, self.last_seq + 1)
        if old is not None:
            self._owner.release(old)
            with contextlib.suppress(nats.errors.Error):
                await old.unsubscribe()

    async def close(self) -> None:
        if self._token is not None:
            self._owner.discard_reconnect(self._token)
            self._token = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            self._owner.release(self._subscription)
            with contextlib.suppress(nats.errors.Error):
                await self._subscription.unsubscribe()
            self._subscription = None


__all__ = ["ReconnectOwner", "ResumingSubscription", "Unsubscribable"]
