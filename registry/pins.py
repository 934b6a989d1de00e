"""Capability pins: rug-pull detection by trust on first use.

The first time a node sees ``(agent, capability name, version)`` it pins the
descriptor's fingerprint (:meth:`registry.card.Capability.fingerprint`). A later
card that changes the descriptor under the same name and version is a *drift*:
the agent is held until someone re-approves it (which re-pins the new
fingerprints). A new version, or a new capability name, is not a drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.card import AgentCard

PinKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class CapabilityDriftEvent:
    """``did`` changed ``name@version``'s descriptor from ``pinned`` to ``seen``."""

    did: str
    name: str
    version: str
    pinned: str
    seen: str


class CapabilityPins:
    """Pinned fingerprints per (DID, name, version) and the set of held agents."""

    def __init__(self) -> None:
        self._pins: dict[PinKey, str] = {}
        self._held: dict[str, list[CapabilityDriftEvent]] = {}

    def pin(self, did: str, name: str, version: str, fingerprint: str) -> None:
        """Record a pin (from a store, or after an approval); an existing pin is replaced."""
        self._pins[(did, name, version)] = fingerprint

    def pinned(self, did: str, name: str, version: str) -> str | None:
        return self._pins.get((did, name, version))

    def observe(self, card: AgentCard) -> tuple[list[PinKey], list[CapabilityDriftEvent]]:
        """Compare ``card`` with the pins: (new pins to record, drifts found).

        New pins are recorded here too; drifts hold the agent until :meth:`approve`.
        """
        new: list[PinKey] = []
        drifts: list[CapabilityDriftEvent] = []
        for capability in card.capabilities:
            key = (card.did, capability.name, capability.version)
            seen = capability.fingerprint()
            pinned = self._pins.get(key)
            if pinned is None:
                self._pins[key] = seen
                new.append(key)
            elif pinned != seen:
                drifts.append(
                    CapabilityDriftEvent(
                        card.did, capability.name, capability.version, pinned, seen
                    )
                )
        if drifts:
            self._held[card.did] = drifts
        else:
            self._held.pop(card.did, None)
        return new, drifts

    def approve(self, card: AgentCard) -> list[PinKey]:
        """Re-pin every capability of ``card`` as it is now and release the hold."""
        keys = []
        for capability in card.capabilities:
            key = (card.did, capability.name, capability.version)
            self._pins[key] = capability.fingerprint()
            keys.append(key)
        self._held.pop(card.did, None)
        return keys

    def is_held(self, did: str) -> bool:
        return did in self._held

    def drifts(self, did: str) -> list[CapabilityDriftEvent]:
        return list(self._held.get(did, ()))

    def held(self) -> list[str]:
        return sorted(self._held)


__all__ = ["CapabilityDriftEvent", "CapabilityPins", "PinKey"]
