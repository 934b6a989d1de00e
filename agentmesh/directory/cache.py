"""The local card cache: verified cards indexed by DID and by capability.

Fed only by the directory's watch (every card in it passed
:func:`registry.card.decode_card`), read on every lookup without touching the
network. Expiry is checked at read time against the caller's ``now_ms``.
"""

from __future__ import annotations

from collections.abc import Callable

from registry.card import AgentCard

Rank = Callable[[str], float]


class CardCache:
    """DID -> card, and capability name -> cards sorted by DID (rebuilt lazily)."""

    def __init__(self) -> None:
        self._cards: dict[str, AgentCard] = {}
        self._by_capability: dict[str, dict[str, AgentCard]] = {}
        self._sorted: dict[str, tuple[AgentCard, ...]] = {}

    def __len__(self) -> int:
        return len(self._cards)

    def get(self, did: str) -> AgentCard | None:
        return self._cards.get(did)

    def all(self) -> list[AgentCard]:
        return [self._cards[did] for did in sorted(self._cards)]

    def put(self, card: AgentCard) -> AgentCard | None:
        """Insert or replace ``card``; returns the card it replaced."""
        old = self._cards.get(card.did)
        if old is not None:
            self._unindex(old)
        self._cards[card.did] = card
        for name in {c.name for c in card.capabilities}:
            self._by_capability.setdefault(name, {})[card.did] = card
            self._sorted.pop(name, None)
        return old

    def remove(self, did: str) -> AgentCard | None:
        old = self._cards.pop(did, None)
        if old is not None:
            self._unindex(old)
        return old

    def _unindex(self, card: AgentCard) -> None:
        for name in {c.name for c in card.capabilities}:
            holders = self._by_capability.get(name)
            if holders is not None:
                holders.pop(card.did, None)
                if not holders:
                    del self._by_capability[name]
            self._sorted.pop(name, None)

    def candidates(self, name: str) -> tuple[AgentCard, ...]:
        """Cards offering ``name`` (any version), sorted by DID."""
        ordered = self._sorted.get(name)
        if ordered is None:
            holders = self._by_capability.get(name, {})
            ordered = tuple(holders[did] for did in sorted(holders))
            self._sorted[name] = ordered
        return ordered

    def find(
        self,
        name: str,
        *,
        now_ms: int,
        version: str | None = None,
        excluded: Callable[[str], bool] | None = None,
        rank: Rank | None = None,
    ) -> list[AgentCard]:
        """Live cards offering ``name`` (at ``version``), not ``excluded``, best ``rank`` first.

        Without ``rank`` the order is by DID; with it, higher scores first and DID
        order among equals (``sorted`` is stable).
        """
        found = [
            card
            for card in self.candidates(name)
            if now_ms < card.expires_at_ms
            and (excluded is None or not excluded(card.did))
            and (version is None or card.capability(name, version) is not None)
        ]
        if rank is not None:
            found.sort(key=lambda card: rank(card.did), reverse=True)
        return found

    def expired(self, now_ms: int) -> list[AgentCard]:
        return [card for card in self._cards.values() if now_ms >= card.expires_at_ms]
