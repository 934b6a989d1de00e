"""Run one node as a process: join, handshake with peers, exchange requests, leave.

Used by ``agentmesh node run``; events are printed as JSON lines so that scripts
and the cross-process tests can follow what the node does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TextIO

from agentmesh.directory.directory import DEFAULT_TTL_MS
from agentmesh.directory.membership import DirectoryMembership
from agentmesh.errors import AgentMeshError, NoResponders, RequestTimeout
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.policy.runtime import GovernanceOptions, NodeGovernance
from agentmesh.transport.base import Transport
from iatp.identity import AgentIdentity
from registry.card import parse_capability

ECHO_TYPE = "mesh.echo"


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What the node does once it has joined."""

    peers: tuple[str, ...] = ()
    requests_per_peer: int = 0
    request_interval: float = 0.0
    peer_wait: float = 15.0
    duration: float | None = None
    capabilities: tuple[str, ...] = field(default=())
    display_name: str | None = None
    card_ttl_ms: int = DEFAULT_TTL_MS


class EventPrinter:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, event: str, **fields: object) -> None:
        self._stream.write(json.dumps({"event": event, **fields}, sort_keys=True) + "\n")
        self._stream.flush()


async def _echo(message: InboundMessage) -> bytes:
    return message.body


async def _handshake_when_ready(node: MeshNode, peer: str, wait: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            await node.handshake(peer, timeout=2.0)
            return
        except (NoResponders, RequestTimeout):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def run_node(
    identity: AgentIdentity,
    transport: Transport,
    plan: RunPlan,
    *,
    mesh: str = "agentmesh",
    audit_log: str | None = None,
    governance: GovernanceOptions | None = None,
    emit: Callable[..., None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until ``plan.duration`` elapses or ``stop`` is set (SIGTERM/SIGINT in the CLI).

    Returns the process exit code: 0 when every planned request got its reply.
    ``audit_log`` is a hash-chained log with signed checkpoints; ``governance``
    adds a policy, quarantine authorities and live reload (see NodeGovernance).
    """
    say = emit or EventPrinter(sys.stdout)
    stop = stop or asyncio.Event()
    options = replace(governance or GovernanceOptions(), audit_log=audit_log)
    governed = NodeGovernance(identity, transport, options, mesh=mesh, emit=say)
    audit = governed.audit
    failures = 0
    config = NodeConfig(mesh=mesh, capabilities=plan.capabilities)
    try:
        membership = DirectoryMembership(
            identity,
            transport,
            mesh=mesh,
            capabilities=tuple(parse_capability(spec) for spec in plan.capabilities),
            display_name=plan.display_name,
            ttl_ms=plan.card_ttl_ms,
            authorities=options.authorities,
            shared_revocations=lambda: governed.revocations,
            audit=audit,
            emit=say,
        )
        async with (
            governed,
            MeshNode(identity, transport, config=config, audit=audit) as node,
            membership,
        ):
            governed.install(node)
            membership.install(node)
            node.handle(ECHO_TYPE, _echo)
            say("ready", did=node.did, inbox=node.addressing.inbox(node.did))
            for peer in plan.peers:
                try:
                    await _handshake_when_ready(node, peer, plan.peer_wait)
                    say("handshake", peer=peer, ok=True)
                except AgentMeshError as exc:
                    failures += 1
                    say("handshake", peer=peer, ok=False, error=exc.code, detail=str(exc))
            for index in range(plan.requests_per_peer):
                for peer in plan.peers:
                    body = f"{index}:{node.did[-6:]}".encode()
                    try:
                        reply = await node.request(peer, ECHO_TYPE, body)
                        ok = reply.body == body
                    except AgentMeshError as exc:
                        ok = False
                        say("request_failed", peer=peer, error=exc.code, detail=str(exc))
                    failures += 0 if ok else 1
                if plan.request_interval:
                    await asyncio.sleep(plan.request_interval)
            say(
                "requests_done",
                peers=len(plan.peers),
                per_peer=plan.requests_per_peer,
                failures=failures,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=plan.duration)
            say("stats", **node.counters.snapshot())
    finally:
        if governed.chain is not None:
            governed.chain.close()
    say("left", did=identity.did)
    return 0 if failures == 0 else 1


def install_stop_signals(
    stop: asyncio.Event, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    loop = asyncio.get_running_loop()
    for number in signals:
        loop.add_signal_handler(number, stop.set)
