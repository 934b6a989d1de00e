"""Signed revocation, quarantine and release entries, and who may issue them.

Signing input (canonical ``msgpack``, like rotation statements)::

    claim     = msgpack([subject, kind, issuer, reason, issued_at_ms, sequence])
    signature = Ed25519_issuer("agentmesh/1/revocation\\x00" || claim)
    encoded   = msgpack([subject, kind, issuer, reason, issued_at_ms, sequence, signature])

Who may issue what (:class:`RevocationAuthorities`):

- a configured **mesh authority**: any kind about any agent;
- the subject's **organization authority** (configured membership): any kind;
- the **subject itself**: ``revoked`` (key compromise) or ``quarantined``, never
  ``released`` (an agent cannot lift its own quarantine).

:class:`RevocationLedger` folds the entries about one subject into its status,
independent of arrival order: any valid ``revoked`` entry is final; otherwise the
newest of ``quarantined``/``released`` (by issue time, then sequence; a tie
quarantines) decides.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import msgpack
from nacl.exceptions import BadSignatureError

from iatp.did import verify_key_for_did
from iatp.errors import InvalidDID
from iatp.identity import AgentIdentity
from registry.errors import (
    InvalidRevocation,
    RevocationSignatureInvalid,
    UnauthorizedRevocation,
)

REVOCATION_DOMAIN = b"agentmesh/1/revocation\x00"
MAX_REVOCATION_BYTES = 1024
MAX_REASON_CHARS = 256
_U63 = 2**63


class RevocationKind(enum.StrEnum):
    """What an entry says about its subject."""

    REVOKED = "revoked"
    QUARANTINED = "quarantined"
    RELEASED = "released"


BLOCKING_KINDS = frozenset({RevocationKind.REVOKED, RevocationKind.QUARANTINED})


@dataclass(frozen=True, slots=True)
class RevocationEntry:
    """One signed statement about ``subject``, issued by ``issuer``."""

    subject: str
    kind: RevocationKind
    issuer: str
    reason: str
    issued_at_ms: int
    sequence: int
    signature: bytes

    def claim_bytes(self) -> bytes:
        return _claim(
            self.subject, self.kind, self.issuer, self.reason, self.issued_at_ms, self.sequence
        )

    def encode(self) -> bytes:
        """The canonical wire form (what stores hold)."""
        return msgpack.packb(
            [
                self.subject,
                self.kind.value,
                self.issuer,
                self.reason,
                self.issued_at_ms,
                self.sequence,
                self.signature,
            ],
            use_bin_type=True,
        )

    @property
    def entry_id(self) -> str:
        """A stable 32-hex-digit id of this exact entry (a store key)."""
        return hashlib.sha256(self.encode()).hexdigest()[:32]

    @property
    def order(self) -> tuple[int, int, int]:
        """Sort key among quarantine/release entries; on a tie, quarantine wins."""
        return (self.issued_at_ms, self.sequence, int(self.kind is not RevocationKind.RELEASED))


def _claim(
    subject: str, kind: RevocationKind, issuer: str, reason: str, issued_at_ms: int, sequence: int
) -> bytes:
    return msgpack.packb(
        [subject, kind.value, issuer, reason, issued_at_ms, sequence], use_bin_type=True
    )


def _check_fields(subject: str, issuer: str, reason: str, issued_at_ms: int, sequence: int) -> None:
    if not (type(sequence) is int and 0 <= sequence < _U63):
        raise InvalidRevocation("sequence must be a non-negative 64-bit integer", did=subject)
    if not (type(issued_at_ms) is int and 0 <= issued_at_ms < _U63):
        raise InvalidRevocation("issued_at_ms must be a non-negative 64-bit integer", did=subject)
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidRevocation(f"reason is longer than {MAX_REASON_CHARS} characters")
    for what, did in (("subject", subject), ("issuer", issuer)):
        try:
            verify_key_for_did(did)
        except InvalidDID as exc:
            raise InvalidRevocation(f"{what} is not a valid did:key: {exc.reason}") from None


def sign_revocation(
    issuer: AgentIdentity,
    *,
    subject: str,
    kind: RevocationKind,
    reason: str,
    issued_at_ms: int,
    sequence: int,
) -> RevocationEntry:
    """A ``kind`` entry about ``subject``, signed by ``issuer``.

    Raises:
        InvalidRevocation: a field is out of range or a DID is malformed.
    """
    kind = RevocationKind(kind)
    _check_fields(subject, issuer.did, reason, issued_at_ms, sequence)
    claim = _claim(subject, kind, issuer.did, reason, issued_at_ms, sequence)
    signature = issuer.sign(REVOCATION_DOMAIN + claim)
    return RevocationEntry(subject, kind, issuer.did, reason, issued_at_ms, sequence, signature)


@dataclass(frozen=True, slots=True)
class RevocationAuthorities:
    """Who may issue entries besides the subject itself.

    Attributes:
        mesh: DIDs of mesh authorities (may issue anything about anyone).
        organizations: organization authority DID -> DIDs of its member agents
            (taken from configuration or verified membership credentials, never
            from the agent's own, self-signed card).
    """

    mesh: frozenset[str] = frozenset()
    organizations: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def role(self, issuer: str, subject: str, kind: RevocationKind) -> str | None:
        """``"mesh"``, ``"organization"`` or ``"self"``; ``None`` when not allowed."""
        if issuer in self.mesh:
            return "mesh"
        if subject in self.organizations.get(issuer, frozenset()):
            return "organization"
        if issuer == subject and kind is not RevocationKind.RELEASED:
            return "self"
        return None


def verify_revocation(entry: RevocationEntry, authorities: RevocationAuthorities) -> None:
    """Check fields, the issuer's signature and the issuer's authority.

    Raises:
        InvalidRevocation: a field is malformed or out of range.
        RevocationSignatureInvalid: the signature does not verify under the issuer's key.
        UnauthorizedRevocation: the issuer may not issue this kind about this subject.
    """
    if not isinstance(entry.kind, RevocationKind) or not isinstance(entry.signature, bytes):
        raise InvalidRevocation("kind or signature has the wrong type", did=entry.subject)
    _check_fields(entry.subject, entry.issuer, entry.reason, entry.issued_at_ms, entry.sequence)
    key = verify_key_for_did(entry.issuer)
    try:
        key.verify(REVOCATION_DOMAIN + entry.claim_bytes(), entry.signature)
    except (BadSignatureError, ValueError, TypeError):
        raise RevocationSignatureInvalid(
            f"{entry.kind.value} entry about {entry.subject} is not signed by {entry.issuer}",
            did=entry.subject,
        ) from None
    if authorities.role(entry.issuer, entry.subject, entry.kind) is None:
        raise UnauthorizedRevocation(
            f"{entry.issuer} may not issue {entry.kind.value!r} about {entry.subject}",
            did=entry.subject,
        )


def decode_revocation(data: bytes) -> RevocationEntry:
    """Parse a canonically encoded entry (the signature is checked by :func:`verify_revocation`).

    Raises:
        InvalidRevocation: oversized, not msgpack, wrong shape or types, unknown
            kind, or not canonically encoded.
    """
    if len(data) > MAX_REVOCATION_BYTES:
        raise InvalidRevocation(f"entry is larger than {MAX_REVOCATION_BYTES} bytes")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise InvalidRevocation("entry is not valid msgpack") from None
    if not isinstance(fields, list) or len(fields) != 7:
        raise InvalidRevocation("entry must be an array of 7 fields")
    subject, kind, issuer, reason, at, seq, signature = fields
    types_ok = (
        isinstance(subject, str)
        and isinstance(kind, str)
        and isinstance(issuer, str)
        and isinstance(reason, str)
        and type(at) is int
        and type(seq) is int
        and isinstance(signature, bytes)
    )
    if not types_ok:
        raise InvalidRevocation("entry has a field of the wrong type")
    try:
        parsed_kind = RevocationKind(kind)
    except ValueError:
        raise InvalidRevocation(f"unknown kind {kind[:32]!r}") from None
    entry = RevocationEntry(subject, parsed_kind, issuer, reason, at, seq, signature)
    if entry.encode() != data:
        raise InvalidRevocation("entry is not canonically encoded")
    return entry


class RevocationLedger:
    """Verified entries per subject, folded into a status (arrival order does not matter)."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, RevocationEntry]] = {}
        self._status: dict[str, RevocationKind] = {}
        self._quarantined: set[str] = set()

    def add(self, entry: RevocationEntry) -> bool:
        """Record a verified entry; ``True`` when the subject's status changed."""
        known = self._entries.setdefault(entry.subject, {})
        if entry.entry_id in known:
            return False
        known[entry.entry_id] = entry
        before = self._status.get(entry.subject)
        after = _fold(known.values())
        if after is None:
            self._status.pop(entry.subject, None)
        else:
            self._status[entry.subject] = after
        if after is RevocationKind.QUARANTINED:
            self._quarantined.add(entry.subject)
        else:
            self._quarantined.discard(entry.subject)
        return before is not after

    @property
    def any_quarantined(self) -> bool:
        """Whether any subject is quarantined now (lets readers skip rotation lookups)."""
        return bool(self._quarantined)

    def status(self, did: str) -> RevocationKind | None:
        """``revoked``, ``quarantined``, ``released`` (lifted), or ``None`` (never listed)."""
        return self._status.get(did)

    def entries(self, did: str) -> list[RevocationEntry]:
        """Entries about ``did``, oldest first."""
        return sorted(self._entries.get(did, {}).values(), key=lambda e: e.order)

    def subjects(self) -> dict[str, RevocationKind]:
        """Every listed subject and its status."""
        return dict(self._status)


def _fold(entries: Iterable[RevocationEntry]) -> RevocationKind | None:
    newest: RevocationEntry | None = None
    for entry in entries:
        if entry.kind is RevocationKind.REVOKED:
            return RevocationKind.REVOKED
        if newest is None or entry.order > newest.order:
            newest = entry
    return newest.kind if newest is not None else None


__all__ = [
    "BLOCKING_KINDS",
    "MAX_REVOCATION_BYTES",
    "REVOCATION_DOMAIN",
    "RevocationAuthorities",
    "RevocationEntry",
    "RevocationKind",
    "RevocationLedger",
    "decode_revocation",
    "sign_revocation",
    "verify_revocation",
]
