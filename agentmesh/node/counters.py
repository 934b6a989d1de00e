"""Counters of what a node received, accepted, sent and rejected (by code)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class NodeCounters:
    received: int = 0
    accepted: int = 0
    sent: int = 0
    handled: int = 0
    handler_errors: int = 0
    handshakes: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    # Messages by subject kind (inbox, session, sealed, topic, reply, handshake):
    # plain dict increments, read by the metrics endpoint at scrape time.
    received_by: Counter[str] = field(default_factory=Counter)
    sent_by: Counter[str] = field(default_factory=Counter)

    def reject(self, code: str) -> None:
        self.rejected[code] += 1

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def snapshot(self) -> dict[str, object]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "sent": self.sent,
            "handled": self.handled,
            "handler_errors": self.handler_errors,
            "handshakes": self.handshakes,
            "rejected": dict(sorted(self.rejected.items())),
        }
