"""A running node's place in the directory: its card, kept live, and revocations enforced.

Used by ``agentmesh node run``: on entry it follows the revocation list (or reuses
one already running, e.g. the kill switch's), loads the directory, registers the
node's signed card and renews it on a heartbeat; :meth:`install` adds the
:class:`RevocationInterceptor`; on exit it deregisters (best effort) and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Container
from types import TracebackType

from agentmesh.audit import AuditSink
from agentmesh.directory.admission import AdmissionInterceptor
from agentmesh.directory.directory import DEFAULT_TTL_MS, Directory
from agentmesh.directory.events import DirectoryEventKind, EventStream
from agentmesh.directory.revocations import RevocationChange, RevocationInterceptor, RevocationList
from agentmesh.errors import TransportError
from agentmesh.node.interceptors import Stage
from agentmesh.node.node import MeshNode
from agentmesh.transport.base import Transport
from iatp.clock import Clock, SystemClock
from iatp.identity import AgentIdentity
from registry.card import Capability
from registry.revocation import RevocationAuthorities

Emit = Callable[..., None]
_ANNOUNCED = frozenset(
    {
        DirectoryEventKind.REGISTERED,
        DirectoryEventKind.REMOVED,
        DirectoryEventKind.EXPIRED,
        DirectoryEventKind.DRIFT,
        DirectoryEventKind.APPROVED,
        DirectoryEventKind.ROTATED,
        DirectoryEventKind.REJECTED,
    }
)


def _silent(event: str, **fields: object) -> None:
    return None


class DirectoryMembership:
    """Register ``identity`` in ``mesh``'s directory for as long as the context is open.

    Args:
        identity: the node's identity (signs its card).
        transport: a connected transport.
        mesh: mesh name.
        capabilities: what the card offers.
        display_name: the card's name (default: ``agent-`` and the DID's tail).
        ttl_ms: card lifetime; renewed every third of it.
        authorities: mesh authority DIDs (used only when no shared list is running).
        shared_revocations: returns an already running list to reuse (not closed
            here), e.g. the kill switch's; called on entry.
        audit: where the directory and list audit.
        pin_signer: see :class:`~agentmesh.directory.directory.Directory` (the
            ``authorities`` are its pin authorities).
        emit: JSON-lines event printer: ``directory`` (loaded), ``registered`` (own
            card), ``card`` (another agent registered, removed, expired, drifted,
            ...), ``revocation`` (a status changed).
    """

    def __init__(
        self,
        identity: AgentIdentity,
        transport: Transport,
        *,
        mesh: str = "agentmesh",
        capabilities: tuple[Capability, ...] = (),
        display_name: str | None = None,
        ttl_ms: int = DEFAULT_TTL_MS,
        authorities: tuple[str, ...] = (),
        shared_revocations: Callable[[], RevocationList | None] | None = None,
        audit: AuditSink | None = None,
        emit: Emit | None = None,
        clock: Clock | None = None,
        pin_signer: AgentIdentity | None = None,
    ) -> None:
        self.identity = identity
        self.clock: Clock = clock or SystemClock()
        self._emit = emit or _silent
        self._shared = shared_revocations
        self._owns_revocations = True
        self.revocations = RevocationList(
            transport,
            mesh=mesh,
            authorities=RevocationAuthorities(mesh=frozenset(authorities)),
            audit=audit,
            node=identity.did,
            clock=self.clock,
        )
        self.directory = Directory(
            transport,
            mesh=mesh,
            audit=audit,
            node=identity.did,
            clock=self.clock,
            pin_signer=pin_signer,
            pin_authorities=frozenset(authorities),
        )
        self._capabilities = capabilities
        self._display_name = display_name or f"agent-{identity.did[-8:]}"
        self._ttl_ms = ttl_ms
        self._follower: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DirectoryMembership:
        shared = self._shared() if self._shared is not None else None
        if shared is not None:
            self.revocations, self._owns_revocations = shared, False
        self.directory.use_revocations(self.revocations)
        try:
            if self._owns_revocations:
                await self.revocations.start()
            self.revocations.add_listener(self._on_revocation)
            await self.directory.start()
            self._emit(
                "directory",
                cards=len(self.directory.cards()),
                dids=[card.did for card in self.directory.cards()[:50]],
                blocked=sorted(
                    d for d in self.revocations.listed() if self.revocations.is_blocked(d)
                ),
            )
            self._follower = asyncio.create_task(self._follow(self.directory.watch()))
            card = await self.directory.register(
                self.identity,
                display_name=self._display_name,
                capabilities=self._capabilities,
                ttl_ms=self._ttl_ms,
            )
            self.directory.start_heartbeat(self.identity)
        except BaseException:
            await self._close()
            raise
        self._emit(
            "registered",
            did=card.did,
            capabilities=[f"{c.name}@{c.version}" for c in card.capabilities],
            expires_at_ms=card.expires_at_ms,
        )
        return self

    async def _follow(self, events: EventStream) -> None:
        async for event in events:
            if event.kind in _ANNOUNCED:
                self._emit("card", change=event.kind.value, did=event.did, detail=event.detail)

    def install(self, node: MeshNode, *, admitted: Container[str] | None = None) -> None:
        """Refuse traffic from, to and handshakes with revoked or quarantined agents.

        With ``admitted`` (admission on), also refuse senders that have no live card
        in the directory and are not in ``admitted`` (``unknown_agent``).
        """
        node.add_interceptor(RevocationInterceptor(self.revocations), stage=Stage.REVOCATION)
        if admitted is not None:
            node.add_interceptor(
                AdmissionInterceptor(self.directory, admitted), stage=Stage.REVOCATION
            )

    def _on_revocation(self, change: RevocationChange) -> None:
        self._emit(
            "revocation",
            did=change.did,
            status=change.status.value if change.status else None,
            kind=change.entry.kind.value,
            issuer=change.entry.issuer,
            issued_at_ms=change.entry.issued_at_ms,
            seen_at_ms=self.clock.now_ms(),
            me=change.did == self.identity.did,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(TransportError):
            await self.directory.deregister(self.identity, timeout=1.0)
        await self._close()

    async def _close(self) -> None:
        await self.directory.aclose()
        if self._follower is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self._owns_revocations:
            await self.revocations.aclose()
