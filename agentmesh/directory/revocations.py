"""The mesh's revocation and quarantine list, and the interceptor that enforces it.

Entries (:mod:`registry.revocation`) live in a KV bucket, one key per entry
(``{subject-key}.{entry-id}``), so no write can overwrite another and every node
folds the same set into the same status. Each node watches the bucket and keeps
the folded state in memory: :meth:`RevocationList.is_blocked` is a dict lookup.
Every entry is verified (signature and issuer authority) on every read; a refused
entry is counted and audited, never applied. A deleted entry stays applied on the
nodes that saw it (fail closed).

A quarantine follows the agent across key rotation (set :attr:`predecessors`),
a revocation does not: it is about the key, and the usual answer to a compromised
key is to revoke it and rotate to a new one.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agentmesh.audit import AuditSink
from agentmesh.directory.reporting import Reporter
from agentmesh.directory.watcher import WatchedBucket, bucket_name
from agentmesh.errors import KeyExists
from agentmesh.node.addressing import MeshAddressing
from agentmesh.node.interceptors import ALLOW, InboundMessage, Outcome, Verdict
from agentmesh.transport.base import KVEntry, KVOperation, Transport
from iatp.clock import Clock
from iatp.envelope import Envelope
from iatp.handshake import PeerOffer
from registry.errors import InvalidRevocation, RevocationError
from registry.revocation import (
    BLOCKING_KINDS,
    RevocationAuthorities,
    RevocationEntry,
    RevocationKind,
    RevocationLedger,
    decode_revocation,
    verify_revocation,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RevocationChange:
    """``did``'s status changed to ``status`` because of ``entry``."""

    did: str
    status: RevocationKind | None
    entry: RevocationEntry


RevocationListener = Callable[[RevocationChange], None]


def _no_predecessors(did: str) -> Iterable[str]:
    return ()


class RevocationList:
    """KV-backed, watched revocation list with local in-memory state.

    Args:
        transport: a connected transport (its KV is the store).
        mesh: mesh name (selects the bucket).
        authorities: who may issue entries besides the subject itself.
        audit: where refused entries and changes are audited.
        node: the DID recorded as ``node`` in audit events.
        clock: for audit timestamps.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        mesh: str = "agentmesh",
        authorities: RevocationAuthorities | None = None,
        audit: AuditSink | None = None,
        node: str = "directory",
        clock: Clock | None = None,
    ) -> None:
        self.authorities = authorities or RevocationAuthorities()
        self._report = Reporter(audit, node=node, clock=clock)
        self.audit: AuditSink = self._report.audit
        self.rejected: Counter[str] = self._report.rejected
        self.predecessors: Callable[[str], Iterable[str]] = _no_predecessors
        self._ledger = RevocationLedger()
        self._listeners: list[RevocationListener] = []
        self._bucket = WatchedBucket(
            transport, bucket_name(MeshAddressing(mesh).mesh, "revocations"), self._on_entry
        )

    async def start(self, *, timeout: float = 5.0) -> None:
        """Load every stored entry, then follow changes.

        Raises:
            TransportError: the bucket could not be opened.
        """
        await self._bucket.start(timeout=timeout)

    async def aclose(self) -> None:
        await self._bucket.aclose()

    async def __aenter__(self) -> RevocationList:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- reads (local, never on the network) ------------------------------------------------

    def status(self, did: str) -> RevocationKind | None:
        """``revoked``, ``quarantined``, ``released`` (lifted) or ``None`` (never listed).

        A predecessor's quarantine (across key rotation) applies unless ``did``'s own
        entries say otherwise.
        """
        own = self._ledger.status(did)
        if own is not None or not self._ledger.any_quarantined:
            return own
        for old in self.predecessors(did):
            if self._ledger.status(old) is RevocationKind.QUARANTINED:
                return RevocationKind.QUARANTINED
        return None

    def is_blocked(self, did: str) -> bool:
        return self.status(did) in BLOCKING_KINDS

    def entries(self, did: str) -> list[RevocationEntry]:
        """Verified entries about ``did``, oldest first."""
        return self._ledger.entries(did)

    def listed(self) -> dict[str, RevocationKind]:
        """Every subject with an entry, and its own status."""
        return self._ledger.subjects()

    def add_listener(self, callback: RevocationListener) -> None:
        """Call ``callback`` (synchronously, on the event loop) on every accepted change."""
        self._listeners.append(callback)

    # -- writes ------------------------------------------------------------------------------

    async def issue(self, entry: RevocationEntry, *, timeout: float = 2.0) -> None:
        """Verify ``entry``, store it, and apply it locally at once.

        Raises:
            RevocationError: invalid, badly signed, or from an issuer without authority
                (audited; nothing is stored).
            TransportError: the store did not accept the write.
        """
        try:
            verify_revocation(entry, self.authorities)
        except RevocationError as exc:
            self._refuse(exc, entry.subject, "issue")
            raise
        key = f"{MeshAddressing.agent_key(entry.subject)}.{entry.entry_id}"
        with contextlib.suppress(KeyExists):  # the same entry, issued twice: idempotent
            await self._bucket.kv.create(key, entry.encode(), timeout=timeout)
        self._apply(entry)

    # -- internals ---------------------------------------------------------------------------

    def _on_entry(self, item: KVEntry) -> None:
        if item.operation is KVOperation.DELETE:
            self._audit("revocation_deleted", "revocation_deleted", None, item.key)
            return
        try:
            entry = decode_revocation(item.value)
            expected = f"{MeshAddressing.agent_key(entry.subject)}.{entry.entry_id}"
            if item.key != expected:
                raise InvalidRevocation("entry is stored under another key", did=entry.subject)
            verify_revocation(entry, self.authorities)
        except RevocationError as exc:
            self._refuse(exc, exc.did, item.key)
            return
        except Exception as exc:  # a malformed DID inside a well-formed entry, etc.
            self._refuse(InvalidRevocation(type(exc).__name__), None, item.key)
            return
        self._apply(entry)

    def _apply(self, entry: RevocationEntry) -> None:
        if not self._ledger.add(entry):
            return
        status = self._ledger.status(entry.subject)
        self._audit(
            "revocation",
            entry.kind.value,
            entry.subject,
            f"status={status.value if status else None} issuer={entry.issuer} "
            f"reason={entry.reason[:120]}",
        )
        change = RevocationChange(entry.subject, status, entry)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:
                logger.exception("revocation listener failed")

    def _refuse(self, error: RevocationError, did: str | None, where: str) -> None:
        self._report.refuse("revocation_rejected", error, did, where)

    def _audit(self, kind: str, code: str, peer: str | None, detail: str) -> None:
        self._report.record(kind, code, peer, detail)


class RevocationInterceptor:
    """Denies inbound messages from, outbound messages to, and handshakes with blocked DIDs.

    Install at :attr:`~agentmesh.node.interceptors.Stage.REVOCATION`. Denial codes are
    the status: ``revoked`` or ``quarantined``.
    """

    def __init__(self, revocations: RevocationList) -> None:
        self.revocations = revocations

    def _verdict(self, did: str, what: str) -> Verdict:
        status = self.revocations.status(did)
        if status in BLOCKING_KINDS:
            assert status is not None
            return Verdict.deny(status.value, f"{what} {did} is {status.value}")
        return ALLOW

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        return self._verdict(message.sender, "sender")

    async def check_outbound(self, envelope: Envelope) -> Verdict:
        # (The node's own iatp.error replies never reach outbound hooks, so a blocked
        # sender still learns why; any other message to it, whatever its type, is refused.)
        return self._verdict(envelope.recipient, "recipient")

    async def check_handshake(self, offer: PeerOffer) -> Verdict:
        return self._verdict(offer.did, "peer")

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        return None


__all__ = [
    "RevocationChange",
    "RevocationInterceptor",
    "RevocationList",
    "RevocationListener",
]
