"""The mesh's revocation and quarantine list, and the interceptor that enforces it.

Entries (:mod:`registry.revocation`) live in a KV bucket, one key per entry: the
``index``-th entry of an issuer under ``{issuer-key}.{index}`` (taken with a
create, so no write can overwrite another and two issuing processes never share
an index). Each issuer's entries form a hash-chained log whose head it signs
(:mod:`agentmesh.directory.revocation_log`): an entry removed from the store is
noticed, and the node fails closed, instead of a revocation quietly lifting.
Each node watches the bucket and keeps the folded state in memory:
:meth:`RevocationList.is_blocked` is a dict lookup. Every entry is verified
(signature and issuer authority) on every read; a refused entry is counted and
audited, never applied. A deleted entry stays applied on the nodes that saw it.

A quarantine follows the agent across key rotation (set :attr:`predecessors`),
a revocation does not: it is about the key, and the usual answer to a compromised
key is to revoke it and rotate to a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path

from agentmesh.audit import AuditSink
from agentmesh.directory.reporting import Reporter
from agentmesh.directory.revocation_log import RevocationLogKeeper
from agentmesh.directory.watcher import WatchedBucket, bucket_name
from agentmesh.errors import KeyExists, KeyNotFound
from agentmesh.lifecycle import Lifecycle
from agentmesh.node.addressing import MeshAddressing
from agentmesh.node.interceptors import ALLOW, InboundMessage, Outcome, Verdict
from agentmesh.transport.base import KVEntry, KVOperation, Transport
from iatp.clock import Clock
from iatp.envelope import Envelope
from iatp.handshake import PeerOffer
from iatp.identity import AgentIdentity
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

LOG_INCOMPLETE = "revocation_log_incomplete"


@dataclass(frozen=True, slots=True)
class RevocationChange:
    """``did``'s status changed to ``status`` because of ``entry``."""

    did: str
    status: RevocationKind | None
    entry: RevocationEntry


RevocationListener = Callable[[RevocationChange], None]


def _no_predecessors(did: str) -> Iterable[str]:
    return ()


class RevocationList(Lifecycle):
    """KV-backed, watched revocation list with local in-memory state.

    Args:
        transport: a connected transport (its KV is the store).
        mesh: mesh name (selects the bucket).
        authorities: who may issue entries besides the subject itself.
        audit: where refused entries and changes are audited.
        node: the DID recorded as ``node`` in audit events.
        clock: for audit timestamps.
        journal: a file where :meth:`issue` appends what it stores (the issuer's
            copy, for ``agentmesh registry republish``).
        head_grace: seconds a new head waits for its entries before the log
            counts as incomplete.
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
        journal: Path | None = None,
        head_grace: float = 3.0,
    ) -> None:
        self.authorities = authorities or RevocationAuthorities()
        self._report = Reporter(audit, node=node, clock=clock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._log_listeners: list[Callable[[dict[str, str]], None]] = []
        self.audit: AuditSink = self._report.audit
        self.rejected: Counter[str] = self._report.rejected
        self.predecessors: Callable[[str], Iterable[str]] = _no_predecessors
        self._ledger = RevocationLedger()
        self._listeners: list[RevocationListener] = []
        self._bucket = WatchedBucket(
            transport, bucket_name(MeshAddressing(mesh).mesh, "revocations"), self._on_entry
        )
        self.log = RevocationLogKeeper(
            transport,
            mesh,
            self.authorities,
            self._report,
            spawn=self._spawn,
            on_state=self._on_log_state,
            grace=head_grace,
            journal=journal,
            clock=clock,
        )

    async def start(self, *, timeout: float = 5.0, require_complete: bool = True) -> None:
        """Load the issuers' heads, then every stored entry; check the logs; follow changes.

        A log with a gap gets ``head_grace`` seconds to fill before it is refused
        (a replica that has just restarted may serve the watch while it catches up).

        ``require_complete=False`` starts even on an incomplete log (which then counts
        as incomplete: the interceptor fails closed); the repair tool needs it.

        Raises:
            RevocationLogIncomplete: an authority's log misses entries (audited; the
                list is closed again).
            TransportError: a bucket could not be opened.
        """
        await self.log.start(timeout=timeout)
        await self._bucket.start(timeout=timeout)
        if require_complete:
            await self.log.settle()
        try:
            self.log.verify_all()
        except RevocationError:
            if not require_complete:
                return
            await self.aclose()
            raise

    async def aclose(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        await self._bucket.aclose()
        await self.log.aclose()

    @property
    def incomplete(self) -> dict[str, str]:
        """Issuers whose log misses entries, and what is wrong (fail closed while any)."""
        return self.log.incomplete

    def _spawn(self, work: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def add_log_listener(self, callback: Callable[[dict[str, str]], None]) -> None:
        """Call ``callback(incomplete)`` whenever an issuer's log turns incomplete or whole."""
        self._log_listeners.append(callback)

    def _on_log_state(self) -> None:
        for listener in list(self._log_listeners):
            try:
                listener(dict(self.incomplete))
            except Exception:
                logger.exception("revocation log listener failed")

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

    async def issue(
        self,
        entry: RevocationEntry,
        *,
        signer: AgentIdentity | None = None,
        timeout: float = 2.0,
    ) -> None:
        """Verify ``entry``, store it as its issuer's next log entry, and apply it locally.

        With ``signer`` (the issuer's own identity), the issuer's head is signed,
        stored and broadcast too; an authority should always pass it, or nodes that
        start later cannot tell a truncated log from a complete one.

        Raises:
            RevocationError: invalid, badly signed, or from an issuer without authority
                (audited; nothing is stored).
            RevocationLogIncomplete: the head could not be signed (entries missing here).
            TransportError: the store did not accept the write.
        """
        try:
            verify_revocation(entry, self.authorities)
        except RevocationError as exc:
            self._refuse(exc, entry.subject, "issue")
            raise
        issuer_key = MeshAddressing.agent_key(entry.issuer)
        issuer_log = self.log.log(entry.issuer)
        # A retry of an entry already stored (say its head write failed during a
        # leader election) only writes the head again: one order, one log entry.
        stored = [i for i, known in issuer_log.entries.items() if known == entry]
        if not stored:
            encoded = entry.encode()
            index = issuer_log.next_index
            while True:  # the next free index of this issuer's log
                key = f"{issuer_key}.{index}"
                try:
                    await self._bucket.kv.create(key, encoded, timeout=timeout)
                    break
                except KeyExists:
                    with contextlib.suppress(KeyNotFound):
                        if (await self._bucket.kv.get(key, timeout=timeout)).value == encoded:
                            break  # our own earlier attempt, acknowledged too late
                    index += 1
            self.log.journal(key, entry)
            self.log.add(index, entry)
        self._apply(entry)
        if signer is not None and signer.did == entry.issuer:
            await self.log.write_head(signer, timeout=timeout)

    async def republish(
        self,
        signer: AgentIdentity,
        records: Iterable[tuple[str, RevocationEntry]] = (),
        *,
        timeout: float = 2.0,
    ) -> int:
        """Put ``signer``'s log back into the store; returns how many entries were missing.

        The entries come from ``records`` (a journal, :func:`read_journal`) and from
        what this list holds in memory; each goes back under its own key, existing
        keys are left alone (a write-once bucket would refuse them anyway). Then the
        head is signed and broadcast again.

        Raises:
            RevocationError: a record is not ``signer``'s, or not a valid entry.
            RevocationLogIncomplete: entries are still missing afterwards.
            TransportError: the store refused a write.
        """
        wanted: dict[str, RevocationEntry] = {}
        issuer_key = MeshAddressing.agent_key(signer.did)
        for index, entry in self.log.log(signer.did).entries.items():
            wanted[f"{issuer_key}.{index}"] = entry
        for key, entry in records:
            if entry.issuer != signer.did or not key.startswith(issuer_key + "."):
                raise InvalidRevocation(f"journal record {key} is not {signer.did}'s")
            verify_revocation(entry, self.authorities)
            wanted[key] = entry
        restored = 0
        for key, entry in sorted(wanted.items()):
            try:
                await self._bucket.kv.get(key, timeout=timeout)
                continue
            except KeyNotFound:
                pass
            with contextlib.suppress(KeyExists):
                await self._bucket.kv.create(key, entry.encode(), timeout=timeout)
                restored += 1
            self.log.add(int(key.rpartition(".")[2]), entry)
            self._apply(entry)
        await self.log.write_head(signer, timeout=timeout)
        self._report.record("revocation", "revocation_log_republished", signer.did, str(restored))
        return restored

    # -- internals ---------------------------------------------------------------------------

    def _on_entry(self, item: KVEntry) -> None:
        if item.operation is KVOperation.DELETE:
            self._audit("revocation_deleted", "revocation_deleted", None, item.key)
            return
        try:
            entry = decode_revocation(item.value)
            issuer_key, _, index = item.key.rpartition(".")
            if issuer_key != MeshAddressing.agent_key(entry.issuer) or not (
                index.isdigit() and 0 < int(index) < 2**63
            ):
                raise InvalidRevocation("entry is stored under another key", did=entry.subject)
            verify_revocation(entry, self.authorities)
        except RevocationError as exc:
            self._refuse(exc, exc.did, item.key)
            return
        except Exception as exc:  # a malformed DID inside a well-formed entry, etc.
            self._refuse(InvalidRevocation(type(exc).__name__), None, item.key)
            return
        self.log.add(int(index), entry)
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
    the status: ``revoked`` or ``quarantined``; while an authority's revocation log is
    incomplete, every message is denied (``revocation_log_incomplete``).
    """

    def __init__(self, revocations: RevocationList) -> None:
        self.revocations = revocations

    def _verdict(self, did: str, what: str) -> Verdict:
        incomplete = self.revocations.incomplete
        if incomplete:  # fail closed: a revocation may be missing, so trust no one
            issuer, problem = next(iter(incomplete.items()))
            return Verdict.deny(LOG_INCOMPLETE, f"revocation log of {issuer} incomplete: {problem}")
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
