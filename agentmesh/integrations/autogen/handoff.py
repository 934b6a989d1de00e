"""Work asked of a host that has not said it is done: handed to a standby when the host is stopped.

A publish to an agent type's own topic (an AgentChat team's "your turn") names
the host that should act (``ag_primary``); standby hosts of the same type receive
it too (they keep the conversation) but do not act. The primary answers a signed
``autogen.~done`` once its agent handled the message. Until then the publisher
keeps the message here; when the kill switch quarantines the primary, the
runtime publishes it again naming the next admissible host, which acts on it
with the context it kept. Bounded: the oldest entries go first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class PendingPublish:
    """A publish awaiting its primary's ``done``: enough to send it again."""

    message_id: str
    agent_type: str
    primary: str
    signer: str
    message_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Handoff:
    """``message_id`` of ``agent_type`` moved from ``from_did`` to ``to_did`` (None: nobody)."""

    message_id: str
    agent_type: str
    from_did: str
    to_did: str | None
    reason: str


class PendingWork:
    """Pending publishes by message id (insertion order, at most ``capacity``)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, PendingPublish] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    def track(self, item: PendingPublish) -> None:
        self._items[item.message_id] = item
        self._items.move_to_end(item.message_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
            self.evicted += 1

    def done(self, message_id: str, did: str) -> bool:
        """The primary ``did`` finished ``message_id``; only the current primary counts."""
        item = self._items.get(message_id)
        if item is None or item.primary != did:
            return False
        del self._items[message_id]
        return True

    def of_host(self, did: str) -> list[PendingPublish]:
        """What ``did`` was asked to do and has not finished, oldest first."""
        return [item for item in self._items.values() if item.primary == did]

    def reassign(self, item: PendingPublish, primary: str) -> PendingPublish:
        moved = replace(item, primary=primary)
        self._items[item.message_id] = moved
        return moved

    def drop(self, message_id: str) -> None:
        self._items.pop(message_id, None)


__all__ = ["Handoff", "PendingPublish", "PendingWork"]
