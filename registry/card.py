"""Agent cards: what an agent says about itself, signed by its own key.

A card is a pydantic model, encoded as canonical JSON (sorted keys, no spaces,
UTF-8). Signing input::

    Ed25519_did("agentmesh/1/card\\x00" || canonical_json(card without "signature"))

``signature`` is the hex of the 64-byte signature. :func:`decode_card` is the only
way a card comes back from bytes, and it checks everything every time: size,
fields, the signature under the key the card's DID names, the DID it is expected
to name, and the validity window against the reader's clock.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated

from nacl.exceptions import BadSignatureError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
)

from iatp.did import is_did, verify_key_for_did
from iatp.identity import AgentIdentity
from registry.errors import (
    CardDIDMismatch,
    CardExpired,
    CardIssuedInFuture,
    CardSignatureInvalid,
    InvalidCard,
    OversizedCard,
)

CARD_DOMAIN = b"agentmesh/1/card\x00"
MAX_CARD_BYTES = 16 * 1024
MAX_CAPABILITIES = 64
MAX_CARD_LIFETIME_MS = 24 * 3600 * 1000
DEFAULT_CLOCK_SKEW_MS = 30_000

_CAPABILITY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]{0,31}\Z")
_SUBJECT = re.compile(r"[A-Za-z0-9_=-]+(\.[A-Za-z0-9_=-]+){0,15}\Z")


def _did(value: str) -> str:
    if not is_did(value):
        raise ValueError("not an Ed25519 did:key")
    return value


def _pattern(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.match(value):
            raise ValueError(f"{what} does not match {regex.pattern}")
        return value

    return AfterValidator(check)


DID = Annotated[str, AfterValidator(_did)]
CapabilityName = Annotated[str, _pattern(_CAPABILITY_NAME, "capability name")]
Version = Annotated[str, _pattern(_VERSION, "version")]
InboxSubject = Annotated[str, Field(max_length=256), _pattern(_SUBJECT, "inbox subject")]
Millis = Annotated[int, Field(ge=0, lt=2**63)]


def canonical_json(value: JsonValue) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that are signed and fingerprinted."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


class Capability(BaseModel):
    """One thing an agent can do, and the contract of its inputs and outputs."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: CapabilityName
    version: Version = "1"
    description: Annotated[str, Field(max_length=2000)] = ""
    input_schema: JsonValue = None
    output_schema: JsonValue = None

    def descriptor(self) -> JsonValue:
        return {
            "description": self.description,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
        }

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the descriptor: what a silent change (rug pull) would alter."""
        return hashlib.sha256(canonical_json(self.descriptor())).hexdigest()


class AgentCard(BaseModel):
    """A signed, expiring statement of who an agent is and what it offers."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    did: DID
    display_name: Annotated[str, Field(min_length=1, max_length=128)]
    organization: DID | None = None
    capabilities: Annotated[tuple[Capability, ...], Field(max_length=MAX_CAPABILITIES)] = ()
    inbox: InboxSubject
    issued_at_ms: Millis
    expires_at_ms: Millis
    signature: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")] = "0" * 128

    def signing_bytes(self) -> bytes:
        return CARD_DOMAIN + canonical_json(self.model_dump(mode="json", exclude={"signature"}))

    def encode(self) -> bytes:
        """Canonical JSON, as stored."""
        return canonical_json(self.model_dump(mode="json"))

    def capability(self, name: str, version: str | None = None) -> Capability | None:
        for capability in self.capabilities:
            if capability.name == name and (version is None or capability.version == version):
                return capability
        return None

    def is_live(self, now_ms: int) -> bool:
        return now_ms < self.expires_at_ms


def parse_capability(spec: str) -> Capability:
    """``"NAME"`` or ``"NAME@VERSION"`` (the CLI form) as a :class:`Capability`.

    Raises:
        InvalidCard: the name or version is invalid.
    """
    name, _, version = spec.partition("@")
    try:
        return Capability(name=name, version=version or "1")
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(error: ValidationError) -> InvalidCard:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "card"
    return InvalidCard(f"{where}: {first['msg']} ({error.error_count()} error(s))")


def sign_card(
    identity: AgentIdentity,
    *,
    display_name: str,
    inbox: str,
    issued_at_ms: int,
    ttl_ms: int,
    capabilities: tuple[Capability, ...] = (),
    organization: str | None = None,
) -> AgentCard:
    """A card for ``identity``, valid for ``ttl_ms`` from ``issued_at_ms``.

    Raises:
        InvalidCard: a field is invalid or the lifetime is not within 1 ms..24 h.
        OversizedCard: the encoded card would exceed :data:`MAX_CARD_BYTES`.
    """
    if not 0 < ttl_ms <= MAX_CARD_LIFETIME_MS:
        raise InvalidCard(f"ttl_ms must be within 1..{MAX_CARD_LIFETIME_MS}", did=identity.did)
    try:
        unsigned = AgentCard(
            did=identity.did,
            display_name=display_name,
            organization=organization,
            capabilities=tuple(capabilities),
            inbox=inbox,
            issued_at_ms=issued_at_ms,
            expires_at_ms=issued_at_ms + ttl_ms,
        )
    except ValidationError as exc:
        raise _invalid(exc) from None
    card = unsigned.model_copy(update={"signature": identity.sign(unsigned.signing_bytes()).hex()})
    if len(card.encode()) > MAX_CARD_BYTES:
        raise OversizedCard(f"card is larger than {MAX_CARD_BYTES} bytes", did=identity.did)
    return card


def verify_card(
    card: AgentCard,
    *,
    now_ms: int,
    expected_did: str | None = None,
    clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS,
) -> AgentCard:
    """Return ``card`` if its signature, DID and validity window hold at ``now_ms``.

    Raises:
        CardDIDMismatch: the card names another DID than ``expected_did``.
        CardSignatureInvalid: the signature does not verify under the card's DID.
        InvalidCard: the lifetime is empty or longer than 24 h.
        CardIssuedInFuture: issued more than ``clock_skew_ms`` ahead of ``now_ms``.
        CardExpired: ``now_ms`` is at or past ``expires_at_ms``.
    """
    if expected_did is not None and card.did != expected_did:
        raise CardDIDMismatch(f"card names {card.did}, expected {expected_did}", did=card.did)
    try:
        verify_key_for_did(card.did).verify(card.signing_bytes(), bytes.fromhex(card.signature))
    except (BadSignatureError, ValueError):
        raise CardSignatureInvalid(
            f"card of {card.did} is not signed by it", did=card.did
        ) from None
    lifetime = card.expires_at_ms - card.issued_at_ms
    if not 0 < lifetime <= MAX_CARD_LIFETIME_MS:
        raise InvalidCard(f"card lifetime {lifetime} ms is outside 1 ms..24 h", did=card.did)
    if card.issued_at_ms > now_ms + clock_skew_ms:
        raise CardIssuedInFuture(f"card of {card.did} is issued in the future", did=card.did)
    if not card.is_live(now_ms):
        raise CardExpired(f"card of {card.did} expired", did=card.did)
    return card


def decode_card(
    data: bytes,
    *,
    now_ms: int,
    expected_did: str | None = None,
    clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS,
) -> AgentCard:
    """Parse and fully verify a stored card (see :func:`verify_card`).

    Raises:
        OversizedCard: ``data`` is above :data:`MAX_CARD_BYTES`.
        InvalidCard: not JSON, a missing, extra or invalid field, or not canonical.
        CardError: any failure of :func:`verify_card`.
    """
    if len(data) > MAX_CARD_BYTES:
        raise OversizedCard(f"card of {len(data)} bytes is above {MAX_CARD_BYTES}")
    try:
        card = AgentCard.model_validate_json(data)
    except ValidationError as exc:
        raise _invalid(exc) from None
    if card.encode() != data:
        raise InvalidCard("card is not canonical JSON", did=card.did)
    return verify_card(card, now_ms=now_ms, expected_did=expected_did, clock_skew_ms=clock_skew_ms)


__all__ = [
    "CARD_DOMAIN",
    "MAX_CAPABILITIES",
    "MAX_CARD_BYTES",
    "MAX_CARD_LIFETIME_MS",
    "AgentCard",
    "Capability",
    "canonical_json",
    "decode_card",
    "parse_capability",
    "sign_card",
    "verify_card",
]
