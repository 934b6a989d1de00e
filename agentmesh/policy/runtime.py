"""Everything governance needs around one running node, as one async context manager.

Used by ``agentmesh node run``::

    async with NodeGovernance(identity, transport, options) as governance:
        async with MeshNode(identity, transport, audit=governance.audit) as node:
            governance.install(node)
            ...

It provides: the chained audit log (allowed tool calls' records group-committed)
with signed checkpoints published on the mesh (every ``checkpoint_every``
records, every ``checkpoint_interval`` seconds when the chain moved, and at
close); the revocation list and kill switch with the quarantine interceptor;
the policy (engine, rings, limits, budgets) with its interceptor, reloaded on
:meth:`NodeGovernance.reload` (``SIGHUP`` in the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from agentmesh.audit import AuditEvent, AuditSink, MemoryAuditSink
from agentmesh.audit.chain import ChainedAuditLog, ChainHead, GroupCommit
from agentmesh.audit.checkpoint import CheckpointSigner, checkpoint_path
from agentmesh.audit.witness import CheckpointPublisher
from agentmesh.directory.revocations import RevocationList
from agentmesh.errors import TransportError
from agentmesh.node.interceptors import Stage
from agentmesh.node.node import MeshNode
from agentmesh.policy.errors import PolicyLoadError
from agentmesh.policy.governance import Governance
from agentmesh.policy.interceptor import PolicyInterceptor
from agentmesh.policy.killswitch import KillSwitch, QuarantineInterceptor
from agentmesh.policy.rings import RingSource
from agentmesh.transport.base import Transport
from iatp.clock import Clock, SystemClock
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities, RevocationEntry

logger = logging.getLogger(__name__)

Emit = Callable[..., None]


DEFAULT_GROUP_COMMIT = GroupCommit()


@dataclass(frozen=True, slots=True)
class GovernanceOptions:
    """What ``agentmesh node run`` was told about governance."""

    policy: str | None = None
    authorities: tuple[str, ...] = ()
    audit_log: str | None = None
    checkpoint_every: int = 1000
    checkpoint_interval: float = 5.0
    reload_on_sighup: bool = False
    # Allowed tool calls' records are group-committed (docs/policy.md, "Audit log",
    # states what a crash can lose); None writes every record before the call goes on.
    audit_group_commit: GroupCommit | None = DEFAULT_GROUP_COMMIT


def _ignore(event: str, **fields: object) -> None:
    return None


class NodeGovernance:
    """Audit chain, kill switch and policy around one node (see the module docstring)."""

    def __init__(
        self,
        identity: AgentIdentity,
        transport: Transport,
        options: GovernanceOptions,
        *,
        mesh: str = "agentmesh",
        ring_sources: tuple[RingSource, ...] = (),
        clock: Clock | None = None,
        emit: Emit | None = None,
    ) -> None:
        self.identity = identity
        self.transport = transport
        self.options = options
        self.mesh = mesh
        self.clock: Clock = clock or SystemClock()
        self.emit = emit or _ignore
        self.chain: ChainedAuditLog | None = None
        self.signer: CheckpointSigner | None = None
        self.audit: AuditSink = MemoryAuditSink()
        if options.audit_log:
            self.signer = CheckpointSigner(
                identity, checkpoint_path(options.audit_log), clock=self.clock
            )
            self.chain = ChainedAuditLog(
                options.audit_log,
                on_head=self._sign,
                checkpoint_every=options.checkpoint_every,
                group_commit=options.audit_group_commit,
            )
            self.audit = self.chain
        self.governance: Governance | None = None
        if options.policy:
            self.governance = Governance.from_file(
                options.policy,
                ring_sources=ring_sources,
                authorities=options.authorities,
                audit=self.audit,
                node=identity.did,
                clock=self.clock,
            )
        self.revocations: RevocationList | None = None
        self.kill_switch: KillSwitch | None = None
        self.publisher: CheckpointPublisher | None = None
        self._owns_connection = False
        self._ticker: asyncio.Task[None] | None = None
        self._checkpointed_seq = 0

    async def __aenter__(self) -> NodeGovernance:
        if not self.transport.is_connected:
            await self.transport.connect()
            self._owns_connection = True
        try:
            if self.options.authorities:
                await self._start_kill_switch()
            if self.signer is not None:
                await self._start_publisher()
            if self.options.reload_on_sighup and self.governance is not None:
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        except BaseException:
            await self._close()
            raise
        return self

    async def _start_kill_switch(self) -> None:
        self.revocations = RevocationList(
            self.transport,
            mesh=self.mesh,
            authorities=RevocationAuthorities(mesh=frozenset(self.options.authorities)),
            audit=self.audit,
            node=self.identity.did,
            clock=self.clock,
        )
        await self.revocations.start()
        self.kill_switch = KillSwitch(
            self.transport,
            self.revocations,
            mesh=self.mesh,
            node=self.identity.did,
            audit=self.audit,
            clock=self.clock,
        )
        self.kill_switch.on_quarantine(self._announce("quarantined"))
        self.kill_switch.on_release(self._announce("released"))
        await self.kill_switch.start()
        if self.governance is not None:
            self.governance.governor.blocked = self.kill_switch.is_blocked

    async def _start_publisher(self) -> None:
        assert self.signer is not None
        publisher = CheckpointPublisher(self.transport, self.signer, mesh=self.mesh)
        try:
            await publisher.start()
        except TransportError as exc:  # e.g. a server without JetStream: keep them local
            logger.warning("audit checkpoints stay local: %s", exc)
            self.emit("checkpoints_local", error=exc.code, detail=str(exc))
        else:
            self.publisher = publisher
        self._ticker = asyncio.create_task(self._tick(), name="audit-checkpoints")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    def install(self, node: MeshNode) -> None:
        """Add the quarantine interceptor and (with a policy) the policy interceptor."""
        if self.kill_switch is not None:
            node.add_interceptor(
                QuarantineInterceptor(self.kill_switch, self.identity.did), stage=Stage.REVOCATION
            )
        if self.governance is not None:
            node.add_interceptor(PolicyInterceptor(self.governance.governor), stage=Stage.POLICY)

    def reload(self) -> bool:
        """Reload the policy file; on a load error keep the current policy. Audited."""
        if self.governance is None or not self.options.policy:
            return False
        try:
            policy = self.governance.reload_file(self.options.policy)
        except PolicyLoadError as exc:
            self._audit("policy_reload_failed", str(exc))
            self.emit("policy_reload", ok=False, error=exc.code, detail=str(exc))
            return False
        self._audit("policy_reloaded", policy.label)
        self.emit("policy_reload", ok=True, policy=policy.label)
        return True

    def checkpoint(self) -> None:
        """Commit pending records, then sign the head if the chain moved since the last one."""
        if self.chain is None or self.signer is None:
            return
        self.chain.flush()
        head = self.chain.head
        if head.seq > self._checkpointed_seq:
            self._sign(head)

    def _sign(self, head: ChainHead) -> None:
        assert self.signer is not None
        self._checkpointed_seq = max(self._checkpointed_seq, head.seq)
        self.signer(head)

    def _announce(self, what: str) -> Callable[[str, RevocationEntry], None]:
        def announce(did: str, order: RevocationEntry) -> None:
            self.emit(what, did=did, issuer=order.issuer, reason=order.reason)

        return announce

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.options.checkpoint_interval)
            self.checkpoint()

    def _audit(self, code: str, detail: str) -> None:
        self.audit.append(
            AuditEvent(
                at_ms=self.clock.now_ms(),
                node=self.identity.did,
                kind="policy",
                code=code,
                detail=detail[:300],
            )
        )

    async def _close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.checkpoint()
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.drain(timeout=3.0)
            await self.publisher.aclose()
        if self.kill_switch is not None:
            await self.kill_switch.aclose()
        if self.revocations is not None:
            await self.revocations.aclose()
        if self.chain is not None:
            self.chain.close()
        if self.signer is not None:
            self.signer.close()
        if self._owns_connection:
            await self.transport.aclose()


__all__ = ["GovernanceOptions", "NodeGovernance"]
