"""The steward: an organization authority's courier across its federation links.

It runs as a node of the organization's authority on its own mesh and talks to
each partner's steward (authority to authority, through the link):

* **out**: it ships this organization's signed facts to every partner in force:
  its status list, the cards of the agents it exports (each with the membership
  credential the authority issued), the authority's blocking orders about its own
  members, and any revocation notice of the agreement. At once on every change,
  and again every ``resync_every`` seconds.
* **in**: ``federation.feed`` messages from a partner's authority are checked
  item by item (signed by that partner, about that partner's own agents) and
  stored in this mesh's federation bucket, where every node's view verifies them
  again. What fails is counted and audited, never stored.

The steward carries facts; it is not trusted for their truth (every value is
signed by the organization it speaks for), only for delivering them in time.
Wire form of a feed: msgpack ``[1, [[kind, data, credential], ...]]`` with
``kind`` one of ``status``, ``card``, ``order``, ``revocation``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping

import msgpack

from agentmesh.audit import AuditEvent
from agentmesh.directory.revocations import RevocationList
from agentmesh.errors import KeyNotFound, NoResponders, RequestTimeout
from agentmesh.federation.agreement import decode_revocation
from agentmesh.federation.errors import FederationError
from agentmesh.federation.membership import verify_membership
from agentmesh.federation.runtime import NodeFederation
from agentmesh.federation.status import StatusList, decode_status_list
from agentmesh.federation.store import (
    PartnerCardRecord,
    card_key,
    quarantine_key,
    revocation_key,
    status_key,
)
from agentmesh.federation.view import Partnership
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.transport.base import KeyValue
from iatp.errors import AgentMeshError
from registry.card import decode_card
from registry.revocation import BLOCKING_KINDS, RevocationKind
from registry.revocation import decode_revocation as decode_order

logger = logging.getLogger(__name__)

FEED_TYPE = "federation.feed"
FEED_VERSION = 1
MAX_FEED_ITEMS = 10_000
Item = tuple[str, bytes, str]


def encode_feed(items: list[Item]) -> bytes:
    packed: bytes = msgpack.packb([FEED_VERSION, [list(item) for item in items]], use_bin_type=True)
    return packed


def decode_feed(data: bytes) -> list[Item]:
    """Raises: FederationError: not a feed."""
    try:
        version, raw = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise FederationError("a federation feed is msgpack [1, items]") from None
    if version != FEED_VERSION or not isinstance(raw, list) or len(raw) > MAX_FEED_ITEMS:
        raise FederationError("unsupported feed version or too many items")
    items: list[Item] = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], str)
            or not isinstance(item[1], bytes)
            or not isinstance(item[2], str)
        ):
            raise FederationError("a feed item is [kind, bytes, credential]")
        items.append((item[0], item[1], item[2]))
    return items


class FederationSteward:
    """Ships this organization's facts to its partners and stores theirs (module docstring).

    Args:
        node: a started node of the organization's authority on its own mesh.
        federation: the authority node's federation (view, routes), installed on ``node``.
        bucket: the mesh's federation bucket.
        revocations: the mesh's started revocation list.
        memberships: agent DID -> membership credential this authority issued (read on
            every ship, so a callable can follow a directory of issued credentials).
        cards: the current signed card of one of our agents, encoded (None: none live).
        resync_every: seconds between full re-shipments.
    """

    def __init__(
        self,
        node: MeshNode,
        federation: NodeFederation,
        bucket: KeyValue,
        revocations: RevocationList,
        *,
        memberships: Callable[[], Mapping[str, str]],
        cards: Callable[[str], bytes | None],
        resync_every: float = 10.0,
    ) -> None:
        self.node = node
        self.federation = federation
        self.view = federation.view
        self.bucket = bucket
        self.revocations = revocations
        self.memberships = memberships
        self.cards = cards
        self.resync_every = resync_every
        self.shipped = 0
        self.stored = 0
        self.refused: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._notified: set[str] = set()
        node.handle(FEED_TYPE, self._on_feed)
        revocations.add_listener(lambda change: self._changed.set())
        self.view.add_listener(self._changed.set)

    # -- out --------------------------------------------------------------------------

    def items_for(self, partnership: Partnership) -> list[Item]:
        """What this organization ships to ``partnership``'s partner now."""
        me = self.view.organization
        items: list[Item] = []
        status = self.view.status_of(me)
        if status is not None:
            items.append(("status", status.encode(), ""))
        issued = self.memberships()
        for export in partnership.mine.exports:
            card, token = self.cards(export.agent), issued.get(export.agent)
            if card is not None and token is not None and not self._revoked(token, status):
                items.append(("card", card, token))
        for did in issued:
            for entry in self.revocations.entries(did):
                if entry.issuer == me and entry.kind in (*BLOCKING_KINDS, RevocationKind.RELEASED):
                    items.append(("order", entry.encode(), ""))
        return items

    def _revoked(self, token: str, status: StatusList | None) -> bool:
        """Whether ``token`` was revoked here or expired (then its card stays home)."""
        try:
            membership = verify_membership(token, trusted={self.view.organization: self.view.org})
        except FederationError:
            return True
        return status is not None and status.is_revoked(membership.status_index)

    async def ship(self, *, timeout: float = 2.0) -> int:
        """Send every partner in force what this organization has now; returns items sent."""
        sent = 0
        for partnership in self.view.partnerships():
            await self._send(partnership.theirs.authority, self.items_for(partnership), timeout)
            sent += 1
        for agreement in self.view.agreements():
            if not self.view.is_revoked(agreement.id) or agreement.id in self._notified:
                continue
            notice = await self.bucket.get(revocation_key(agreement.id))
            partner = agreement.other(self.view.org).authority
            with contextlib.suppress(AgentMeshError):  # the link may be cut already
                await self._send(partner, [("revocation", notice.value, "")], timeout)
                self._notified.add(agreement.id)
        return sent

    async def _send(self, partner: str, items: list[Item], timeout: float) -> None:
        if not items:
            return
        await self.node.request(partner, FEED_TYPE, encode_feed(items), timeout=timeout)
        self.shipped += len(items)

    async def run(self) -> None:
        """Ship on every change and every ``resync_every`` seconds until cancelled."""
        while True:
            self._changed.clear()
            try:
                await self.ship()
            except (NoResponders, RequestTimeout) as exc:  # the partner's steward is not up yet
                logger.info("steward: partner not answering (%s): %s", exc.code, exc)
            except AgentMeshError as exc:
                logger.warning("steward: shipping failed (%s): %s", exc.code, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.resync_every)

    async def __aenter__(self) -> FederationSteward:
        self._task = asyncio.create_task(self.run(), name="federation-steward")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- in ---------------------------------------------------------------------------

    async def _on_feed(self, message: InboundMessage) -> bytes:
        partnership = self.view.partnership(message.sender)
        if partnership is None:  # the guard let only partner authorities through
            raise FederationError(f"{message.sender} is no partner authority in force")
        stored = 0
        for kind, data, credential in decode_feed(message.body):
            try:
                key = self._check(kind, data, credential, partnership)
            except AgentMeshError as exc:
                self._refuse(exc.code, message.sender, f"{kind}: {exc}")
                continue
            value = PartnerCardRecord(data, credential).encode() if kind == "card" else data
            with contextlib.suppress(KeyNotFound):
                if (await self.bucket.get(key)).value == value:
                    continue
            await self.bucket.put(key, value)
            stored += 1
        self.stored += stored
        return msgpack.packb(stored)

    def _check(self, kind: str, data: bytes, credential: str, partnership: Partnership) -> str:
        """The bucket key for a partner's item, if it speaks for that partner only."""
        partner = partnership.theirs.authority
        if kind == "status":
            decode_status_list(data, organization=partner)
            return status_key(partner)
        if kind == "card":
            card = decode_card(data, now_ms=self.node.clock.now_ms())
            if partnership.theirs.export_for(card.did) is None:
                raise FederationError(f"{partnership.theirs.org} does not export {card.did}")
            # issued by this partner for this agent (status and expiry: every reader checks)
            if self.view.parse_membership(credential, card.did).organization != partner:
                raise FederationError("a partner ships cards of its own members only")
            return card_key(partner, card.did)
        if kind == "order":
            entry = decode_order(data)
            if entry.issuer != partner:
                raise FederationError("a partner ships only its own authority's orders")
            return quarantine_key(partner, entry.subject)
        if kind == "revocation":
            notice = decode_revocation(data, partnership.agreement)
            if notice.issuer != partner:
                raise FederationError("a partner ships only its own revocation notices")
            return revocation_key(notice.agreement_id)
        raise FederationError(f"unknown feed item kind {kind!r}")

    def _refuse(self, code: str, sender: str, detail: str) -> None:
        self.refused[code] += 1
        logger.warning("steward refused an item from %s (%s): %s", sender, code, detail)
        self.node.audit.append(
            AuditEvent(
                at_ms=self.node.clock.now_ms(),
                node=self.node.did,
                kind="federation_refused",
                code=code,
                peer=sender,
                detail=detail,
            )
        )


__all__ = ["FEED_TYPE", "FederationSteward", "decode_feed", "encode_feed"]
