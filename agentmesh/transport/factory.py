"""Pick a transport from a URL: none means the embedded default, ``nats://`` means NATS."""

from __future__ import annotations

from agentmesh.transport.base import Transport
from agentmesh.transport.memory import InMemoryBus, InMemoryTransport


def make_transport(url: str | None, *, name: str, bus: InMemoryBus | None = None) -> Transport:
    """A new, unconnected transport: in-memory on ``bus`` when ``url`` is None, else NATS.

    Raises:
        ValueError: the URL scheme is neither ``nats://`` nor ``tls://``.
    """
    if url is None:
        return InMemoryTransport(bus, name=name)
    if not url.startswith(("nats://", "tls://")):
        raise ValueError(f"unsupported transport URL {url!r}: use nats://HOST:PORT")
    from agentmesh.transport.nats import NatsTransport  # optional heavy import

    return NatsTransport(url, name=name)
