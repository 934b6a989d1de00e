"""Rings and their capabilities: the ring enforcer.

Rings: 0 = the node's own kernel (never an agent), 1 = privileged, 2 = standard,
3 = sandbox. An agent's base ring is the *most restrictive* (highest) ring any
:class:`RingSource` gives it (the trust engine, credentials, policy caps), and it
is read on every check, so a demotion applies from the very next message.

A temporary elevation is a signed :class:`ElevationGrant` from an authority
(a DID the enforcer is configured with), bounded in time; granting, refusing
and expiring elevations are audited. Ring 0 can never be granted.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from nacl.exceptions import BadSignatureError

from agentmesh.audit import AuditEvent, AuditSink
from agentmesh.policy.compiler import PatternSet
from agentmesh.policy.errors import ElevationError, RingDenied
from iatp.clock import Clock, SystemClock
from iatp.did import verify_key_for_did
from iatp.errors import InvalidDID
from iatp.identity import AgentIdentity

KERNEL_RING = 0
SANDBOX_RING = 3
ELEVATION_DOMAIN = b"agentmesh/1/ring-elevation\x00"
DEFAULT_MAX_ELEVATION_MS = 3_600_000


@runtime_checkable
class RingSource(Protocol):
    """Anything that knows an agent's ring (``trust.TrustEngine`` is one)."""

    def ring(self, did: str) -> int: ...


class StaticRings:
    """A dict-backed :class:`RingSource` (policy caps, tests); unknown agents get ``default``."""

    def __init__(self, rings: Mapping[str, int] | None = None, *, default: int = SANDBOX_RING):
        self._rings = dict(rings or {})
        self.default = default

    def ring(self, did: str) -> int:
        return self._rings.get(did, self.default)

    def set(self, did: str, ring: int) -> None:
        if not KERNEL_RING <= ring <= SANDBOX_RING:
            raise ValueError("rings are 0..3")
        self._rings[did] = ring


@dataclass(frozen=True, slots=True)
class ElevationGrant:
    """An authority's signed statement: ``subject`` may act in ``ring`` until ``expires_at_ms``."""

    subject: str
    ring: int
    authority: str
    issued_at_ms: int
    expires_at_ms: int
    reason: str
    signature: bytes = b""

    def signing_bytes(self) -> bytes:
        body = [
            self.subject,
            self.ring,
            self.authority,
            self.issued_at_ms,
            self.expires_at_ms,
            self.reason,
        ]
        return ELEVATION_DOMAIN + json.dumps(body, separators=(",", ":")).encode()


def sign_elevation(
    authority: AgentIdentity,
    *,
    subject: str,
    ring: int,
    issued_at_ms: int,
    expires_at_ms: int,
    reason: str,
) -> ElevationGrant:
    """Sign an elevation grant with the authority's key."""
    unsigned = ElevationGrant(subject, ring, authority.did, issued_at_ms, expires_at_ms, reason)
    signature = authority.sign(unsigned.signing_bytes())
    return ElevationGrant(
        subject, ring, authority.did, issued_at_ms, expires_at_ms, reason, signature
    )


class RingEnforcer:
    """Decides whether an agent's current ring holds a capability.

    Args:
        sources: ring sources; the highest (most restrictive) ring wins.
        capabilities: ring -> capability patterns (globs) allowed in that ring.
            Lower rings do NOT inherit automatically: list what each ring may do.
        authorities: DIDs whose signed grants may elevate an agent.
        clock: wall clock for elevation expiry.
        audit: where elevation and denial events go.
        node: the DID recorded as ``node`` in audit events.
        max_elevation_ms: the longest elevation accepted.
    """

    def __init__(
        self,
        sources: Sequence[RingSource],
        capabilities: Mapping[int, Iterable[str]],
        *,
        authorities: Iterable[str] = (),
        clock: Clock | None = None,
        audit: AuditSink | None = None,
        node: str = "",
        max_elevation_ms: int = DEFAULT_MAX_ELEVATION_MS,
    ) -> None:
        if not sources:
            raise ValueError("a ring enforcer needs at least one ring source")
        self._sources = tuple(sources)
        self._capabilities = {ring: PatternSet(c) for ring, c in capabilities.items()}
        self.authorities = frozenset(authorities)
        self._clock = clock or SystemClock()
        self._audit = audit
        self._node = node
        self._max_elevation_ms = max_elevation_ms
        self._elevations: dict[str, ElevationGrant] = {}
        self._lock = threading.Lock()
        # Elevation events by code (elevated, elevation_refused, elevation_ended,
        # elevation_expired): read by the metrics endpoint.
        self.events: Counter[str] = Counter()

    def set_capabilities(self, capabilities: Mapping[int, Iterable[str]]) -> None:
        """Replace the capability table (a policy reload); applies from the next check."""
        self._capabilities = {ring: PatternSet(c) for ring, c in capabilities.items()}

    def base_ring(self, did: str) -> int:
        sources = self._sources
        if len(sources) == 1:
            ring = sources[0].ring(did)
        else:
            ring = max(source.ring(did) for source in sources)
        return max(ring, 1) if ring <= KERNEL_RING else min(ring, SANDBOX_RING)

    def ring(self, did: str) -> int:
        """The effective ring now: the base ring, or an unexpired elevation if lower."""
        ring = self.base_ring(did)
        grant = self._elevations.get(did)
        if grant is not None:
            if self._clock.now_ms() >= grant.expires_at_ms:
                with self._lock:
                    if self._elevations.get(did) is grant:
                        del self._elevations[did]
                self._record("elevation_expired", did, f"ring {grant.ring} ended")
            elif grant.ring < ring:
                return grant.ring
        return ring

    def allows(self, ring: int, capability: str) -> bool:
        patterns = self._capabilities.get(ring)
        return patterns is not None and patterns.matches(capability)

    def check(self, did: str, capability: str) -> int:
        """Return the agent's ring if it holds ``capability``.

        Raises:
            RingDenied: with the ring and the capability.
        """
        return self.require(did, self.ring(did), capability)

    def require(self, did: str, ring: int, capability: str) -> int:
        """Return ``ring`` if it holds ``capability`` (``ring`` already looked up: :meth:`ring`).

        Raises:
            RingDenied: with the ring and the capability.
        """
        patterns = self._capabilities.get(ring)
        if patterns is None or not patterns.matches(capability):
            raise RingDenied(
                f"ring {ring} does not allow {capability!r}",
                did=did,
                ring=ring,
                action=capability,
                rule=f"ring-{ring}",
            )
        return ring

    def elevate(self, grant: ElevationGrant) -> None:
        """Apply a signed temporary elevation (audited whether accepted or refused).

        Raises:
            ElevationError: unknown authority, bad signature, ring 0, or a bad expiry.
        """
        now = self._clock.now_ms()
        problem = self._grant_problem(grant, now)
        if problem:
            self._record("elevation_refused", grant.subject, f"{problem} ({grant.authority})")
            raise ElevationError(f"elevation of {grant.subject} refused: {problem}")
        with self._lock:
            self._elevations[grant.subject] = grant
        self._record(
            "elevated",
            grant.subject,
            f"ring {grant.ring} until {grant.expires_at_ms} by {grant.authority}: {grant.reason}",
        )

    def end_elevation(self, did: str) -> bool:
        """Drop ``did``'s elevation now; audited. Returns whether there was one."""
        with self._lock:
            grant = self._elevations.pop(did, None)
        if grant is not None:
            self._record("elevation_ended", did, f"ring {grant.ring} ended early")
        return grant is not None

    def _grant_problem(self, grant: ElevationGrant, now: int) -> str:
        if grant.authority not in self.authorities:
            return "the grantor is not an authority"
        if not KERNEL_RING < grant.ring <= SANDBOX_RING:
            return f"ring {grant.ring} cannot be granted (1..3 only)"
        if not grant.issued_at_ms <= now < grant.expires_at_ms:
            return "the grant is not valid now"
        if grant.expires_at_ms - grant.issued_at_ms > self._max_elevation_ms:
            return f"longer than {self._max_elevation_ms} ms"
        try:
            verify_key_for_did(grant.authority).verify(grant.signing_bytes(), grant.signature)
        except (BadSignatureError, InvalidDID, ValueError):
            return "bad signature"
        return ""

    def _record(self, code: str, did: str, detail: str) -> None:
        self.events[code] += 1
        if self._audit is not None:
            self._audit.append(
                AuditEvent(
                    at_ms=self._clock.now_ms(),
                    node=self._node,
                    kind="ring",
                    code=code,
                    peer=did,
                    detail=detail[:300],
                )
            )


__all__ = [
    "ELEVATION_DOMAIN",
    "KERNEL_RING",
    "SANDBOX_RING",
    "ElevationGrant",
    "RingEnforcer",
    "RingSource",
    "StaticRings",
    "sign_elevation",
]
