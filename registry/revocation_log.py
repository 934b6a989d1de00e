"""Each issuer's revocations as an append-only, hash-chained log with a signed head.

Entries (:mod:`registry.revocation`) say what happened to an agent; the log says
*how many* entries an issuer made and commits to all of them, so that an entry
removed from a store (a KV delete or purge, a stream purge) is noticed by every
node that reads the store later, instead of silently lifting a revocation.

An issuer's ``i``-th entry (1-based; its index is part of the store key) extends
the chain::

    c_0 = SHA-256("agentmesh/1/revocation-chain\\x00" || issuer DID)
    c_i = SHA-256(c_{i-1} || SHA-256(encoded entry i))

and the issuer signs a head over the newest link::

    claim     = msgpack([issuer, count, c_count, issued_at_ms])
    signature = Ed25519_issuer("agentmesh/1/revocation-head\\x00" || claim)
    encoded   = msgpack([issuer, count, c_count, issued_at_ms, signature])

A reader that holds a head with ``count = n`` checks that it has entries 1..n of
that issuer and that they hash to ``c_n``: a missing entry, or entries moved to
other indices or replaced, fail the check (:meth:`IssuerLog.check`). The order
of the entries themselves needs no protection beyond that: how a subject's
entries combine is decided by their signed fields, not by arrival order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import msgpack
from nacl.exceptions import BadSignatureError

from iatp.did import is_did, verify_key_for_did
from iatp.identity import AgentIdentity
from registry.errors import InvalidRevocation, RevocationSignatureInvalid
from registry.revocation import RevocationEntry

CHAIN_DOMAIN = b"agentmesh/1/revocation-chain\x00"
HEAD_DOMAIN = b"agentmesh/1/revocation-head\x00"
MAX_HEAD_BYTES = 512
_U63 = 2**63


def chain_start(issuer: str) -> bytes:
    """``c_0`` of ``issuer``'s chain."""
    return hashlib.sha256(CHAIN_DOMAIN + issuer.encode()).digest()


def chain_link(previous: bytes, entry: RevocationEntry) -> bytes:
    """``c_i`` from ``c_{i-1}`` and entry ``i``."""
    return hashlib.sha256(previous + hashlib.sha256(entry.encode()).digest()).digest()


@dataclass(frozen=True, slots=True)
class RevocationHead:
    """``issuer`` says it made ``count`` entries, chaining to ``chain_hash``."""

    issuer: str
    count: int
    chain_hash: bytes
    issued_at_ms: int
    signature: bytes

    def claim_bytes(self) -> bytes:
        return msgpack.packb(
            [self.issuer, self.count, self.chain_hash, self.issued_at_ms], use_bin_type=True
        )

    def encode(self) -> bytes:
        return msgpack.packb(
            [self.issuer, self.count, self.chain_hash, self.issued_at_ms, self.signature],
            use_bin_type=True,
        )


def sign_head(
    issuer: AgentIdentity, *, count: int, chain_hash: bytes, issued_at_ms: int
) -> RevocationHead:
    """The head of ``issuer``'s log after ``count`` entries."""
    unsigned = RevocationHead(issuer.did, count, chain_hash, issued_at_ms, b"")
    return RevocationHead(
        issuer.did,
        count,
        chain_hash,
        issued_at_ms,
        issuer.sign(HEAD_DOMAIN + unsigned.claim_bytes()),
    )


def decode_head(data: bytes) -> RevocationHead:
    """Parse a head and check its issuer's signature.

    Raises:
        InvalidRevocation: malformed or not canonical.
        RevocationSignatureInvalid: not signed by its issuer.
    """
    if len(data) > MAX_HEAD_BYTES:
        raise InvalidRevocation("revocation head is too large")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise InvalidRevocation("revocation head is not valid msgpack") from None
    if not isinstance(fields, list) or len(fields) != 5:
        raise InvalidRevocation("revocation head must be an array of 5 fields")
    issuer, count, chain_hash, at, signature = fields
    if not (
        isinstance(issuer, str)
        and is_did(issuer)
        and type(count) is int
        and 0 <= count < _U63
        and isinstance(chain_hash, bytes)
        and len(chain_hash) == 32
        and type(at) is int
        and 0 <= at < _U63
        and isinstance(signature, bytes)
    ):
        raise InvalidRevocation("revocation head has a field of the wrong type")
    head = RevocationHead(issuer, count, chain_hash, at, signature)
    if head.encode() != data:
        raise InvalidRevocation("revocation head is not canonically encoded")
    try:
        verify_key_for_did(issuer).verify(HEAD_DOMAIN + head.claim_bytes(), signature)
    except (BadSignatureError, ValueError):
        raise RevocationSignatureInvalid(f"revocation head not signed by {issuer}") from None
    return head


@dataclass
class IssuerLog:
    """The entries of one issuer seen so far, by index, and the newest head."""

    issuer: str
    entries: dict[int, RevocationEntry] = field(default_factory=dict)
    head: RevocationHead | None = None

    def add(self, index: int, entry: RevocationEntry) -> bool:
        """Record entry ``index``; False if that index already holds another entry."""
        known = self.entries.get(index)
        if known is not None and known != entry:
            return False
        self.entries[index] = entry
        return True

    def offer_head(self, head: RevocationHead) -> bool:
        """Keep ``head`` if it is newer (more entries) than the known one."""
        if self.head is None or head.count > self.head.count:
            self.head = head
            return True
        return False

    @property
    def next_index(self) -> int:
        """The index a new entry of this issuer would take (as far as this reader knows)."""
        known = max(self.entries, default=0)
        return max(known, self.head.count if self.head else 0) + 1

    def chain_hash(self, count: int) -> bytes | None:
        """``c_count`` from the entries held, or None if one of 1..count is missing."""
        link = chain_start(self.issuer)
        for index in range(1, count + 1):
            entry = self.entries.get(index)
            if entry is None:
                return None
            link = chain_link(link, entry)
        return link

    def check(self) -> str | None:
        """None if the entries match the newest head; else what is wrong, in words."""
        if self.head is None:
            return None
        missing = [i for i in range(1, self.head.count + 1) if i not in self.entries]
        if missing:
            shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
            return (
                f"{len(missing)} of {self.head.count} entries of {self.issuer} are missing "
                f"(index {shown})"
            )
        if self.chain_hash(self.head.count) != self.head.chain_hash:
            return f"entries of {self.issuer} were replaced or moved: the chain does not match"
        return None


__all__ = [
    "CHAIN_DOMAIN",
    "HEAD_DOMAIN",
    "IssuerLog",
    "RevocationHead",
    "chain_link",
    "chain_start",
    "decode_head",
    "sign_head",
]
