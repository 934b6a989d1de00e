"""Pick a transport from a URL: none means the embedded default, ``nats://`` means NATS."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentmesh.transport.base import Transport
from agentmesh.transport.memory import InMemoryBus, InMemoryTransport
from agentmesh.transport.subjects import server_urls

if TYPE_CHECKING:
    from agentmesh.transport.nats import NatsConfig


def make_transport(
    url: str | None,
    *,
    name: str,
    bus: InMemoryBus | None = None,
    config: NatsConfig | None = None,
) -> Transport:
    """A new, unconnected transport: in-memory on ``bus`` when ``url`` is None, else NATS.

    ``config`` (NATS only) carries credentials for a secured mesh
    (:meth:`agentmesh.broker.credentials.BrokerCredentials.nats_config`).

    Raises:
        ValueError: the URL scheme is neither ``nats://`` nor ``tls://``.

    ``url`` may list several servers of one cluster, comma-separated: the transport
    connects to one and fails over to the others (and to those the cluster announces).
    """
    if url is None:
        return InMemoryTransport(bus, name=name)
    from agentmesh.transport.nats import NatsTransport  # optional heavy import

    return NatsTransport(server_urls(url), name=name, config=config)
