"""Keep each issuer's revocation log whole: signed heads, checks, repair (registry.revocation_log).

Entries are stored under ``{issuer-key}.{index}``; the issuer's signed head (how
many entries, and the hash chaining them) is stored under ``{issuer-key}`` in the
heads bucket and broadcast on ``{mesh}.ctl.revocation-head`` whenever it moves.
Only heads of trusted issuers (mesh and organization authorities) count.

A reader checks every head against the entries it holds. At start (heads are
loaded before entries, so a head never runs ahead of the entry snapshot) a gap
gets ``grace`` seconds to fill (on a cluster, the watch may be served by a
replica that has just restarted and is still catching up), then it is fatal:
:class:`~registry.errors.RevocationLogIncomplete`. Later, a new head
gets ``grace`` seconds for its entries to arrive through the watch; if they do
not, the issuer's log is *incomplete*: the node fails closed (the revocation
interceptor refuses all traffic) until the entries reappear, for instance when
the authority republishes its journal (``agentmesh registry republish``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path

from agentmesh.directory.reporting import Reporter
from agentmesh.directory.watcher import WatchedBucket, bucket_name
from agentmesh.errors import KeyExists, KeyNotFound, RevisionMismatch
from agentmesh.node.addressing import MeshAddressing
from agentmesh.transport.base import KVEntry, KVOperation, Message, Subscription, Transport
from iatp.clock import Clock, SystemClock
from iatp.errors import AgentMeshError
from iatp.identity import AgentIdentity
from registry.errors import RevocationError, RevocationLogIncomplete, UnauthorizedRevocation
from registry.revocation import RevocationAuthorities, RevocationEntry, decode_revocation
from registry.revocation_log import IssuerLog, RevocationHead, decode_head, sign_head

logger = logging.getLogger(__name__)

HEAD_CONTROL = "revocation-head"
Spawn = Callable[[Coroutine[object, object, None], str], None]


def entry_key(entry: RevocationEntry, index: int) -> str:
    """Where entry ``index`` of its issuer is stored."""
    return f"{MeshAddressing.agent_key(entry.issuer)}.{index}"


class RevocationLogKeeper:
    """Heads, per-issuer logs and the fail-closed state of one node's revocation list."""

    def __init__(
        self,
        transport: Transport,
        mesh: str,
        authorities: RevocationAuthorities,
        reporter: Reporter,
        *,
        spawn: Spawn,
        on_state: Callable[[], None],
        grace: float = 3.0,
        journal: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._transport = transport
        self._addressing = MeshAddressing(mesh)
        self._authorities = authorities
        self._report = reporter
        self._spawn = spawn
        self._on_state = on_state
        self._grace = grace
        self._journal = journal
        self._clock: Clock = clock or SystemClock()
        self.logs: dict[str, IssuerLog] = {}
        self.incomplete: dict[str, str] = {}
        self._heads = WatchedBucket(
            transport, bucket_name(self._addressing.mesh, "revocation_heads"), self._on_head_entry
        )
        self._subscription: Subscription | None = None

    def log(self, issuer: str) -> IssuerLog:
        found = self.logs.get(issuer)
        if found is None:
            found = self.logs[issuer] = IssuerLog(issuer)
        return found

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, *, timeout: float) -> None:
        """Load the stored heads (before the entries) and follow new ones."""
        await self._heads.start(timeout=timeout)
        self._subscription = await self._transport.subscribe(
            self._addressing.control(HEAD_CONTROL), self._on_broadcast
        )

    async def aclose(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        await self._heads.aclose()

    async def settle(self) -> None:
        """Wait (up to ``grace``) until every trusted head is matched by the entries held."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        while any(log.check() is not None for log in self.logs.values()):
            if loop.time() >= deadline:
                return
            await asyncio.sleep(0.05)

    def verify_all(self) -> None:
        """After the entries are loaded: every trusted head must be matched.

        Raises:
            RevocationLogIncomplete: the first log that is not (all are audited).
        """
        first: RevocationLogIncomplete | None = None
        for issuer in sorted(self.logs):
            problem = self._check(issuer)
            if problem is not None and first is None:
                first = RevocationLogIncomplete(problem, issuer=issuer)
        if first is not None:
            raise first

    # -- reading ---------------------------------------------------------------------------

    def add(self, index: int, entry: RevocationEntry) -> None:
        """A verified entry read from the store under ``index``."""
        if not self.log(entry.issuer).add(index, entry):
            self._report.record(
                "revocation_rejected",
                "revocation_fork",
                entry.issuer,
                f"two entries of {entry.issuer} claim index {index}",
            )
        if entry.issuer in self.incomplete:
            self._check(entry.issuer)

    def _on_head_entry(self, item: KVEntry) -> None:
        if item.operation is KVOperation.DELETE:
            return  # a deleted head changes nothing: the newest one seen is kept
        self._offer(item.value, f"heads/{item.key}")

    async def _on_broadcast(self, message: Message) -> None:
        self._offer(message.data, message.subject)

    def _offer(self, data: bytes, where: str) -> None:
        try:
            head = decode_head(data)
            if not self._trusted(head.issuer):
                raise UnauthorizedRevocation(
                    f"{head.issuer} is not a revocation authority", did=head.issuer
                )
        except RevocationError as exc:
            self._report.refuse("revocation_rejected", exc, exc.did, where)
            return
        if self.log(head.issuer).offer_head(head) and self._heads.ready:
            self._spawn(self._check_later(head.issuer), f"revocation-head:{head.issuer[-8:]}")

    def _trusted(self, issuer: str) -> bool:
        return issuer in self._authorities.mesh or issuer in self._authorities.organizations

    async def _check_later(self, issuer: str) -> None:
        if self.log(issuer).check() is None:
            self._check(issuer)
            return
        await asyncio.sleep(self._grace)  # its entries may still be on their way
        self._check(issuer)

    def _check(self, issuer: str) -> str | None:
        problem = self.log(issuer).check()
        if problem is None:
            if self.incomplete.pop(issuer, None) is not None:
                self._report.record("revocation", "revocation_log_repaired", issuer, "complete")
                self._on_state()
            return None
        if self.incomplete.get(issuer) != problem:
            self.incomplete[issuer] = problem
            logger.error("revocation log incomplete: %s", problem)
            self._report.record("revocation_rejected", "revocation_log_incomplete", issuer, problem)
            self._on_state()
        return problem

    # -- writing (the issuer's side) -------------------------------------------------------

    def journal(self, key: str, entry: RevocationEntry) -> None:
        """Append a stored entry to the issuer's journal file (for :meth:`republish`)."""
        if self._journal is None:
            return
        with self._journal.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "entry": entry.encode().hex()}) + "\n")

    async def write_head(self, signer: AgentIdentity, *, timeout: float = 2.0) -> RevocationHead:
        """Sign and store ``signer``'s head over every entry it has made; broadcast it.

        Waits (up to ``grace``) for entries of this issuer that other processes
        stored to arrive through the watch; the stored head only ever grows.

        Raises:
            RevocationLogIncomplete: this node does not hold all of the issuer's entries.
            TransportError: the store refused the write.
        """
        log = self.log(signer.did)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        key = MeshAddressing.agent_key(signer.did)
        while True:
            count = max(log.entries, default=0)
            chain = log.chain_hash(count)
            if chain is None:
                if loop.time() > deadline:
                    raise RevocationLogIncomplete(
                        f"cannot sign a head: {log.check() or 'entries are missing'}",
                        issuer=signer.did,
                    )
                await asyncio.sleep(0.02)
                continue
            head = sign_head(
                signer, count=count, chain_hash=chain, issued_at_ms=self._clock.now_ms()
            )
            try:
                await self._store_head(key, head, timeout=timeout)
            except RevisionMismatch:
                continue  # another process moved the head meanwhile: recompute
            log.offer_head(head)
            await self._transport.publish(self._addressing.control(HEAD_CONTROL), head.encode())
            return head

    async def _store_head(self, key: str, head: RevocationHead, *, timeout: float) -> None:
        kv = self._heads.kv
        try:
            current = await kv.get(key, timeout=timeout)
        except KeyNotFound:
            with contextlib.suppress(KeyExists):
                await kv.create(key, head.encode(), timeout=timeout)
                return
            raise RevisionMismatch("a head appeared meanwhile") from None
        with contextlib.suppress(AgentMeshError):
            if decode_head(current.value).count >= head.count:
                return  # a newer head is stored already (it covers this entry too)
        await kv.update(key, head.encode(), last_revision=current.revision, timeout=timeout)

    async def announce(self, issuer: str) -> bool:
        """Broadcast the newest stored head of ``issuer`` again (a periodic re-announcement)."""
        head = self.log(issuer).head
        if head is None:
            return False
        await self._transport.publish(self._addressing.control(HEAD_CONTROL), head.encode())
        return True


def read_journal(path: Path) -> list[tuple[str, RevocationEntry]]:
    """The (key, entry) pairs of a journal written by :meth:`RevocationLogKeeper.journal`.

    Raises:
        RevocationError: a line is not a journal record or not a valid entry.
    """
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            records.append((str(doc["key"]), decode_revocation(bytes.fromhex(doc["entry"]))))
        except (ValueError, KeyError, TypeError) as exc:
            raise RevocationError(f"{path}:{number}: not a journal record ({exc})") from None
    return records


__all__ = ["HEAD_CONTROL", "RevocationLogKeeper", "entry_key", "read_journal"]
