"""Errors raised by the registry layer (agent cards, revocations, capability pins).

Every class carries a stable ``code`` used by counters, audit records and the
CLI. The tree (``AgentMeshError`` lives in ``iatp.errors``)::

    AgentMeshError
    └── RegistryError                      code "registry_error"
        ├── CardError                      code "card_error"
        │   ├── InvalidCard                code "card_invalid"
        │   ├── OversizedCard              code "card_oversized"
        │   ├── CardSignatureInvalid       code "card_bad_signature"
        │   ├── CardExpired                code "card_expired"
        │   ├── CardIssuedInFuture         code "card_issued_in_future"
        │   ├── CardDIDMismatch            code "card_did_mismatch"
        │   ├── StaleCard                  code "card_stale"
        │   └── PinNotAuthorized           code "pin_unauthorized"
        ├── RevocationError                code "revocation_error"
        │   ├── InvalidRevocation          code "revocation_invalid"
        │   ├── RevocationSignatureInvalid code "revocation_bad_signature"
        │   ├── UnauthorizedRevocation     code "revocation_unauthorized"
        │   └── RevocationLogIncomplete    code "revocation_log_incomplete"
        ├── RotationRejected               code "rotation_rejected"
        ├── AgentNotFound                  code "agent_not_found"
        └── CapabilityDrift                code "capability_drift"
"""

from __future__ import annotations

from iatp.errors import AgentMeshError


class RegistryError(AgentMeshError):
    """A card, revocation or rotation was refused by the registry. ``did`` when known."""

    code = "registry_error"

    def __init__(self, message: str, *, did: str | None = None) -> None:
        super().__init__(message)
        self.did = did


class CardError(RegistryError):
    """An agent card was refused (read from a store, or offered for registration)."""

    code = "card_error"


class InvalidCard(CardError):
    """A field is missing, of the wrong type, out of range, or the JSON is malformed."""

    code = "card_invalid"


class OversizedCard(CardError):
    """The encoded card is above :data:`registry.card.MAX_CARD_BYTES`."""

    code = "card_oversized"


class CardSignatureInvalid(CardError):
    """The signature does not verify under the key the card's DID names."""

    code = "card_bad_signature"


class CardExpired(CardError):
    """``expires_at_ms`` has passed."""

    code = "card_expired"


class CardIssuedInFuture(CardError):
    """``issued_at_ms`` is ahead of the reader's clock by more than the allowed skew."""

    code = "card_issued_in_future"


class CardDIDMismatch(CardError):
    """The card names another DID than the one it is stored under or registered for."""

    code = "card_did_mismatch"


class StaleCard(CardError):
    """An older card than the one already known for this DID (a replayed card)."""

    code = "card_stale"


class PinNotAuthorized(CardError):
    """A stored pin or approval was not signed (validly) by a pin authority of this mesh."""

    code = "pin_unauthorized"


class RevocationError(RegistryError):
    """A revocation, quarantine or release entry was refused."""

    code = "revocation_error"


class InvalidRevocation(RevocationError):
    """Malformed, oversized, non-canonical, or with a field out of range."""

    code = "revocation_invalid"


class RevocationSignatureInvalid(RevocationError):
    """The signature does not verify under the issuer's key."""

    code = "revocation_bad_signature"


class UnauthorizedRevocation(RevocationError):
    """The issuer is not allowed to issue this kind of entry about this subject."""

    code = "revocation_unauthorized"


class RevocationLogIncomplete(RevocationError):
    """Entries an issuer's signed head counts are missing, replaced or moved in the store.

    Someone removed revocations from the store (or it lost them): a node must not
    trust what is left. ``issuer`` names whose log; the authority repairs the store
    with ``agentmesh registry republish``.
    """

    code = "revocation_log_incomplete"

    def __init__(self, message: str, *, issuer: str) -> None:
        super().__init__(message)
        self.issuer = issuer


class RotationRejected(RegistryError):
    """A rotation statement is invalid or conflicts with one already known."""

    code = "rotation_rejected"


class AgentNotFound(RegistryError):
    """No live card for this DID."""

    code = "agent_not_found"


class CapabilityDrift(RegistryError):
    """An agent changed a capability's descriptor under the same name and version."""

    code = "capability_drift"


__all__ = [
    "AgentNotFound",
    "CapabilityDrift",
    "CardDIDMismatch",
    "CardError",
    "CardExpired",
    "CardIssuedInFuture",
    "CardSignatureInvalid",
    "InvalidCard",
    "InvalidRevocation",
    "OversizedCard",
    "PinNotAuthorized",
    "RegistryError",
    "RevocationError",
    "RevocationLogIncomplete",
    "RevocationSignatureInvalid",
    "RotationRejected",
    "StaleCard",
    "UnauthorizedRevocation",
]
