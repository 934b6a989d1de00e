"""The agent directory: signed cards in a KV bucket, mirrored into a local cache.

Writes go to the store (JetStream KV over NATS, or the in-memory bus); every node
watches the buckets and keeps verified copies, so :meth:`Directory.lookup` and
:meth:`Directory.find` are local reads that never wait on the network. Every card
read from the store is verified again (signature, DID, validity window) before it
reaches the cache; refusals are counted and audited.

Buckets of a mesh ``m``: ``m_registry_cards`` (key = the DID's multibase part),
``m_registry_rotations`` (key = the old DID's multibase part) and
``m_registry_pins`` (capability fingerprints, see :mod:`registry.pins`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Coroutine

from agentmesh.audit import AuditSink
from agentmesh.directory.cache import CardCache, Rank
from agentmesh.directory.events import (
    DirectoryEvent,
    DirectoryEventKind,
    EventFanout,
    EventStream,
)
from agentmesh.directory.pin_store import PinStore
from agentmesh.directory.reporting import Reporter
from agentmesh.directory.revocations import RevocationList
from agentmesh.directory.rotation_store import RotationStore
from agentmesh.directory.watcher import WatchedBucket, bucket_name
from agentmesh.lifecycle import Lifecycle
from agentmesh.node.addressing import MeshAddressing
from agentmesh.transport.base import KVEntry, KVOperation, Transport
from iatp.clock import Clock, SystemClock
from iatp.did import DID_KEY_PREFIX
from iatp.errors import AgentMeshError
from iatp.identity import AgentIdentity
from iatp.rotation import RotationStatement
from registry.card import (
    DEFAULT_CLOCK_SKEW_MS,
    MAX_CARD_BYTES,
    AgentCard,
    Capability,
    decode_card,
    sign_card,
    verify_card,
)
from registry.errors import (
    AgentNotFound,
    CardDIDMismatch,
    CardError,
    OversizedCard,
    RegistryError,
    StaleCard,
)
from registry.pins import CapabilityDriftEvent
from registry.withdrawal import decode_withdrawal, is_withdrawal, sign_withdrawal

logger = logging.getLogger(__name__)

DEFAULT_TTL_MS = 30_000
CARD_HISTORY = 5
"""Revisions kept per card key: enough to find the last valid card under garbage."""
MAX_CACHED_QUERIES = 4096
_FOREVER = 2**63


class Directory(Lifecycle):
    """Register, renew, look up and find agents; follow rotations; detect rug pulls.

    Args:
        transport: a connected transport; its KV is the store.
        mesh: mesh name (selects the buckets).
        revocations: when given, :meth:`find` leaves out blocked agents and the list
            follows quarantines across rotations recorded here.
        audit: where refusals, drifts and approvals are audited.
        node: the DID recorded as ``node`` in audit events.
        clock: wall clock for validity checks.
        clock_skew_ms: how far in the future a card's ``issued_at_ms`` may be.
        sweep_interval: seconds between sweeps that drop expired cards from the cache.
        pin_signer: a pin authority's identity, when this directory runs for one: it
            stores signed first-seen pins and signs approvals (on a secured broker
            only the authority or an operator may write pins at all).
        pin_authorities: DIDs whose signed pins and approvals this directory
            follows (the mesh authorities); every other stored pin is refused.
        store_check_every: seconds between checks that the cards bucket still
            exists (a deleted bucket is recreated and this directory's own cards
            are announced again).

    Tampering with the store does not take an honest agent out of the directory:
    a bare delete of a card is ignored (an agent leaves by a signed withdrawal,
    :meth:`deregister`); garbage under a card's key is refused; in both cases the
    card's owner, if registered here, announces its card again at once, and a
    directory that has no valid card yet looks back through the key's history for
    the newest valid one.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        mesh: str = "agentmesh",
        revocations: RevocationList | None = None,
        audit: AuditSink | None = None,
        node: str = "directory",
        clock: Clock | None = None,
        clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS,
        sweep_interval: float = 1.0,
        pin_signer: AgentIdentity | None = None,
        pin_authorities: frozenset[str] = frozenset(),
        store_check_every: float = 5.0,
    ) -> None:
        self.addressing = MeshAddressing(mesh)
        self.revocations = revocations
        self.clock: Clock = clock or SystemClock()
        self._events = EventFanout()
        self._report = Reporter(audit, node=node, clock=self.clock, on_refusal=self._on_refusal)
        self._skew = clock_skew_ms
        self._sweep_interval = sweep_interval
        self._cache = CardCache()
        self._own: dict[str, tuple[AgentIdentity, AgentCard, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._found: dict[tuple[str, str | None, bool], tuple[int, tuple[AgentCard, ...]]] = {}
        self._excluded: dict[bool, frozenset[str]] = {}
        self._cards = WatchedBucket(
            transport,
            bucket_name(mesh, "cards"),
            self._on_card,
            on_reset=self._reannounce,
            history=CARD_HISTORY,
            check_every=store_check_every,
        )
        self._rotation_store = RotationStore(transport, mesh, self._report, self._on_rotated)
        self._pin_store = PinStore(
            transport,
            mesh,
            self._report,
            self._spawn,
            self._recheck,
            signer=pin_signer,
            authorities=pin_authorities,
            clock=self.clock,
        )
        self.rotations = self._rotation_store.chain
        self.pins = self._pin_store.pins
        if revocations is not None:
            self.use_revocations(revocations)

    @property
    def audit(self) -> AuditSink:
        return self._report.audit

    @property
    def rejected(self) -> Counter[str]:
        """Refusals by code (cards, rotations, pins)."""
        return self._report.rejected

    def use_revocations(self, revocations: RevocationList) -> None:
        """Leave ``revocations``' blocked agents out of :meth:`find`; share rotations with it."""
        self.revocations = revocations
        revocations.predecessors = self.rotations.predecessors
        revocations.add_listener(self._changed)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, timeout: float = 5.0) -> None:
        """Load pins, rotations and cards from the store, then follow every change.

        Raises:
            TransportError: a bucket could not be opened.
        """
        await self._pin_store.start(timeout=timeout)
        await self._rotation_store.start(timeout=timeout)
        await self._cards.start(timeout=timeout)
        self._spawn(self._sweep(), "directory-sweep")

    async def aclose(self) -> None:
        """Stop heartbeats, sweeps and watches; end every :meth:`watch` iterator. Idempotent."""
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._cards.aclose()
        await self._rotation_store.aclose()
        await self._pin_store.aclose()
        self._events.close()

    def _spawn(self, coroutine: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._tasks.discard(done))

    # -- reads: local, never on the network --------------------------------------------------

    def lookup(self, did: str, *, follow_rotation: bool = True) -> AgentCard | None:
        """The live card of ``did`` (of its newest key when it rotated), or ``None``."""
        target = self.rotations.current(did) if follow_rotation else did
        card = self._cache.get(target)
        if card is None or not card.is_live(self.clock.now_ms()):
            return None
        return card

    def get(self, did: str, *, follow_rotation: bool = True) -> AgentCard:
        """Like :meth:`lookup`, but raises.

        Raises:
            AgentNotFound: no live card.
        """
        card = self.lookup(did, follow_rotation=follow_rotation)
        if card is None:
            raise AgentNotFound(f"no live card for {did}", did=did)
        return card

    def find(
        self,
        capability: str,
        *,
        version: str | None = None,
        rank: Rank | None = None,
        include_held: bool = False,
    ) -> list[AgentCard]:
        """Live cards offering ``capability``, best first (a local read, no I/O).

        Leaves out revoked or quarantined agents, keys that rotated away, and (unless
        ``include_held``) agents held for a capability drift until re-approved.
        Results are cached per query until a card, pin, rotation or revocation
        changes, or the first of the returned cards expires.

        Args:
            capability: capability name.
            version: only this version.
            rank: DID -> score, higher first (e.g. ``TrustEngine.score``).
            include_held: keep agents held for a drift (for operators, not routing).
        """
        key = (capability, version, include_held)
        now = self.clock.now_ms()
        hit = self._found.get(key)
        if hit is not None and now < hit[0]:
            cards = hit[1]
        else:
            excluded = self._excluded_dids(include_held)
            cards = tuple(
                self._cache.find(
                    capability, now_ms=now, version=version, excluded=excluded.__contains__
                )
            )
            if len(self._found) >= MAX_CACHED_QUERIES:
                self._found.clear()
            valid_until = min((card.expires_at_ms for card in cards), default=_FOREVER)
            self._found[key] = (valid_until, cards)
        if rank is None:
            return list(cards)
        return sorted(cards, key=lambda card: rank(card.did), reverse=True)

    def _changed(self, *_: object) -> None:
        """Forget cached query results: a card, pin, rotation or revocation changed."""
        self._found.clear()
        self._excluded.clear()

    def _excluded_dids(self, include_held: bool) -> frozenset[str]:
        """The DIDs :meth:`is_excluded` refuses, computed once per change (a small set)."""
        known = self._excluded.get(include_held)
        if known is not None:
            return known
        out = set(self.rotations.rotated_away())
        if self.revocations is not None:
            for did in self.revocations.listed():
                out.update(
                    d
                    for d in (did, *self.rotations.successors_chain(did))
                    if self.revocations.is_blocked(d)
                )
        if not include_held:
            out.update(self.pins.held())
        self._excluded[include_held] = frozen = frozenset(out)
        return frozen

    def is_excluded(self, did: str, *, include_held: bool = False) -> bool:
        """True when routing to ``did`` is refused (blocked, rotated away, or held)."""
        if self.revocations is not None and self.revocations.is_blocked(did):
            return True
        if self.rotations.statement_from(did) is not None:
            return True
        return not include_held and self.pins.is_held(did)

    def cards(self) -> list[AgentCard]:
        """Every live card, by DID."""
        now = self.clock.now_ms()
        return [card for card in self._cache.all() if card.is_live(now)]

    def drifts(self, did: str) -> list[CapabilityDriftEvent]:
        return self.pins.drifts(did)

    def watch(self) -> EventStream:
        """Every change from now on (registered, updated, removed, expired, drift, ...)."""
        return self._events.stream()

    # -- writes ------------------------------------------------------------------------------

    async def register(
        self,
        identity: AgentIdentity,
        *,
        display_name: str,
        capabilities: tuple[Capability, ...] = (),
        organization: str | None = None,
        inbox: str | None = None,
        ttl_ms: int = DEFAULT_TTL_MS,
        timeout: float = 2.0,
    ) -> AgentCard:
        """Sign and store ``identity``'s card (valid ``ttl_ms``); :meth:`renew` keeps it live.

        Raises:
            CardError: a field is invalid or the card is too large (audited).
            TransportError: the store refused the write.
        """
        try:
            card = sign_card(
                identity,
                display_name=display_name,
                inbox=inbox or self.addressing.inbox(identity.did),
                issued_at_ms=self.clock.now_ms(),
                ttl_ms=ttl_ms,
                capabilities=capabilities,
                organization=organization,
            )
        except CardError as exc:
            self._refuse(exc, identity.did, "register")
            raise
        await self.publish(card, timeout=timeout)
        self._own[identity.did] = (identity, card, ttl_ms)
        return card

    async def renew(self, identity: AgentIdentity, *, timeout: float = 2.0) -> AgentCard:
        """Re-sign the card registered by this directory with a fresh validity window.

        Raises:
            AgentNotFound: ``identity`` was not registered here.
            TransportError: the store refused the write.
        """
        own = self._own.get(identity.did)
        if own is None:
            raise AgentNotFound(f"{identity.did} is not registered here", did=identity.did)
        _, card, ttl_ms = own
        return await self.register(
            identity,
            display_name=card.display_name,
            capabilities=card.capabilities,
            organization=card.organization,
            inbox=card.inbox,
            ttl_ms=ttl_ms,
            timeout=timeout,
        )

    def start_heartbeat(self, identity: AgentIdentity, *, every: float | None = None) -> None:
        """Renew ``identity``'s card every ``every`` seconds (default: a third of its TTL)."""
        own = self._own.get(identity.did)
        if own is None:
            raise AgentNotFound(f"{identity.did} is not registered here", did=identity.did)
        period = every if every is not None else own[2] / 3000

        async def beat() -> None:
            while True:
                await asyncio.sleep(period)
                try:
                    await self.renew(identity, timeout=max(period, 1.0))
                except AgentMeshError as exc:  # retried next period; the TTL has slack
                    logger.warning("renewal of %s failed: %s", identity.did, exc)

        self._spawn(beat(), f"heartbeat:{identity.did[-8:]}")

    async def publish(self, card: AgentCard, *, timeout: float = 2.0) -> None:
        """Verify ``card`` and store it (for cards signed elsewhere).

        Raises:
            CardError: the card fails :func:`registry.card.verify_card` or is too large.
            TransportError: the store refused the write.
        """
        data = card.encode()
        try:
            if len(data) > MAX_CARD_BYTES:
                raise OversizedCard(f"card is larger than {MAX_CARD_BYTES} bytes", did=card.did)
            verify_card(card, now_ms=self.clock.now_ms(), clock_skew_ms=self._skew)
        except CardError as exc:
            self._refuse(exc, card.did, "publish")
            raise
        await self._cards.kv.put(self.addressing.agent_key(card.did), data, timeout=timeout)
        self._accept(card)

    async def deregister(self, identity: AgentIdentity, *, timeout: float = 2.0) -> None:
        """Store ``identity``'s signed withdrawal (every node drops its card); stop renewing."""
        self._own.pop(identity.did, None)
        for task in list(self._tasks):
            if task.get_name() == f"heartbeat:{identity.did[-8:]}":
                task.cancel()
        withdrawal = sign_withdrawal(identity, issued_at_ms=self.clock.now_ms())
        await self._cards.kv.put(
            self.addressing.agent_key(identity.did), withdrawal.encode(), timeout=timeout
        )
        self._remove(identity.did, DirectoryEventKind.REMOVED)

    async def publish_rotation(self, statement: RotationStatement, *, timeout: float = 2.0) -> None:
        """Store a rotation statement so that every node follows the agent to its new DID.

        Raises:
            RotationRejected: invalid, or conflicting with a known statement (audited).
            TransportError: the store refused the write.
        """
        await self._rotation_store.publish(statement, timeout=timeout)

    async def approve(self, did: str, *, timeout: float = 2.0) -> AgentCard:
        """Accept ``did``'s current descriptors (after a drift) on every node.

        The approval is signed by this directory's ``pin_signer``; nodes follow it
        if the signer is one of their ``pin_authorities``.

        Raises:
            AgentNotFound: no live card for ``did``.
            PinNotAuthorized: this directory has no ``pin_signer``.
            TransportError: the store refused the write.
        """
        card = self.get(did, follow_rotation=False)
        await self._pin_store.approve(card, timeout=timeout)
        self._changed()
        self._events.emit(DirectoryEvent(DirectoryEventKind.APPROVED, did, card))
        return card

    # -- store -> cache ----------------------------------------------------------------------

    def _on_card(self, item: KVEntry) -> None:
        did = DID_KEY_PREFIX + item.key
        if item.operation is KVOperation.DELETE:
            # Unsigned: anyone with write access could have done it. Keep the card.
            self._report.record("registry_rejected", "card_deleted_unsigned", did, item.key)
            self._repair(did, item.key)
            return
        if is_withdrawal(item.value):
            self._on_withdrawal(did, item)
            return
        try:
            card = decode_card(
                item.value, now_ms=self.clock.now_ms(), expected_did=did, clock_skew_ms=self._skew
            )
        except CardDIDMismatch as exc:
            self._refuse(exc, did, item.key)
            self._repair(did, item.key)
            return
        except CardError as exc:
            self._refuse(exc, exc.did or did, item.key)
            self._repair(did, item.key)
            return
        self._accept(card)

    def _on_withdrawal(self, did: str, item: KVEntry) -> None:
        try:
            withdrawal = decode_withdrawal(item.value, expected_did=did)
        except CardError as exc:
            self._refuse(exc, did, item.key)
            self._repair(did, item.key)
            return
        card = self._cache.get(did)
        if card is not None and withdrawal.issued_at_ms < card.issued_at_ms:
            return  # an old withdrawal put back: the agent registered again since
        if did in self._own:
            self._repair(did, item.key)  # our own old withdrawal, replayed
            return
        self._remove(did, DirectoryEventKind.REMOVED)

    def _repair(self, did: str, key: str) -> None:
        """After tampering with ``did``'s key: re-announce it if ours, else look back."""
        if did in self._own:
            self._spawn(self._announce(did), f"reannounce:{did[-8:]}")
        elif self._cache.get(did) is None:
            self._spawn(self._recover(key), f"recover:{did[-8:]}")

    async def _announce(self, did: str) -> None:
        own = self._own.get(did)
        if own is None:
            return
        try:
            await self.renew(own[0])
        except AgentMeshError as exc:
            logger.warning("re-announcing %s failed: %s", did, exc)

    def _reannounce(self) -> None:
        for did in list(self._own):
            self._spawn(self._announce(did), f"reannounce:{did[-8:]}")

    async def _recover(self, key: str) -> None:
        """The newest valid card in ``key``'s history (unless the agent withdrew)."""
        did = DID_KEY_PREFIX + key
        try:
            entries = await self._cards.kv.history(key)
        except AgentMeshError as exc:
            logger.warning("history of %s unavailable: %s", did, exc)
            return
        for entry in reversed(entries):
            if entry.operation is KVOperation.DELETE:
                continue
            if is_withdrawal(entry.value):
                with contextlib.suppress(CardError):
                    decode_withdrawal(entry.value, expected_did=did)
                    return
                continue
            try:
                card = decode_card(
                    entry.value,
                    now_ms=self.clock.now_ms(),
                    expected_did=did,
                    clock_skew_ms=self._skew,
                )
            except CardError:
                continue
            if self._cache.get(did) is None:
                self._report.record("registry", "card_recovered", did, f"revision {entry.revision}")
                self._accept(card)
            return

    def _accept(self, card: AgentCard) -> None:
        old = self._cache.get(card.did)
        if old is not None:
            if old == card:
                return
            if card.issued_at_ms < old.issued_at_ms:
                self._refuse(StaleCard("an older card than the known one", did=card.did), None, "")
                return
        self._cache.put(card)
        self._changed()
        kind = DirectoryEventKind.REGISTERED if old is None else DirectoryEventKind.UPDATED
        self._events.emit(DirectoryEvent(kind, card.did, card))
        self._check_pins(card)

    def _check_pins(self, card: AgentCard) -> None:
        self._changed()
        was_held = self.pins.is_held(card.did)
        drifts = self._pin_store.observe(card)
        for drift in drifts:
            detail = f"{drift.name}@{drift.version} {drift.pinned[:12]} -> {drift.seen[:12]}"
            self._events.emit(DirectoryEvent(DirectoryEventKind.DRIFT, card.did, card, detail))
        if was_held and not drifts:
            self._events.emit(DirectoryEvent(DirectoryEventKind.APPROVED, card.did, card))

    def _recheck(self, did: str) -> None:
        card = self._cache.get(did)
        if card is not None:
            self._check_pins(card)

    def _on_rotated(self, statement: RotationStatement) -> None:
        self._changed()
        detail = f"{statement.old_did} -> {statement.new_did}"
        self._events.emit(
            DirectoryEvent(DirectoryEventKind.ROTATED, statement.new_did, None, detail)
        )

    def _remove(self, did: str, kind: DirectoryEventKind) -> None:
        old = self._cache.remove(did)
        if old is not None:
            self._changed()
            self._events.emit(DirectoryEvent(kind, did, old))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            for card in self._cache.expired(self.clock.now_ms()):
                self._remove(card.did, DirectoryEventKind.EXPIRED)

    def _refuse(self, error: RegistryError, did: str | None, where: str) -> None:
        self._report.refuse("registry_rejected", error, did, where)

    def _on_refusal(self, code: str, did: str | None) -> None:
        self._events.emit(DirectoryEvent(DirectoryEventKind.REJECTED, did, None, code))
