"""Follow an agent across key rotation: a verified chain of old -> new DIDs.

Each DID may hand over once. A second, different statement for an old DID is a
conflict (a stolen old key trying to redirect the agent) and is refused, and so
is a statement that would make a cycle.
"""

from __future__ import annotations

from iatp.errors import RotationError
from iatp.rotation import RotationStatement, decode_rotation
from registry.errors import RotationRejected

MAX_CHAIN = 64


def decode_rotation_entry(data: bytes) -> RotationStatement:
    """Decode and verify a stored rotation statement.

    Raises:
        RotationRejected: malformed, oversized, or not signed by both keys.
    """
    try:
        return decode_rotation(data)
    except RotationError as exc:
        raise RotationRejected(str(exc)) from None


class RotationChain:
    """Verified rotation statements, indexed both ways."""

    def __init__(self) -> None:
        self._next: dict[str, RotationStatement] = {}
        self._previous: dict[str, str] = {}

    def add(self, statement: RotationStatement) -> RotationStatement | None:
        """Add a statement already verified by :func:`iatp.rotation.verify_rotation`.

        Raises:
            RotationRejected: the old DID already handed over to another key, the new
                DID already has a predecessor, or the statement closes a cycle.
        """
        known = self._next.get(statement.old_did)
        if known is not None:
            if known == statement:
                return None
            raise RotationRejected(
                f"{statement.old_did} already rotated to {known.new_did}", did=statement.old_did
            )
        if statement.new_did in self._previous:
            raise RotationRejected(
                f"{statement.new_did} already succeeds another key", did=statement.new_did
            )
        if statement.old_did in self.successors_chain(statement.new_did):
            raise RotationRejected("rotation would close a cycle", did=statement.old_did)
        self._next[statement.old_did] = statement
        self._previous[statement.new_did] = statement.old_did
        return statement

    def current(self, did: str) -> str:
        """The newest DID of the agent that once used ``did``."""
        chain = self.successors_chain(did)
        return chain[-1] if chain else did

    def successors_chain(self, did: str) -> list[str]:
        """Every later DID of ``did``'s agent, oldest first."""
        chain: list[str] = []
        while (statement := self._next.get(did)) is not None and len(chain) < MAX_CHAIN:
            did = statement.new_did
            chain.append(did)
        return chain

    def predecessors(self, did: str) -> list[str]:
        """Every earlier DID of ``did``'s agent, newest first."""
        chain: list[str] = []
        while (old := self._previous.get(did)) is not None and len(chain) < MAX_CHAIN:
            chain.append(old)
            did = old
        return chain

    def rotated_away(self) -> frozenset[str]:
        """Every DID that handed over to a newer key."""
        return frozenset(self._next)

    def statement_from(self, old_did: str) -> RotationStatement | None:
        return self._next.get(old_did)


__all__ = ["MAX_CHAIN", "RotationChain", "decode_rotation_entry"]
