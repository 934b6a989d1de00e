"""What only the in-memory transport has: bus sharing, injected randomness and clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import pytest

from agentmesh.errors import KeyNotFound, NoResponders, NotConnected, PayloadTooLarge, StreamError
from agentmesh.transport import (
    InMemoryBus,
    InMemoryTransport,
    Message,
    MessageHandler,
    TransportState,
)
from tests.agentmesh.transport.waiting import Recorder, eventually, take


class FakeMonotonic:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def test_transports_on_one_bus_see_each_other() -> None:
    bus = InMemoryBus()
    async with InMemoryTransport(bus, name="a") as a, InMemoryTransport(bus, name="b") as b:
        recorder = Recorder()
        await b.subscribe("greet.*", recorder)
        await a.publish("greet.b", b"hi")
        await recorder.wait_for(1)
        assert a.bus is b.bus


async def test_transports_without_a_bus_are_isolated() -> None:
    async with InMemoryTransport() as a, InMemoryTransport() as b:
        await b.subscribe("svc", Recorder())
        assert a.bus is not b.bus
        with pytest.raises(NoResponders):
            await a.request("svc", b"?", timeout=1.0)


async def test_state_goes_new_connected_closed() -> None:
    transport = InMemoryTransport()
    states = [transport.state]
    await transport.connect()
    await transport.connect()  # idempotent
    states.append(transport.state)
    await transport.aclose()
    states.append(transport.state)
    assert states == [TransportState.NEW, TransportState.CONNECTED, TransportState.CLOSED]


async def _queue_choices(seed: int) -> list[int]:
    """Which of four queue members got each of 40 messages, in message order."""
    chosen: dict[int, int] = {}

    def member(index: int) -> MessageHandler:
        async def handler(message: Message) -> None:
            chosen[int(message.data)] = index

        return handler

    async with InMemoryTransport(InMemoryBus(rng=random.Random(seed))) as transport:
        for index in range(4):
            await transport.subscribe("jobs", member(index), queue="q")
        for i in range(40):
            await transport.publish("jobs", str(i).encode())
        await eventually(lambda: len(chosen) == 40)
    return [chosen[i] for i in range(40)]


async def test_queue_group_choice_is_reproducible_from_a_seed() -> None:
    assert await _queue_choices(7) == await _queue_choices(7)
    assert await _queue_choices(7) != await _queue_choices(8)


async def test_max_payload_comes_from_the_bus() -> None:
    async with InMemoryTransport(InMemoryBus(max_payload=16)) as transport:
        assert transport.max_payload == 16
        await transport.publish("small", b"x" * 16)
        with pytest.raises(PayloadTooLarge):
            await transport.publish("small", b"x" * 17)


async def test_kv_ttl_uses_the_injected_clock() -> None:
    clock = FakeMonotonic()
    async with InMemoryTransport(InMemoryBus(monotonic=clock)) as transport:
        kv = await transport.key_value("sessions", ttl=30)
        revision = await kv.put("s1", b"open")
        clock.advance(29.9)
        assert (await kv.get("s1")).revision == revision
        clock.advance(0.1)
        with pytest.raises(KeyNotFound):
            await kv.get("s1")
        assert await kv.update("s1", b"again", last_revision=0) > revision


async def test_stream_dedupe_window_and_max_age_use_the_injected_clock() -> None:
    clock = FakeMonotonic()
    async with InMemoryTransport(InMemoryBus(monotonic=clock)) as transport:
        stream = await transport.stream("log", ["log.>"], max_age=100, duplicate_window=10)
        assert (await stream.append("log.a", b"1", msg_id="m")).seq == 1
        clock.advance(9)
        assert (await stream.append("log.a", b"1", msg_id="m")).duplicate
        clock.advance(1)
        assert (await stream.append("log.a", b"1", msg_id="m")).seq == 2
        clock.advance(95)  # seq 1 is now 105 s old, seq 2 is 95 s old
        async with contextlib.aclosing(stream.read()) as reader:
            (oldest,) = await take(reader, 1)
        assert oldest.seq == 2
        assert await stream.last_seq() == 2  # sequences never go back


async def test_redelivery_deadline_uses_the_injected_clock() -> None:
    clock = FakeMonotonic()
    async with InMemoryTransport(InMemoryBus(monotonic=clock)) as transport:
        stream = await transport.stream("jobs", ["jobs.>"])
        await stream.append("jobs.x", b"work")
        consumer = await stream.consumer("w", ack_wait=60)
        (first,) = await consumer.fetch(1, timeout=0.1)
        assert await consumer.fetch(1, timeout=0.05) == []
        clock.advance(60)
        (again,) = await consumer.fetch(1, timeout=0.1)
        assert again.seq == first.seq


async def test_aclose_lets_handlers_finish_queued_messages() -> None:
    async with InMemoryTransport() as publisher_side:
        transport = InMemoryTransport(publisher_side.bus)
        await transport.connect()
        handled: list[bytes] = []

        async def slow(message: Message) -> None:
            await asyncio.sleep(0.01)
            handled.append(message.data)

        await transport.subscribe("work", slow)
        for i in range(5):
            await publisher_side.publish("work", str(i).encode())
        await transport.aclose()
        assert handled == [b"0", b"1", b"2", b"3", b"4"]


async def test_aclose_fails_pending_requests() -> None:
    transport = InMemoryTransport()
    await transport.connect()

    async def never(message: Message) -> None:
        return None

    await transport.subscribe("slow", never)
    pending = asyncio.ensure_future(transport.request("slow", b"?", timeout=10))
    await asyncio.sleep(0.01)
    await transport.aclose()
    with pytest.raises(NotConnected):
        await pending


async def test_failing_handler_is_logged_without_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with InMemoryTransport() as transport:
        done = asyncio.Event()

        async def broken(message: Message) -> None:
            done.set()
            raise ValueError("bad handler")

        await transport.subscribe("x", broken)
        with caplog.at_level(logging.ERROR, logger="agentmesh.transport.memory"):
            await transport.publish("x", b"secret-payload")
            await done.wait()
            await asyncio.sleep(0)
    assert any("handler for subject x raised" in r.getMessage() for r in caplog.records)
    assert all("secret-payload" not in r.getMessage() for r in caplog.records)


async def test_stream_config_errors() -> None:
    async with InMemoryTransport() as transport:
        with pytest.raises(StreamError):
            await transport.stream("empty", [])
        with pytest.raises(StreamError):
            await transport.stream("aged", ["a.>"], max_age=0)
