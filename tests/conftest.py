"""Shared fixtures: a real nats-server and a fresh transport of each kind.

Fixtures:
    nats_server: a session-wide ``nats-server`` (JetStream on) on a random loopback
        port; ``.url`` is its client URL. Fails, with install instructions, when the
        binary is missing.
    transport_factory: makes connected transports of one kind, parametrized over
        ``memory`` (all share one InMemoryBus) and ``nats`` (all connect to
        ``nats_server``); closes them after the test.
    transport: one connected transport from ``transport_factory``.
    uid: a token unique to the test, for subjects, buckets and streams (the NATS
        server is shared by the whole session).
    secure_mesh: a secured mesh per test module (``agentmesh mesh init`` output, a
        real nats-server running its config, stores provisioned by the authority).
    sm: that mesh; transports a test opens through it are closed after the test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentmesh.transport import InMemoryBus, InMemoryTransport, Transport
from tests.agentmesh.broker.securemesh import SecureMesh
from tests.natsserver import NatsServerNotFound, NatsServerProcess


def start_or_fail(server: NatsServerProcess) -> NatsServerProcess:
    """Start ``server``; a missing binary fails the test (with install hints), never skips."""
    try:
        return server.start()
    except NatsServerNotFound as error:
        hint = str(error)
    server.close()
    pytest.fail(hint, pytrace=False)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServerProcess]:
    server = start_or_fail(NatsServerProcess())
    try:
        yield server
    finally:
        server.close()


class TransportFactory:
    """Connected transports of one kind that can see each other."""

    def __init__(self, kind: str, nats_url: str | None) -> None:
        self.kind = kind
        self.bus = InMemoryBus()
        self._nats_url = nats_url
        self._made: list[Transport] = []

    def build(self, name: str = "test") -> Transport:
        """A new transport, not connected yet (closed after the test)."""
        transport: Transport
        if self.kind == "memory":
            transport = InMemoryTransport(self.bus, name=name)
        else:
            from agentmesh.transport.nats import NatsTransport

            assert self._nats_url is not None
            transport = NatsTransport(self._nats_url, name=name)
        self._made.append(transport)
        return transport

    async def new(self, name: str = "test") -> Transport:
        """A new, connected transport (closed after the test)."""
        transport = self.build(name)
        await transport.connect(timeout=5.0)
        return transport

    async def aclose(self) -> None:
        for transport in reversed(self._made):
            await transport.aclose()


@pytest.fixture(params=["memory", pytest.param("nats", marks=pytest.mark.nats)])
async def transport_factory(request: pytest.FixtureRequest) -> AsyncIterator[TransportFactory]:
    url = None
    if request.param == "nats":
        url = request.getfixturevalue("nats_server").url
    factory = TransportFactory(request.param, url)
    try:
        yield factory
    finally:
        await factory.aclose()


@pytest.fixture
async def transport(transport_factory: TransportFactory) -> Transport:
    return await transport_factory.new("main")


@pytest.fixture
def uid() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def secure_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureMesh]:
    directory: Path = tmp_path_factory.mktemp("secure-mesh")
    mesh = SecureMesh(directory)
    try:
        mesh.start()
    except NatsServerNotFound as error:
        mesh.close()
        pytest.fail(str(error), pytrace=False)
    try:
        yield mesh
    finally:
        mesh.close()


@pytest.fixture
async def sm(secure_mesh: SecureMesh) -> AsyncIterator[SecureMesh]:
    try:
        yield secure_mesh
    finally:
        await secure_mesh.aclose_transports()
