"""Node configuration: frozen, with defaults that are safe for production."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from agentmesh.node.partitions import Partition
from iatp.envelope import EnvelopeLimits
from iatp.handshake import HandshakeLimits
from iatp.session_table import SessionLimits


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. Every I/O call of the node also takes ``timeout=`` to override."""

    request: float = 5.0
    handshake: float = 5.0
    connect: float = 5.0
    drain: float = 2.0


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """How a :class:`~agentmesh.node.node.MeshNode` behaves.

    Attributes:
        mesh: subject namespace; nodes of one mesh share it.
        limits: envelope limits applied to every inbound frame.
        handshake_limits: freshness of handshake messages.
        session_limits: how long handshake sessions live (age, messages), when the
            sender rekeys, and how long a superseded session still opens frames
            (iatp.md 15.1).
        message_lifetime_ms: lifetime of envelopes this node sends.
        verify_workers: threads verifying signatures (PyNaCl releases the GIL).
        inline_verify_below: batches smaller than this are verified on the event
            loop (a thread hop costs more than one verification).
        max_inflight: frames queued for verification before backpressure.
        max_concurrent_handlers: handler tasks running at once.
        replay_capacity: hard cap of the replay cache (fail closed beyond it).
        max_pending_handshakes: responder sessions waiting for CONFIRM.
        restart_fence_ms: envelopes issued before the node's start plus this many
            milliseconds are refused (``issued_before_start``): the in-memory replay
            cache of a previous run is gone, so a captured envelope replayed after a
            restart must not run twice. A positive margin also covers senders whose
            clock runs ahead (at the cost of refusing their first messages); ``None``
            turns the fence off (iatp.md 7.4).
        partition: this process is one member of several serving this identity
            (scale-out, docs/scaleout.md): it admits only the frames of its
            partition and shares the plain subjects with the other members.
    """

    mesh: str = "agentmesh"
    limits: EnvelopeLimits = field(default_factory=EnvelopeLimits)
    handshake_limits: HandshakeLimits = field(default_factory=HandshakeLimits)
    session_limits: SessionLimits = field(default_factory=SessionLimits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    message_lifetime_ms: int = 60_000
    verify_workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    inline_verify_below: int = 2
    max_inflight: int = 4096
    max_concurrent_handlers: int = 256
    replay_capacity: int = 1_000_000
    max_pending_handshakes: int = 1024
    restart_fence_ms: int | None = 0
    capabilities: tuple[str, ...] = ()
    partition: Partition | None = None
