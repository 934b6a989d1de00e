"""Card withdrawals: an agent leaves the directory by saying so, signed.

A bare delete in the store proves nothing about who deleted: anyone with write
access to the bucket could hold an honest agent out of discovery that way. So
readers ignore bare deletes, and an agent that deregisters stores a withdrawal
under its card's key instead, as canonical JSON::

    {"issued_at_ms": 1700000000000, "signature": "<hex>", "withdrawn": "did:key:z6Mk..."}

signed by the withdrawn DID's key over::

    "agentmesh/1/card-withdrawal\\x00" || canonical_json({"issued_at_ms": ..., "withdrawn": ...})

A withdrawal removes the agent's card only if it is not older than the card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError

from iatp.did import is_did, verify_key_for_did
from iatp.identity import AgentIdentity
from registry.card import canonical_json
from registry.errors import CardSignatureInvalid, InvalidCard

WITHDRAWAL_DOMAIN = b"agentmesh/1/card-withdrawal\x00"
MAX_WITHDRAWAL_BYTES = 512


@dataclass(frozen=True, slots=True)
class CardWithdrawal:
    """``did`` left the directory at ``issued_at_ms`` (signed by ``did``)."""

    did: str
    issued_at_ms: int
    signature: bytes

    def signing_bytes(self) -> bytes:
        return WITHDRAWAL_DOMAIN + canonical_json(
            {"issued_at_ms": self.issued_at_ms, "withdrawn": self.did}
        )

    def encode(self) -> bytes:
        return canonical_json(
            {
                "issued_at_ms": self.issued_at_ms,
                "signature": self.signature.hex(),
                "withdrawn": self.did,
            }
        )


def sign_withdrawal(identity: AgentIdentity, *, issued_at_ms: int) -> CardWithdrawal:
    """``identity``'s signed withdrawal from the directory."""
    unsigned = CardWithdrawal(identity.did, issued_at_ms, b"")
    return CardWithdrawal(identity.did, issued_at_ms, identity.sign(unsigned.signing_bytes()))


def is_withdrawal(data: bytes) -> bool:
    """Whether stored bytes are meant as a withdrawal (cheap; :func:`decode_withdrawal` checks)."""
    return data.startswith(b'{"issued_at_ms":') and b'"withdrawn":' in data


def decode_withdrawal(data: bytes, *, expected_did: str) -> CardWithdrawal:
    """Parse and verify a stored withdrawal of ``expected_did``.

    Raises:
        InvalidCard: not a canonical withdrawal of ``expected_did``.
        CardSignatureInvalid: not signed by ``expected_did``.
    """
    if len(data) > MAX_WITHDRAWAL_BYTES:
        raise InvalidCard("withdrawal is too large", did=expected_did)
    try:
        doc = json.loads(data)
        did, issued, signature = doc["withdrawn"], doc["issued_at_ms"], doc["signature"]
        if set(doc) != {"withdrawn", "issued_at_ms", "signature"}:
            raise ValueError("unexpected fields")
        if not (isinstance(did, str) and is_did(did)):
            raise ValueError("withdrawn is not a did:key")
        if type(issued) is not int or not 0 <= issued < 2**63:
            raise ValueError("issued_at_ms is not a 63-bit integer")
        withdrawal = CardWithdrawal(did, issued, bytes.fromhex(signature))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCard(f"malformed withdrawal: {exc}", did=expected_did) from None
    if withdrawal.encode() != data:
        raise InvalidCard("withdrawal is not canonical JSON", did=expected_did)
    if withdrawal.did != expected_did:
        raise InvalidCard("withdrawal stored under another agent's key", did=expected_did)
    try:
        verify_key_for_did(did).verify(withdrawal.signing_bytes(), withdrawal.signature)
    except BadSignatureError:
        raise CardSignatureInvalid(f"withdrawal of {did} is not signed by it", did=did) from None
    return withdrawal


__all__ = [
    "WITHDRAWAL_DOMAIN",
    "CardWithdrawal",
    "decode_withdrawal",
    "is_withdrawal",
    "sign_withdrawal",
]
