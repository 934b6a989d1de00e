"""The kill switch: signed quarantine orders, enforced on every node within milliseconds.

A quarantine order is a signed ``quarantined`` :class:`~registry.revocation.RevocationEntry`.
It travels two ways at once:

1. broadcast on the mesh control subject ``{mesh}.ctl.quarantine``, so every
   running node verifies it and stops routing to and from the agent at once;
2. issued into the durable :class:`~agentmesh.directory.revocations.RevocationList`
   (a watched KV bucket), so late, restarting and partitioned nodes obey it too.

Lifting it is a signed ``released`` entry, sent the same way. Every node
verifies every order (signature and the issuer's authority) before applying it;
refused orders are counted and audited. Entries from both paths feed one
order-independent ledger, so duplicates and reordering change nothing.

Hooks: :meth:`KillSwitch.on_quarantine` callbacks run when an agent becomes
blocked on this node (the saga coordinator hands its in-flight steps off there);
:meth:`KillSwitch.on_release` when it is lifted.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from agentmesh.audit import AuditEvent, AuditSink, MemoryAuditSink
from agentmesh.directory.revocations import RevocationChange, RevocationList
from agentmesh.node.addressing import MeshAddressing
from agentmesh.node.interceptors import ALLOW, InboundMessage, Outcome, Verdict
from agentmesh.policy.errors import QuarantineOrderError
from agentmesh.transport.base import Message, Subscription, Transport
from iatp.clock import Clock, SystemClock
from iatp.envelope import Envelope
from iatp.handshake import PeerOffer
from iatp.identity import AgentIdentity
from registry.errors import RevocationError
from registry.revocation import (
    BLOCKING_KINDS,
    RevocationEntry,
    RevocationKind,
    RevocationLedger,
    decode_revocation,
    sign_revocation,
    verify_revocation,
)

logger = logging.getLogger(__name__)

QUARANTINE_CONTROL = "quarantine"
QuarantineHook = Callable[[str, RevocationEntry], Awaitable[None] | None]


class KillSwitch:
    """Issues, receives and enforces quarantine orders on one node.

    Args:
        transport: a connected transport.
        revocations: the node's (started) revocation list; its ``authorities``
            decide who may order a quarantine.
        mesh: mesh name (selects the control subject).
        node: DID recorded in audit events.
        audit: where applied and refused orders are audited.
        clock: timestamps of orders and audit events.
    """

    def __init__(
        self,
        transport: Transport,
        revocations: RevocationList,
        *,
        mesh: str = "agentmesh",
        node: str = "",
        audit: AuditSink | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.transport = transport
        self.revocations = revocations
        self.subject = MeshAddressing(mesh).control(QUARANTINE_CONTROL)
        self.node = node
        self.audit: AuditSink = audit if audit is not None else MemoryAuditSink()
        self.clock: Clock = clock or SystemClock()
        self.rejected: Counter[str] = Counter()
        self.received = 0
        # "quarantined" / "released": an agent became blocked / unblocked on this node.
        self.transitions: Counter[str] = Counter()
        self._ledger = RevocationLedger()
        self._quarantine_hooks: list[QuarantineHook] = []
        self._release_hooks: list[QuarantineHook] = []
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Follow the control subject and the revocation list."""
        self.revocations.add_listener(self._on_change)
        for did in self.revocations.listed():
            for entry in self.revocations.entries(did):
                self._observe(entry, "store")
        self._subscription = await self.transport.subscribe(self.subject, self._on_broadcast)

    async def aclose(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        for task in list(self._tasks):
            task.cancel()

    # -- reads -------------------------------------------------------------------------------

    def status(self, did: str) -> RevocationKind | None:
        own = self._ledger.status(did)
        if own in BLOCKING_KINDS:
            return own
        stored = self.revocations.status(did)
        return stored if stored is not None else own

    def is_blocked(self, did: str) -> bool:
        """True while ``did`` is quarantined or revoked by either path (fail closed)."""
        return self._ledger.status(did) in BLOCKING_KINDS or self.revocations.is_blocked(did)

    def listed(self) -> dict[str, RevocationKind]:
        """Every agent with an order or a revocation on this node, and its status now."""
        dids = {*self._ledger.subjects(), *self.revocations.listed()}
        return {did: status for did in dids if (status := self.status(did)) is not None}

    def on_quarantine(self, callback: QuarantineHook) -> None:
        """Call ``callback(did, order)`` when an agent becomes blocked (sync or async)."""
        self._quarantine_hooks.append(callback)

    def on_release(self, callback: QuarantineHook) -> None:
        self._release_hooks.append(callback)

    # -- orders ------------------------------------------------------------------------------

    async def quarantine(
        self, issuer: AgentIdentity, did: str, reason: str, *, timeout: float = 2.0
    ) -> RevocationEntry:
        """Sign and send a quarantine order about ``did``.

        Raises:
            QuarantineOrderError: the issuer may not order it, or a field is invalid.
            TransportError: the order could not be stored.
        """
        entry = self._sign(issuer, did, RevocationKind.QUARANTINED, reason)
        return await self.send(entry, timeout, signer=issuer)

    async def release(
        self, issuer: AgentIdentity, did: str, reason: str, *, timeout: float = 2.0
    ) -> RevocationEntry:
        """Sign and send the release of ``did``'s quarantine (audited like the order).

        Raises:
            QuarantineOrderError, TransportError.
        """
        entry = self._sign(issuer, did, RevocationKind.RELEASED, reason)
        return await self.send(entry, timeout, signer=issuer)

    def _sign(
        self, issuer: AgentIdentity, did: str, kind: RevocationKind, reason: str
    ) -> RevocationEntry:
        try:
            return sign_revocation(
                issuer,
                subject=did,
                kind=kind,
                reason=reason,
                issued_at_ms=self.clock.now_ms(),
                sequence=time.monotonic_ns(),
            )
        except RevocationError as exc:
            raise QuarantineOrderError(str(exc)) from None

    async def send(
        self, entry: RevocationEntry, timeout: float = 2.0, *, signer: AgentIdentity | None = None
    ) -> RevocationEntry:
        """Verify, broadcast (immediate) and store (durable) an already signed entry.

        ``signer`` (the issuer's identity) also signs the issuer's new log head.

        Raises:
            QuarantineOrderError: refused by this node's authorities (nothing is sent).
            TransportError: broadcast or store failed.
        """
        try:
            verify_revocation(entry, self.revocations.authorities)
        except RevocationError as exc:
            self._refuse(exc.code, entry.subject, f"local order: {exc}")
            raise QuarantineOrderError(str(exc)) from None
        self._observe(entry, "local")
        await self.transport.publish(self.subject, entry.encode())
        await self.revocations.issue(entry, signer=signer, timeout=timeout)
        return entry

    # -- internals ---------------------------------------------------------------------------

    async def _on_broadcast(self, message: Message) -> None:
        self.received += 1
        try:
            entry = decode_revocation(message.data)
            verify_revocation(entry, self.revocations.authorities)
        except RevocationError as exc:
            self._refuse(exc.code, getattr(exc, "did", None), "broadcast")
            return
        except Exception as exc:  # a malformed DID inside a well-formed entry
            self._refuse("revocation_invalid", None, f"broadcast: {type(exc).__name__}")
            return
        self._observe(entry, "broadcast")

    def _on_change(self, change: RevocationChange) -> None:
        self._observe(change.entry, "store")

    def _observe(self, entry: RevocationEntry, source: str) -> None:
        was_blocked = self._ledger.status(entry.subject) in BLOCKING_KINDS
        if not self._ledger.add(entry):
            return
        status = self._ledger.status(entry.subject)
        blocked = status in BLOCKING_KINDS
        self._audit(
            "quarantine",
            status.value if status is not None else "unlisted",
            entry.subject,
            f"via {source} by {entry.issuer}: {entry.reason[:160]}",
        )
        if blocked and not was_blocked:
            self.transitions["quarantined"] += 1
            self._run_hooks(self._quarantine_hooks, entry)
        elif was_blocked and not blocked:
            self.transitions["released"] += 1
            self._run_hooks(self._release_hooks, entry)

    def _run_hooks(self, hooks: list[QuarantineHook], entry: RevocationEntry) -> None:
        for hook in list(hooks):
            try:
                result = hook(entry.subject, entry)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:
                logger.exception("quarantine hook failed")

    def _refuse(self, code: str, did: str | None, detail: str) -> None:
        self.rejected[code] += 1
        self._audit("quarantine_rejected", code, did, detail)

    def _audit(self, kind: str, code: str, peer: str | None, detail: str) -> None:
        self.audit.append(
            AuditEvent(
                at_ms=self.clock.now_ms(),
                node=self.node,
                kind=kind,
                code=code,
                peer=peer,
                subject=self.subject,
                detail=detail[:300],
            )
        )


class QuarantineInterceptor:
    """Enforces the kill switch on a node (install at ``Stage.REVOCATION``).

    Denies inbound messages from, outbound messages to, and handshakes with a
    blocked agent; a node whose own agent is quarantined sends nothing.
    """

    def __init__(self, kill_switch: KillSwitch, own_did: str) -> None:
        self.kill_switch = kill_switch
        self.own_did = own_did

    def _verdict(self, did: str, what: str) -> Verdict:
        if self.kill_switch.is_blocked(did):
            status = self.kill_switch.status(did)
            code = status.value if status is not None else "quarantined"
            return Verdict.deny(code, f"{what} {did} is {code}")
        return ALLOW

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        return self._verdict(message.sender, "sender")

    async def check_outbound(self, envelope: Envelope) -> Verdict:
        own = self._verdict(self.own_did, "this agent")
        if not own.allowed:
            return own
        if envelope.recipient.startswith("topic:"):
            return ALLOW
        return self._verdict(envelope.recipient, "recipient")

    async def check_handshake(self, offer: PeerOffer) -> Verdict:
        return self._verdict(offer.did, "peer")

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        return None


__all__ = ["QUARANTINE_CONTROL", "KillSwitch", "QuarantineHook", "QuarantineInterceptor"]
