"""What only the NATS transport has: reconnects, a lost server, connect failures.

These tests start their own nats-server (they stop it on purpose), so they do not
disturb the session-wide one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest

from agentmesh.errors import ConnectionLost, NotConnected, RequestTimeout
from agentmesh.transport import TransportState
from agentmesh.transport.nats import NatsConfig, NatsTransport
from tests.agentmesh.transport.waiting import Recorder, eventually
from tests.conftest import start_or_fail
from tests.natsserver import NatsServerNotFound, NatsServerProcess

pytestmark = pytest.mark.nats

FAST_RECONNECT = NatsConfig(reconnect_time_wait=0.1, max_reconnect_attempts=-1)


@pytest.fixture
def own_server() -> Iterator[NatsServerProcess]:
    server = start_or_fail(NatsServerProcess())
    try:
        yield server
    finally:
        server.close()


async def test_survives_a_server_restart(
    own_server: NatsServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    transport = NatsTransport(own_server.url, name="survivor", config=FAST_RECONNECT)
    try:
        await transport.connect()
        recorder = Recorder()
        await transport.subscribe("svc.ping", recorder)
        kv = await transport.key_value("registry")
        revision = await kv.put("agent", b"alice")
        stream = await transport.stream("audit", ["audit.>"])
        await stream.append("audit.e", b"before")

        with caplog.at_level(logging.INFO, logger="agentmesh.transport.nats"):
            own_server.stop()
            await eventually(lambda: transport.state is TransportState.RECONNECTING)
            assert not transport.is_connected
            own_server.start()  # same port, same JetStream store
            await eventually(lambda: transport.is_connected, timeout=10)
        assert any("disconnected" in r.getMessage() for r in caplog.records)
        assert any("reconnected" in r.getMessage() for r in caplog.records)

        await transport.publish("svc.ping", b"after")  # the subscription was replayed
        await recorder.wait_for(1)
        assert (await kv.get("agent")).revision == revision  # the data persisted
        assert (await stream.append("audit.e", b"after")).seq == 2
    finally:
        await transport.aclose()


async def _next(items: object, timeout: float) -> object:
    return await asyncio.wait_for(anext(items), timeout)  # type: ignore[call-overload]


async def test_a_reader_and_a_watch_resume_at_once_after_a_server_restart(
    own_server: NatsServerProcess,
) -> None:
    # The restarted server has lost the ordered consumers; nats-py alone would only
    # notice after missing heartbeats (about 15 s with nothing delivered).
    transport = NatsTransport(own_server.url, name="resumer", config=FAST_RECONNECT)
    try:
        await transport.connect()
        stream = await transport.stream("log", ["log.>"])
        kv = await transport.key_value("cards")
        await stream.append("log.e", b"one")
        await kv.put("alice", b"v1")
        reader = stream.read(start_seq=1)
        watch = kv.watch()
        assert (await _next(reader, 5)).data == b"one"  # type: ignore[attr-defined]
        assert (await _next(watch, 5)).value == b"v1"  # type: ignore[attr-defined]

        own_server.stop()
        own_server.start()
        await eventually(lambda: transport.is_connected, timeout=10)
        for _ in range(50):  # JetStream answers a moment after the server accepts clients
            try:
                await stream.append("log.e", b"two", msg_id="two")
                break
            except RequestTimeout:
                await asyncio.sleep(0.1)
        await kv.put("alice", b"v2")
        # Delivered within seconds, each once, in order.
        second = await _next(reader, 5)
        assert (second.seq, second.data) == (2, b"two")  # type: ignore[attr-defined]
        changed = await _next(watch, 5)
        assert changed.value == b"v2"  # type: ignore[attr-defined]
        await stream.append("log.e", b"three")
        assert (await _next(reader, 5)).seq == 3  # type: ignore[attr-defined]
        await reader.aclose()  # type: ignore[attr-defined]
        await watch.aclose()  # type: ignore[attr-defined]
    finally:
        await transport.aclose()


async def test_gives_up_with_connection_lost(own_server: NatsServerProcess) -> None:
    config = NatsConfig(reconnect_time_wait=0.05, max_reconnect_attempts=1)
    transport = NatsTransport(own_server.url, name="doomed", config=config)
    try:
        await transport.connect()
        kv = await transport.key_value("b")
        own_server.stop()
        await eventually(lambda: transport.state is TransportState.CLOSED, timeout=10)
        with pytest.raises(ConnectionLost):
            await transport.publish("x", b"y")
        with pytest.raises(ConnectionLost):
            await kv.get("k")
    finally:
        await transport.aclose()
    await transport.aclose()


async def test_connect_to_nothing_is_not_connected() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = NatsTransport(f"nats://127.0.0.1:{port}", config=NatsConfig(connect_timeout=0.2))
    with pytest.raises(NotConnected):
        await transport.connect(timeout=1.0)
    with pytest.raises(NotConnected):
        await transport.publish("x", b"y")
    await transport.aclose()


async def test_buffered_publish_while_reconnecting(own_server: NatsServerProcess) -> None:
    listener = NatsTransport(own_server.url, name="listener", config=FAST_RECONNECT)
    sender = NatsTransport(own_server.url, name="sender", config=FAST_RECONNECT)
    try:
        await listener.connect()
        await sender.connect()
        recorder = Recorder()
        await listener.subscribe("buffered", recorder)
        own_server.stop()
        await eventually(lambda: sender.state is TransportState.RECONNECTING)
        await sender.publish("buffered", b"sent while away")
        own_server.start()
        await eventually(lambda: sender.is_connected and listener.is_connected, timeout=10)
        await asyncio.sleep(0.2)  # the listener's SUB is replayed on its own reconnect
        await sender.publish("buffered", b"sent after")
        # "sent while away" arrives too if the listener is back before the sender
        # flushes its buffer; only the later one is guaranteed.
        await eventually(lambda: b"sent after" in recorder.payloads)
    finally:
        await sender.aclose()
        await listener.aclose()


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_SERVER_BIN", "/nonexistent/nats-server")
    server = NatsServerProcess()
    with pytest.raises(NatsServerNotFound, match="apt-get install -y nats-server"):
        server.start()
    server.close()
