"""Opening a store on a cluster waits out JetStream starting for the account (503).

A cluster that just started answers "JetStream not enabled for account" until the
account's JetStream is up on every server; ``mesh provision`` right after start-up
failed that way once under load. The retry is bounded by ``open_timeout``, only on
a cluster, and a one-server 503 (JetStream really off) fails at once.
"""

from __future__ import annotations

import nats.js.errors
import pytest

from agentmesh.errors import StreamError
from agentmesh.transport.nats import NatsConfig, NatsTransport


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise nats.js.errors.ServiceUnavailableError(
                code=503, err_code=10039, description="JetStream not enabled for account"
            )
        return "opened"


def transport(monkeypatch: pytest.MonkeyPatch, servers: int, open_timeout: float) -> NatsTransport:
    made = NatsTransport("nats://127.0.0.1:1", config=NatsConfig(open_timeout=open_timeout))
    monkeypatch.setattr(NatsTransport, "cluster_size", property(lambda self: servers))
    return made


async def test_a_cluster_starting_jetstream_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    opener = Flaky(failures=3)
    assert await transport(monkeypatch, 3, 10.0)._open("bucket 'x'", opener) == "opened"
    assert opener.calls == 4


async def test_the_wait_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    opener = Flaky(failures=1_000)
    with pytest.raises(StreamError, match="JetStream not enabled"):
        await transport(monkeypatch, 3, 0.6)._open("bucket 'x'", opener)
    assert 2 <= opener.calls <= 5


async def test_one_server_without_jetstream_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    opener = Flaky(failures=1)
    with pytest.raises(StreamError):
        await transport(monkeypatch, 1, 10.0)._open("bucket 'x'", opener)
    assert opener.calls == 1
