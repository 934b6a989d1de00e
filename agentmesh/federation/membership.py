"""Organization membership as a W3C Verifiable Credential (JWT form), checked with PyNaCl.

An organization's authority (an Ed25519 ``did:key``, the same key that signs its
NATS account) issues each of its agents a membership credential: a W3C VC in
JWT form (``proofFormat: jwt``, EdDSA), issued with didkit
(:func:`agentmesh.didkit_bridge.issue_jwt_credential`). The subject is the agent's
DID; the claims name the organization, the agent's roles and capabilities, an
expiry, and its index in the organization's status list
(:mod:`agentmesh.federation.status`).

On the hot path (every cross-org message) the credential is verified here with
PyNaCl over the very bytes didkit signed (``header.payload`` of the JWS), which
tests cross-check against didkit's own verifier: the issuer's key comes from its
``did:key``, the issuer must be a trusted organization, the subject must be the
agent that presents it, and the credential must be in its validity window and
not revoked by its issuer's status list.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from nacl.exceptions import BadSignatureError

from agentmesh.federation.errors import (
    InvalidMembership,
    MembershipRevoked,
    UntrustedOrganization,
)
from iatp.did import is_did, verify_key_for_did
from iatp.identity import AgentIdentity

MEMBERSHIP_TYPE = "AgentMembership"
STATUS_TYPE = "AgentMeshStatusList"
CONTEXT = ["https://www.w3.org/2018/credentials/v1", {"@vocab": "https://agentmesh.dev/ns#"}]
MAX_CREDENTIAL_BYTES = 8192


@dataclass(frozen=True, slots=True)
class Membership:
    """What a verified membership credential says."""

    agent: str
    organization: str
    organization_name: str
    roles: tuple[str, ...]
    capabilities: tuple[str, ...]
    expires_at: float
    status_index: int


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def membership_credential(
    *,
    organization: str,
    organization_name: str,
    agent: str,
    roles: tuple[str, ...],
    capabilities: tuple[str, ...],
    issued_at: float,
    expires_at: float,
    status_index: int,
) -> dict[str, object]:
    """The unsigned W3C credential (the didkit input)."""
    return {
        "@context": CONTEXT,
        "type": ["VerifiableCredential", MEMBERSHIP_TYPE],
        "issuer": organization,
        "issuanceDate": _iso(issued_at),
        "expirationDate": _iso(expires_at),
        "credentialSubject": {
            "id": agent,
            "organization": organization_name,
            "roles": list(roles),
            "capabilities": list(capabilities),
        },
        "credentialStatus": {
            "id": f"{organization}#status-{status_index}",
            "type": STATUS_TYPE,
            "statusListIndex": str(status_index),
        },
    }


def _unb64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidMembership("a credential part is not base64url") from exc


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidMembership(f"{what} must be a list of strings")
    return tuple(value)


def verify_membership(
    token: str,
    *,
    trusted: Mapping[str, str],
    agent: str | None = None,
    now: float | None = None,
    revoked: frozenset[int] = frozenset(),
) -> Membership:
    """Check a membership credential (JWT-VC) the way the hot path does, with PyNaCl.

    Args:
        token: The compact JWS didkit produced.
        trusted: Organization DID -> name, for the organizations whose credentials count.
        agent: The DID presenting it (must be the subject), if known.
        now: Unix time (default: the wall clock).
        revoked: Status-list indices the issuer revoked.

    Raises:
        InvalidMembership: malformed, badly signed, for another agent, not yet or
            no longer valid, or revoked (``MembershipRevoked``).
        UntrustedOrganization: issued by an organization outside ``trusted``.
    """
    if len(token) > MAX_CREDENTIAL_BYTES:
        raise InvalidMembership("membership credential is too large")
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise InvalidMembership("a membership credential is a compact JWS (three parts)")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidMembership("a credential part is not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "EdDSA":
        raise InvalidMembership("membership credentials are EdDSA JWS")
    if not isinstance(claims, dict):
        raise InvalidMembership("credential claims are not an object")
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not (isinstance(issuer, str) and is_did(issuer)):
        raise InvalidMembership("the issuer is not a did:key")
    if issuer not in trusted:
        raise UntrustedOrganization(f"{issuer} is not an organization this mesh federates with")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid.split("#", 1)[0] != issuer:
        raise InvalidMembership("the signing key is not the issuer's")
    try:
        verify_key_for_did(issuer).verify(f"{parts[0]}.{parts[1]}".encode(), _unb64(parts[2]))
    except (BadSignatureError, ValueError):  # PyNaCl raises ValueError for a wrong length
        raise InvalidMembership(f"membership credential not signed by {issuer}") from None
    credential = claims.get("vc")
    if not isinstance(credential, dict):
        raise InvalidMembership("no vc claim")
    kinds = credential.get("type")
    if not isinstance(kinds, list) or MEMBERSHIP_TYPE not in kinds:
        raise InvalidMembership(f"not an {MEMBERSHIP_TYPE} credential")
    body = credential.get("credentialSubject")
    if not isinstance(body, dict) or body.get("id") != subject or not isinstance(subject, str):
        raise InvalidMembership("the credential subject does not match sub")
    if agent is not None and subject != agent:
        raise InvalidMembership(f"the credential is {subject}'s, presented by {agent}")
    moment = time.time() if now is None else now
    expires, not_before = claims.get("exp"), claims.get("nbf", 0)
    if not (_finite(expires) and _finite(not_before)):
        raise InvalidMembership("exp and nbf must be finite numbers")
    assert isinstance(expires, int | float)
    assert isinstance(not_before, int | float)
    if moment >= expires:
        raise InvalidMembership(f"the membership of {subject} expired")
    if moment < not_before - 30:
        raise InvalidMembership(f"the membership of {subject} is not valid yet")
    status = credential.get("credentialStatus")
    try:
        index = int(status["statusListIndex"]) if isinstance(status, dict) else -1
    except (KeyError, ValueError, TypeError, OverflowError):
        index = -1
    if index < 0:
        raise InvalidMembership("the credential has no status-list index")
    organization_name = body.get("organization")
    if organization_name != trusted[issuer]:
        raise InvalidMembership(
            f"the credential names {organization_name!r}, not {trusted[issuer]!r}"
        )
    if index in revoked:
        raise MembershipRevoked(f"{trusted[issuer]} revoked the membership of {subject}")
    return Membership(
        agent=subject,
        organization=issuer,
        organization_name=trusted[issuer],
        roles=_strings(body.get("roles", []), "roles"),
        capabilities=_strings(body.get("capabilities", []), "capabilities"),
        expires_at=float(expires),
        status_index=index,
    )


async def issue_membership(
    authority: AgentIdentity,
    *,
    org: str,
    agent: str,
    status_index: int,
    roles: tuple[str, ...] = (),
    capabilities: tuple[str, ...] = (),
    lifetime_s: float = 30 * 86400,
    now: float | None = None,
) -> str:
    """``authority`` (its organization ``org``) issues ``agent`` a membership JWT-VC with didkit.

    Raises:
        InvalidMembership: ``agent`` is not a did:key, or didkit refused the credential.
    """
    if not is_did(agent) or status_index < 0 or lifetime_s <= 0:
        raise InvalidMembership("an agent did:key, a status index >= 0 and a positive lifetime")
    issued = int(time.time() if now is None else now)
    credential = membership_credential(
        organization=authority.did,
        organization_name=org,
        agent=agent,
        roles=roles,
        capabilities=capabilities,
        issued_at=issued,
        expires_at=issued + int(lifetime_s),
        status_index=status_index,
    )
    # didkit only here: verifying (every message) is PyNaCl, and processes that never
    # issue never load didkit (its resolver has crashed in interpreter teardown).
    from agentmesh.didkit_bridge import issue_jwt_credential

    try:
        return await issue_jwt_credential(credential, authority)
    except ValueError as exc:
        raise InvalidMembership(str(exc)) from None


__all__ = [
    "MEMBERSHIP_TYPE",
    "STATUS_TYPE",
    "Membership",
    "issue_membership",
    "membership_credential",
    "verify_membership",
]
