"""The NATS transport's connect gives up on time even when a cancellation is swallowed."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from agentmesh.errors import NotConnected
from agentmesh.transport.nats import NatsTransport, _bounded


async def _swallows_the_first_cancellation(done: list[str]) -> None:
    # What a racing inner wait_for does on Python 3.11 (CPython gh-86296):
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(30)
    try:
        await asyncio.sleep(30)
    finally:
        done.append("ended")


async def test_a_swallowed_cancellation_cannot_outlive_the_timeout() -> None:
    done: list[str] = []
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        await _bounded(_swallows_the_first_cancellation(done), 0.2)
    assert time.monotonic() - start < 3
    assert done == ["ended"]


async def test_work_that_finishes_returns_and_errors_propagate() -> None:
    await _bounded(asyncio.sleep(0), 1.0)

    async def fails() -> None:
        raise OSError("refused")

    with pytest.raises(OSError, match="refused"):
        await _bounded(fails(), 1.0)


async def test_an_unreachable_server_fails_within_the_timeout() -> None:
    transport = NatsTransport("nats://127.0.0.1:1", name="unreachable")
    start = time.monotonic()
    with pytest.raises(NotConnected):
        await transport.connect(timeout=1.0)
    assert time.monotonic() - start < 5
    await transport.aclose()
