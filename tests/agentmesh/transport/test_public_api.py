"""The public names of agentmesh.transport: sorted, importable, and typed as promised."""

from __future__ import annotations

import agentmesh.transport as transport_package


def test_all_is_sorted_and_unique() -> None:
    names = transport_package.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_every_public_name_resolves() -> None:
    for name in transport_package.__all__:
        assert getattr(transport_package, name) is not None


def test_nats_names_resolve_lazily() -> None:
    from agentmesh.transport.nats import NatsConfig, NatsTransport

    assert transport_package.NatsTransport is NatsTransport
    assert transport_package.NatsConfig is NatsConfig


def test_implementations_satisfy_the_protocol() -> None:
    from agentmesh.transport.nats import NatsTransport

    assert isinstance(transport_package.InMemoryTransport(), transport_package.Transport)
    assert isinstance(NatsTransport("nats://127.0.0.1:4222"), transport_package.Transport)
