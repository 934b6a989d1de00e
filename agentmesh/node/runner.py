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
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TextIO

from agentmesh.directory.admission import UNKNOWN_AGENT
from agentmesh.directory.directory import DEFAULT_TTL_MS
from agentmesh.directory.membership import DirectoryMembership
from agentmesh.errors import AgentMeshError, HandshakeRefused, NoResponders, RequestTimeout
from agentmesh.federation.runtime import NodeFederation
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage, Stage
from agentmesh.node.node import MeshNode
from agentmesh.node.partitions import Partition
from agentmesh.policy.runtime import GovernanceOptions, NodeGovernance
from agentmesh.resilience.cascade import QuarantineCallback
from agentmesh.resilience.document import ResilienceDocument
from agentmesh.resilience.runtime import install_resilience
from agentmesh.transport.base import Transport, TransportState
from agentmesh.trustnet.service import MeshTrust
from iatp.clock import SystemClock
from iatp.identity import AgentIdentity
from registry.card import parse_capability
from trust.config import TrustConfig
from trust.engine import TrustEngine

if TYPE_CHECKING:
    from agentmesh.observability.runtime import ObservabilityOptions

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
    broker: str = "open"
    admission: str = "registered"
    admitted: tuple[str, ...] = ()
    partition: Partition | None = None  # member I of P of this identity (docs/scaleout.md)


@dataclass(frozen=True, slots=True)
class FederationOptions:
    """``node run --organization DID --membership FILE``: take part in the org's federation."""

    organization: str
    membership: str | None = None
    org_trust: Mapping[str, float] = field(default_factory=dict)


class AnyOf:
    """A container that holds what any of its parts holds (admission: named DIDs or members)."""

    def __init__(self, *parts: Container[str]) -> None:
        self._parts = parts

    def __contains__(self, item: object) -> bool:
        return any(item in part for part in self._parts)


@dataclass(frozen=True, slots=True)
class TrustOptions:
    """``node run --trust``: publish receipts, fold the mesh's, rank rings by trust."""

    pre_trusted: tuple[str, ...] = ()
    recompute_interval: float = 2.0
    # Receipt-id memory is bounded by this horizon (None: remember every id, unbounded).
    receipt_horizon_ms: int | None = 86_400_000


class EventPrinter:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, event: str, **fields: object) -> None:
        self._stream.write(json.dumps({"event": event, **fields}, sort_keys=True) + "\n")
        self._stream.flush()


async def _echo(message: InboundMessage) -> bytes:
    return message.body


def _admitted(
    plan: RunPlan, options: GovernanceOptions, trust: TrustOptions | None
) -> frozenset[str] | None:
    """Who is served besides agents with a card (None: anyone, ``--admission open``)."""
    if plan.admission == "open":
        return None
    named = (*plan.admitted, *plan.peers, *options.authorities)
    return frozenset((*named, *(trust.pre_trusted if trust is not None else ())))


async def _handshake_when_ready(node: MeshNode, peer: str, wait: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            await node.handshake(peer, timeout=2.0)
            return
        except (NoResponders, RequestTimeout, HandshakeRefused) as exc:
            # The peer may not have seen our card yet (admission): try again shortly.
            if isinstance(exc, HandshakeRefused) and exc.remote_code != UNKNOWN_AGENT:
                raise
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
    trust: TrustOptions | None = None,
    federation: FederationOptions | None = None,
    observability: ObservabilityOptions | None = None,
    status_interval: float | None = None,
    resilience: ResilienceDocument | None = None,
    emit: Callable[..., None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until ``plan.duration`` elapses or ``stop`` is set (SIGTERM/SIGINT in the CLI).

    Returns the process exit code: 0 when every planned request got its reply.
    ``audit_log`` is a hash-chained log with signed checkpoints; ``governance``
    adds a policy, quarantine authorities and live reload (see NodeGovernance).
    ``trust`` turns this node's handled signed messages into receipts on the mesh's
    receipt stream, folds everyone's receipts into a ``TrustEngine``, and makes that
    engine a ring source of the policy's ring enforcer. ``observability`` adds
    OpenTelemetry traces and a Prometheus metrics endpoint (the ``observability`` extra).
    ``status_interval`` broadcasts a signed status report (counters, recent refusals)
    on the ``ops.status`` topic every that many seconds, for the dashboard.
    ``resilience`` adds circuit breakers, cascade detection and SLOs (a node of a
    quarantine authority answers ``cascade.action: quarantine`` with a signed order).
    """
    say = emit or EventPrinter(sys.stdout)
    # "open": no broker credentials (development only); else the identity kind its JWT names.
    say("broker", mode=plan.broker, admission=plan.admission)
    stop = stop or asyncio.Event()
    options = replace(governance or GovernanceOptions(), audit_log=audit_log)
    engine = (
        TrustEngine(
            pre_trusted=trust.pre_trusted,
            clock=SystemClock(),
            config=TrustConfig(receipt_horizon_ms=trust.receipt_horizon_ms),
        )
        if trust is not None
        else None
    )
    fed = (
        NodeFederation(
            transport,
            identity,
            mesh=mesh,
            organization=federation.organization,
            membership=federation.membership,
            local_score=engine.score if engine is not None else None,
            org_trust=federation.org_trust,
        )
        if federation is not None
        else None
    )
    governed = NodeGovernance(
        identity,
        transport,
        options,
        mesh=mesh,
        emit=say,
        ring_sources=(
            *((engine,) if engine is not None else ()),
            *((fed.rings,) if fed is not None else ()),
        ),
    )
    audit = governed.audit
    refusals = None
    if status_interval is not None:
        from agentmesh.observability import status as node_status

        refusals = node_status.RecentRefusals()
        audit = refusals.tap(audit)
    if fed is not None:
        fed.view.audit = audit
    failures = 0
    config = NodeConfig(mesh=mesh, capabilities=plan.capabilities, partition=plan.partition)
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
            # A node of the mesh authority stores signed first-seen pins for everyone.
            pin_signer=identity if identity.did in options.authorities else None,
        )
        mesh_trust = (
            MeshTrust(
                transport,
                identity,
                mesh=mesh,
                engine=engine,
                audit=audit,
                recompute_interval=trust.recompute_interval,
            )
            if trust is not None and engine is not None
            else None
        )
        async with contextlib.AsyncExitStack() as stack:
            observed = None
            if observability is not None and observability.enabled:
                from agentmesh.observability.runtime import NodeObservability

                observed = await stack.enter_async_context(
                    NodeObservability(observability, emit=say)
                )
            await stack.enter_async_context(governed)
            await stack.enter_async_context(membership)
            if mesh_trust is not None:
                await stack.enter_async_context(mesh_trust)
            node = MeshNode(identity, transport, config=config, audit=audit)
            # Every check and the handler are in place before the node subscribes:
            # no message may arrive in a window without revocation or policy checks.
            governed.install(node)
            guards = (
                install_resilience(
                    node, resilience, quarantine=_cascade_quarantine(identity, governed, say)
                )
                if resilience is not None
                else None
            )
            admitted: Container[str] | None = _admitted(plan, options, trust)
            if fed is not None:
                fed.directory = membership.directory
                await stack.enter_async_context(fed)
                fed.install(node)  # before admission: it verifies partners' credentials
                if admitted is not None:
                    admitted = AnyOf(admitted, fed.view)
                say(
                    "federation",
                    organization=fed.organization,
                    partners=[p.theirs.org for p in fed.view.partnerships()],
                    membership=fed.membership is not None,
                )
            membership.install(node, admitted=admitted)
            if mesh_trust is not None:
                node.add_interceptor(mesh_trust.interceptor, stage=Stage.TRUST)
                say("trust", pre_trusted=len(trust.pre_trusted) if trust else 0)
            node.handle(ECHO_TYPE, _echo)
            await stack.enter_async_context(node)
            if observed is not None:
                observed.attach(node, governance=governed, trust=mesh_trust, resilience=guards)
            if refusals is not None and status_interval is not None:
                await stack.enter_async_context(
                    node_status.StatusReporter(
                        node,
                        interval=status_interval,
                        refusals=refusals,
                        name=plan.display_name,
                        slo_snapshot=(
                            guards.slos.snapshot
                            if guards is not None and guards.slos is not None
                            else None
                        ),
                    )
                )
                say("status", topic=node_status.STATUS_TOPIC, interval=status_interval)
            say(
                "ready",
                did=node.did,
                inbox=node.addressing.inbox(node.did),
                partition=None if plan.partition is None else str(plan.partition),
            )
            # SIGTERM (``stop``) ends the talking at once, then the node leaves as usual.
            for peer in plan.peers:
                if stop.is_set():
                    break
                try:
                    await _handshake_when_ready(node, peer, plan.peer_wait)
                    say("handshake", peer=peer, ok=True)
                except AgentMeshError as exc:
                    failures += 1
                    say("handshake", peer=peer, ok=False, error=exc.code, detail=str(exc))
            for index in range(plan.requests_per_peer):
                if stop.is_set():
                    break
                for peer in plan.peers:
                    if stop.is_set():
                        break
                    body = f"{index}:{node.did[-6:]}".encode()
                    try:
                        reply = await node.request(peer, ECHO_TYPE, body)
                        ok = reply.body == body
                    except AgentMeshError as exc:
                        ok = False
                        say("request_failed", peer=peer, error=exc.code, detail=str(exc))
                    failures += 0 if ok else 1
                if plan.request_interval:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=plan.request_interval)
            say(
                "requests_done",
                peers=len(plan.peers),
                per_peer=plan.requests_per_peer,
                failures=failures,
            )
            watcher = asyncio.create_task(_stop_when_closed(transport, stop, say))
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=plan.duration)
            finally:
                watcher.cancel()
            if transport.state is TransportState.CLOSED:
                failures += 1
            say("stats", **node.counters.snapshot())
            if mesh_trust is not None:
                await _report_trust(mesh_trust, plan.peers, say)
    finally:
        if governed.chain is not None:
            governed.chain.close()
    say("left", did=identity.did)
    return 0 if failures == 0 else 1


def _cascade_quarantine(
    identity: AgentIdentity, governed: NodeGovernance, say: Callable[..., None]
) -> QuarantineCallback | None:
    """A quarantine authority's node quarantines a cascade's root with a signed order."""
    if identity.did not in governed.options.authorities:
        return None

    async def quarantine(did: str, reason: str) -> None:
        switch = governed.kill_switch
        if switch is None:
            return
        await switch.quarantine(identity, did, reason)
        say("cascade_quarantine", did=did, reason=reason)

    return quarantine


async def _report_trust(
    mesh_trust: MeshTrust, peers: Sequence[str], say: Callable[..., None]
) -> None:
    """Publish queued receipts, recompute, and print this node's view of its peers."""
    with contextlib.suppress(TimeoutError):
        await mesh_trust.interceptor.flush(timeout=2.0)
    engine = mesh_trust.engine
    engine.recompute()
    say(
        "trust_view",
        folded=mesh_trust.ledger.folded,
        peers={peer: {"score": engine.score(peer), "ring": engine.ring(peer)} for peer in peers},
    )


async def _stop_when_closed(
    transport: Transport, stop: asyncio.Event, say: Callable[..., None]
) -> None:
    """Leave when the transport is gone for good (the broker revoked us, or gave up)."""
    # The transport protocol has no close event; a poll is enough to leave in time.
    while transport.state is not TransportState.CLOSED:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    try:
        await transport.flush(timeout=1.0)
        code, detail = "connection_closed", "transport closed"
    except AgentMeshError as exc:
        code, detail = exc.code, str(exc)
    say("connection_lost", error=code, detail=detail)
    stop.set()


def install_stop_signals(
    stop: asyncio.Event, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    loop = asyncio.get_running_loop()
    for number in signals:
        loop.add_signal_handler(number, stop.set)
