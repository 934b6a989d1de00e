"""What a KV or stream handle needs from the InMemoryTransport that created it.

Handles live on a shared :class:`~agentmesh.transport.memory.InMemoryBus`, but they
belong to one transport: they refuse work once it is closed, and every iterator or
waiter they started must end when it closes. :class:`TransportLink` carries exactly
that, so the KV and stream modules do not import the transport module.
"""

from __future__ import annotations

from collections.abc import Callable

from agentmesh.errors import NotConnected


class TransportLink:
    """Liveness of one in-memory transport plus the callbacks to run when it closes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._open = False
        self._closed = False
        self._on_close: dict[int, Callable[[], None]] = {}
        self._next_id = 0

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        if self._closed:
            raise NotConnected(f"transport {self.name!r} is closed")
        self._open = True

    def check_open(self) -> None:
        """Raises: NotConnected unless the transport is connected."""
        if not self._open:
            state = "closed" if self._closed else "not connected"
            raise NotConnected(f"transport {self.name!r} is {state}")

    def on_close(self, callback: Callable[[], None]) -> int:
        """Run ``callback`` when the transport closes; returns a token for ``discard``."""
        self._next_id += 1
        self._on_close[self._next_id] = callback
        return self._next_id

    def discard(self, token: int) -> None:
        self._on_close.pop(token, None)

    def close(self) -> None:
        """Mark closed and wake every registered waiter (once)."""
        self._open = False
        if self._closed:
            return
        self._closed = True
        callbacks = list(self._on_close.values())
        self._on_close.clear()
        for callback in callbacks:
            callback()
