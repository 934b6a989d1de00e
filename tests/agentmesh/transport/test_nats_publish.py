"""NatsTransport.publish against a real nats-server: the validated-subject cache and headers."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.errors import InvalidSubject, NotConnected
from agentmesh.transport import nats as nats_transport
from agentmesh.transport.base import Message
from agentmesh.transport.nats import NatsTransport
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats


async def connected(server: NatsServerProcess) -> NatsTransport:
    transport = NatsTransport(server.url, name="publish-test")
    await transport.connect(timeout=5.0)
    return transport


@pytest.mark.parametrize("subject", ["a..b", "a b", "a.*", "a.>", "", "a.\x01"])
async def test_a_bad_subject_is_refused_every_time(
    nats_server: NatsServerProcess, subject: str
) -> None:
    transport = await connected(nats_server)
    try:
        for _ in range(2):  # the second time too: only subjects that passed are remembered
            with pytest.raises(InvalidSubject):
                await transport.publish(subject, b"x")
        with pytest.raises(InvalidSubject):
            await transport.publish("ok.subject", b"x", reply=subject or "a..b")
        assert subject not in transport._valid_subjects
    finally:
        await transport.aclose()


async def test_remembered_subjects_are_bounded_and_all_delivered(
    nats_server: NatsServerProcess, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nats_transport, "_VALID_SUBJECTS_KEPT", 3)
    transport = await connected(nats_server)
    got: list[Message] = []

    async def record(message: Message) -> None:
        got.append(message)

    try:
        await transport.subscribe(f"{uid}.>", record)
        subjects = [f"{uid}.s{i}" for i in range(5)]
        for subject in subjects * 2:
            await transport.publish(subject, subject.encode())
        await transport.flush()
        for _ in range(100):
            if len(got) == 10:
                break
            await asyncio.sleep(0.02)
        assert sorted(m.subject for m in got) == sorted(subjects * 2)
        assert len(transport._valid_subjects) == 3
    finally:
        await transport.aclose()


async def test_headers_arrive_and_a_message_without_has_read_only_empty_ones(
    nats_server: NatsServerProcess, uid: str
) -> None:
    transport = await connected(nats_server)
    got: list[Message] = []

    async def record(message: Message) -> None:
        got.append(message)

    try:
        await transport.subscribe(f"{uid}.h", record)
        await transport.publish(f"{uid}.h", b"1", headers={"X-Kind": " one "})
        await transport.publish(f"{uid}.h", b"2")
        await transport.flush()
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.02)
        with_headers, without = got
        assert dict(with_headers.headers) == {"X-Kind": "one"}
        assert dict(without.headers) == {}
        with pytest.raises(TypeError):
            without.headers["X"] = "y"  # type: ignore[index]
    finally:
        await transport.aclose()


async def test_publish_after_close_is_not_connected(nats_server: NatsServerProcess) -> None:
    transport = await connected(nats_server)
    await transport.publish("warm.subject", b"x")  # remembered as valid
    await transport.aclose()
    with pytest.raises(NotConnected):
        await transport.publish("warm.subject", b"x")
