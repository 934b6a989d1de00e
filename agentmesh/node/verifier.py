"""Signature verification off the event loop, in batches, results in arrival order.

Frames that arrive in the same event-loop iteration are split across the
thread pool in one submission per worker (a thread hop per frame would cost
more than the verification). PyNaCl releases the GIL, so with two workers one
node verifies on two cores. A lone frame is verified inline: one hop costs
more than one verification, and latency matters more than throughput then.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from concurrent.futures import Executor, Future

from iatp.envelope import Frame, verify_frame
from iatp.errors import EnvelopeError


def _verify_chunk(frames: Sequence[Frame]) -> list[EnvelopeError | None]:
    results: list[EnvelopeError | None] = []
    for frame in frames:
        try:
            verify_frame(frame)
        except EnvelopeError as exc:
            results.append(exc)
        else:
            results.append(None)
    return results


class BatchVerifier:
    """``verify(frame)`` returns a future that resolves to ``None`` or the error."""

    def __init__(self, executor: Executor, *, workers: int, inline_below: int) -> None:
        self._executor = executor
        self._workers = max(1, workers)
        self._inline_below = inline_below
        self._pending: list[tuple[Frame, asyncio.Future[EnvelopeError | None]]] = []
        self._scheduled = False

    def verify(self, frame: Frame) -> asyncio.Future[EnvelopeError | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[EnvelopeError | None] = loop.create_future()
        self._pending.append((frame, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self._pending, self._scheduled = self._pending, [], False
        if len(batch) < self._inline_below:
            for (_, future), result in zip(
                batch, _verify_chunk([f for f, _ in batch]), strict=True
            ):
                if not future.done():
                    future.set_result(result)
            return
        loop = asyncio.get_running_loop()
        size = -(-len(batch) // self._workers)
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            job = self._executor.submit(_verify_chunk, [frame for frame, _ in chunk])
            futures = [future for _, future in chunk]
            job.add_done_callback(functools.partial(_hand_back, loop, futures))


def _hand_back(
    loop: asyncio.AbstractEventLoop,
    futures: list[asyncio.Future[EnvelopeError | None]],
    job: Future[list[EnvelopeError | None]],
) -> None:
    loop.call_soon_threadsafe(_deliver, job, futures)


def _deliver(
    job: Future[list[EnvelopeError | None]], futures: list[asyncio.Future[EnvelopeError | None]]
) -> None:
    error = job.exception()
    for index, future in enumerate(futures):
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(job.result()[index])
