"""NATS JWTs (decentralized auth, claims version 2), issued with mesh identities.

A NATS JWT is ``base64url(header).base64url(claims).base64url(signature)`` with the
header ``{"typ":"JWT","alg":"ed25519-nkey"}`` and an Ed25519 signature by the
issuer's key over the first two parts. The chain nats-server checks:

* the **operator** JWT (in the server config) names the operator's signing keys;
* an **account** JWT is signed by the operator or one of its signing keys;
* a **user** JWT is signed by the account or one of the account's signing keys
  (then ``issuer_account`` names the account), and the connecting client proves
  the user key by signing the server's nonce.

In agentmesh the mesh authority's key is both the operator's and the accounts'
signing key, and every agent's ``did:key`` key is its user key, so broker
membership and mesh membership come from one issuer and one key per agent.

Pure functions: claims in, compact token out (and back, verified).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from agentmesh.broker.errors import InvalidJWT, InvalidNkey
from agentmesh.broker.nkeys import KeyRole, decode_public, encode_public
from iatp.identity import AgentIdentity

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
CLAIMS_VERSION = 2
NO_LIMIT = -1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidJWT("a JWT part is not base64url") from exc


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class SubjectRules:
    """Allow and deny lists of one direction; deny wins (nats-server's rule)."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def to_claims(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        if self.allow:
            out["allow"] = list(self.allow)
        if self.deny:
            out["deny"] = list(self.deny)
        return out


@dataclass(frozen=True, slots=True)
class UserPermissions:
    """What one user may publish and subscribe to.

    ``responses``: how many replies the user may publish to the reply subject of
    each request it received (nats-server's ``allow_responses``); ``None`` grants
    none beyond ``publish.allow``.
    """

    publish: SubjectRules = SubjectRules()
    subscribe: SubjectRules = SubjectRules()
    responses: int | None = None


@dataclass(frozen=True, slots=True)
class UserLimits:
    """Per-connection limits the server enforces (``-1``: none)."""

    max_payload: int = NO_LIMIT
    max_subscriptions: int = NO_LIMIT
    max_data: int = NO_LIMIT


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """Account-wide limits, JetStream's included (``-1``: none; 0 storage: no JetStream)."""

    max_connections: int = NO_LIMIT
    max_subscriptions: int = NO_LIMIT
    max_payload: int = NO_LIMIT
    max_data: int = NO_LIMIT
    max_leaf_nodes: int = 0
    max_imports: int = NO_LIMIT
    max_exports: int = NO_LIMIT
    memory_storage: int = 0
    disk_storage: int = 0
    max_streams: int = NO_LIMIT
    max_consumers: int = NO_LIMIT

    def to_claims(self) -> dict[str, Any]:
        return {
            "conn": self.max_connections,
            "subs": self.max_subscriptions,
            "payload": self.max_payload,
            "data": self.max_data,
            "leaf": self.max_leaf_nodes,
            "imports": self.max_imports,
            "exports": self.max_exports,
            "wildcards": True,
            "mem_storage": self.memory_storage,
            "disk_storage": self.disk_storage,
            "streams": self.max_streams,
            "consumer": self.max_consumers,
        }


@dataclass(frozen=True, slots=True)
class ServiceExport:
    """A service (request/reply) subject an account offers to other accounts."""

    subject: str
    name: str = ""

    def to_claims(self) -> dict[str, Any]:
        return {
            "name": self.name or self.subject,
            "subject": self.subject,
            "type": "service",
            "response_type": "Singleton",
        }


@dataclass(frozen=True, slots=True)
class ServiceImport:
    """A service of ``account`` (its ``subject``) reachable here as ``local_subject``."""

    account: str
    subject: str
    local_subject: str
    name: str = ""

    def to_claims(self) -> dict[str, Any]:
        return {
            "name": self.name or self.local_subject,
            "account": self.account,
            "subject": self.subject,
            "local_subject": self.local_subject,
            "type": "service",
        }


@dataclass(frozen=True, slots=True)
class Token:
    """A verified JWT: its claims, issuer and subject keys."""

    claims: Mapping[str, Any]
    issuer: str
    subject: str
    kind: str
    raw: str = field(repr=False)

    @property
    def nats(self) -> Mapping[str, Any]:
        section = self.claims.get("nats")
        return section if isinstance(section, Mapping) else {}


def encode_jwt(
    claims: Mapping[str, Any],
    signer: AgentIdentity,
    signer_role: KeyRole,
    *,
    issued_at: int | None = None,
) -> str:
    """Sign ``claims`` (``sub``, ``name``, ``nats``, optional ``exp``) as ``signer``.

    ``iss``, ``iat`` and ``jti`` (SHA-512/256 of the claims, as the Go library
    computes it) are filled in here.
    """
    body: dict[str, Any] = dict(claims)
    body["iss"] = encode_public(signer_role, signer.public_key)
    body["iat"] = int(time.time()) if issued_at is None else issued_at
    body["jti"] = ""
    digest = hashlib.new("sha512_256", _json(body)).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = f"{_b64(_json(HEADER))}.{_b64(_json(body))}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def decode_jwt(
    token: str,
    *,
    kind: str | None = None,
    issuers: frozenset[str] | None = None,
    now: float | None = None,
) -> Token:
    """Parse and verify a NATS JWT: header, signature by ``iss``, type, issuer, expiry.

    Args:
        token: The compact JWT.
        kind: Expected ``nats.type`` (``operator``, ``account``, ``user``).
        issuers: Public nkeys allowed to have signed it (``None``: any).
        now: Unix time for the expiry check (default: the wall clock).

    Raises:
        InvalidJWT: Malformed, badly signed, of another kind or issuer, or expired.
    """
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise InvalidJWT("a JWT has three dot-separated parts")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJWT("a JWT part is not JSON") from exc
    if not isinstance(header, dict) or header.get("alg") != HEADER["alg"]:
        raise InvalidJWT("not an ed25519-nkey JWT")
    if not isinstance(claims, dict):
        raise InvalidJWT("JWT claims are not an object")
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not isinstance(issuer, str) or not isinstance(subject, str):
        raise InvalidJWT("JWT without iss or sub")
    try:
        _, raw_key = decode_public(issuer)
    except InvalidNkey as exc:
        raise InvalidJWT(f"issuer is not an nkey: {exc}") from exc
    try:
        VerifyKey(raw_key).verify(f"{parts[0]}.{parts[1]}".encode(), _unb64(parts[2]))
    except BadSignatureError:
        raise InvalidJWT("bad JWT signature") from None
    nats_section = claims.get("nats")
    found_kind = nats_section.get("type") if isinstance(nats_section, dict) else None
    if not isinstance(found_kind, str):
        raise InvalidJWT("JWT without nats.type")
    if kind is not None and found_kind != kind:
        raise InvalidJWT(f"a {found_kind} JWT, not a {kind} JWT")
    if issuers is not None and issuer not in issuers:
        raise InvalidJWT(f"issued by {issuer[:12]}..., not by an allowed signing key")
    expires = claims.get("exp")
    if isinstance(expires, int) and expires <= (time.time() if now is None else now):
        raise InvalidJWT("the JWT has expired")
    return Token(claims, issuer, subject, found_kind, token.strip())


def operator_claims(
    operator_key: str, *, name: str, signing_keys: tuple[str, ...], system_account: str
) -> dict[str, Any]:
    """Claims of the operator JWT (self-signed by the operator key)."""
    return {
        "sub": operator_key,
        "name": name,
        "nats": {
            "type": "operator",
            "version": CLAIMS_VERSION,
            "signing_keys": list(signing_keys),
            "system_account": system_account,
        },
    }


def account_claims(
    account_key: str,
    *,
    name: str,
    signing_keys: tuple[str, ...],
    limits: AccountLimits,
    revocations: Mapping[str, int] | None = None,
    exports: tuple[ServiceExport, ...] = (),
    imports: tuple[ServiceImport, ...] = (),
) -> dict[str, Any]:
    """Claims of an account JWT; ``revocations`` maps user keys to revocation times.

    nats-server disconnects a connected user as soon as it receives an account
    JWT revoking it, and refuses its JWTs issued at or before that time.
    ``exports`` and ``imports`` connect accounts of one server (federation links).
    """
    section: dict[str, Any] = {
        "type": "account",
        "version": CLAIMS_VERSION,
        "limits": limits.to_claims(),
        "signing_keys": list(signing_keys),
        "default_permissions": {"pub": {}, "sub": {}},
    }
    if revocations:
        section["revocations"] = dict(sorted(revocations.items()))
    if exports:
        section["exports"] = [e.to_claims() for e in exports]
    if imports:
        section["imports"] = [i.to_claims() for i in imports]
    return {"sub": account_key, "name": name, "nats": section}


def user_claims(
    user_key: str,
    *,
    name: str,
    issuer_account: str,
    permissions: UserPermissions,
    limits: UserLimits = UserLimits(),
    expires_at: int | None = None,
    tags: tuple[str, ...] = (),
    connection_types: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Claims of a user JWT signed by an account signing key on behalf of ``issuer_account``.

    ``connection_types`` restricts how the key may connect (e.g. ``("LEAFNODE",)``).
    """
    section: dict[str, Any] = {
        "type": "user",
        "version": CLAIMS_VERSION,
        "issuer_account": issuer_account,
        "pub": permissions.publish.to_claims(),
        "sub": permissions.subscribe.to_claims(),
        "subs": limits.max_subscriptions,
        "data": limits.max_data,
        "payload": limits.max_payload,
    }
    if permissions.responses is not None:
        section["resp"] = {"max": permissions.responses, "ttl": 0}
    if tags:
        section["tags"] = list(tags)
    if connection_types:
        section["allowed_connection_types"] = list(connection_types)
    claims: dict[str, Any] = {"sub": user_key, "name": name, "nats": section}
    if expires_at is not None:
        claims["exp"] = expires_at
    return claims


__all__ = [
    "CLAIMS_VERSION",
    "NO_LIMIT",
    "AccountLimits",
    "ServiceExport",
    "ServiceImport",
    "SubjectRules",
    "Token",
    "UserLimits",
    "UserPermissions",
    "account_claims",
    "decode_jwt",
    "encode_jwt",
    "operator_claims",
    "user_claims",
]
