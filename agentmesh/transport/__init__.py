"""Transports: the embedded in-memory bus and NATS.

Both implement :class:`~agentmesh.transport.base.Transport`. The NATS classes are
imported lazily (``from agentmesh.transport import NatsTransport`` works), so
code that only uses the in-memory transport never loads nats-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentmesh.transport.base import (
    DurableConsumer,
    KeyValue,
    KVEntry,
    KVOperation,
    Message,
    MessageHandler,
    PublishAck,
    StoreLimits,
    Stream,
    StreamMessage,
    Subscription,
    Transport,
    TransportState,
)
from agentmesh.transport.memory import InMemoryBus, InMemoryTransport
from agentmesh.transport.subjects import subject_matches, validate_subject

if TYPE_CHECKING:
    from agentmesh.transport.nats import NatsConfig, NatsTransport


def __getattr__(name: str) -> object:
    if name in ("NatsConfig", "NatsTransport"):
        from agentmesh.transport import nats as nats_transport

        return getattr(nats_transport, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DurableConsumer",
    "InMemoryBus",
    "InMemoryTransport",
    "KVEntry",
    "KVOperation",
    "KeyValue",
    "Message",
    "MessageHandler",
    "NatsConfig",
    "NatsTransport",
    "PublishAck",
    "StoreLimits",
    "Stream",
    "StreamMessage",
    "Subscription",
    "Transport",
    "TransportState",
    "subject_matches",
    "validate_subject",
]
