"""A cancellation that lands together with nats-py's answer is not lost.

On Python 3.11 ``asyncio.wait_for`` returns the awaited result when its task is
cancelled in the loop iteration in which that result lands (CPython gh-86296).
nats-py waits for every request's reply that way, and the JetStream calls are
wrapped in one more ``wait_for``: a task cancelled just as its KV write was
answered went on running. :func:`translated_errors` gives the cancellation back.
"""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from agentmesh.transport.nats import NatsTransport
from agentmesh.transport.nats_errors import translated_errors
from tests.natsserver import NatsServerProcess


async def _reply_lands_with_the_cancel(reply_lands: object) -> asyncio.Task[int]:
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[int] = loop.create_future()

    async def call() -> int:
        with translated_errors():
            return await asyncio.wait_for(reply, 5)  # how nats-py waits for a reply

    task = asyncio.create_task(call())
    await asyncio.sleep(0)  # the call is waiting
    if isinstance(reply_lands, BaseException):
        reply.set_exception(reply_lands)
    else:
        reply.set_result(7)
    task.cancel()  # in the same loop iteration
    return task


async def test_a_reply_landing_with_the_cancellation_does_not_swallow_it() -> None:
    task = await _reply_lands_with_the_cancel(7)
    with pytest.raises(asyncio.CancelledError):
        await task  # plain wait_for returns 7 here


async def test_an_error_landing_with_the_cancellation_does_not_replace_it() -> None:
    task = await _reply_lands_with_the_cancel(nats.errors.TimeoutError())
    with pytest.raises(asyncio.CancelledError):
        await task  # not RequestTimeout: the caller asked for a cancellation


async def test_a_call_made_while_already_cancelling_still_returns() -> None:
    """Clean-up calls in an ``except CancelledError`` block are not cut short."""
    result: list[int] = []

    async def cleaning_up() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            with translated_errors():
                result.append(await asyncio.wait_for(asyncio.sleep(0, 3), 1))
            raise

    task = asyncio.create_task(cleaning_up())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert result == [3]


@pytest.mark.nats
async def test_a_cancelled_kv_writer_stops_over_nats(nats_server: NatsServerProcess) -> None:
    """A task renewing a key in a loop (like the saga lease keeper) is cancelled right
    after another write on the connection returns: without the fix about four in ten
    such cancellations were lost and the writer kept looping."""
    async with NatsTransport(nats_server.url, name="cancel") as transport:
        kv = await transport.key_value("cancellation-kept")
        for _ in range(40):

            async def keep_writing() -> None:
                while True:
                    await kv.put("renewed", b"1")

            writer = asyncio.create_task(keep_writing())
            await asyncio.sleep(0.002)
            await kv.put("other", b"x")
            writer.cancel()
            done, _ = await asyncio.wait({writer}, timeout=2)
            if not done:  # stop it for good before failing
                while not writer.done():
                    writer.cancel()
                    await asyncio.wait({writer}, timeout=0.05)
            assert done, "the cancellation was lost: the writer went on writing"
