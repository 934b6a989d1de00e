"""Stored capability pins and approvals, signed by the identity that made them.

A pin in a shared store decides whether every node holds an agent (a rug pull)
or routes to it again (an approval), so a node takes a stored pin only if a pin
authority of its mesh signed it. Canonical JSON::

    {"did": ..., "fingerprint": ..., "issued_at_ms": ..., "name": ..., "pinned_by": ...,
     "signature": "<hex>", "version": ...}

signed by ``pinned_by`` over ``"agentmesh/1/capability-pin\\x00" || canonical_json(...)``
of every field but ``signature``. Nodes that are not pin authorities keep their
first-seen pins locally and follow the signed ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError

from iatp.did import is_did, verify_key_for_did
from iatp.identity import AgentIdentity
from registry.card import canonical_json
from registry.errors import InvalidCard, PinNotAuthorized

PIN_DOMAIN = b"agentmesh/1/capability-pin\x00"
MAX_PIN_BYTES = 1024
_FIELDS = {"did", "fingerprint", "issued_at_ms", "name", "pinned_by", "signature", "version"}


@dataclass(frozen=True, slots=True)
class PinRecord:
    """``pinned_by`` says ``did``'s ``name@version`` descriptor is ``fingerprint``."""

    did: str
    name: str
    version: str
    fingerprint: str
    pinned_by: str
    issued_at_ms: int
    signature: bytes = b""

    def _fields(self) -> dict[str, str | int]:
        return {
            "did": self.did,
            "fingerprint": self.fingerprint,
            "issued_at_ms": self.issued_at_ms,
            "name": self.name,
            "pinned_by": self.pinned_by,
            "version": self.version,
        }

    def signing_bytes(self) -> bytes:
        return PIN_DOMAIN + canonical_json(self._fields())  # type: ignore[arg-type]

    def encode(self) -> bytes:
        return canonical_json({**self._fields(), "signature": self.signature.hex()})


def sign_pin(
    signer: AgentIdentity, *, did: str, name: str, version: str, fingerprint: str, issued_at_ms: int
) -> PinRecord:
    """A pin (or approval) of ``did``'s ``name@version`` as ``fingerprint``, by ``signer``."""
    record = PinRecord(did, name, version, fingerprint, signer.did, issued_at_ms)
    signature = signer.sign(record.signing_bytes())
    return PinRecord(did, name, version, fingerprint, signer.did, issued_at_ms, signature)


def decode_pin(data: bytes, *, authorities: frozenset[str]) -> PinRecord:
    """Parse and verify a stored pin; only records signed by ``authorities`` pass.

    Raises:
        InvalidCard: malformed or not canonical.
        PinNotAuthorized: signed by someone who is not a pin authority, or badly signed.
    """
    if len(data) > MAX_PIN_BYTES:
        raise InvalidCard("pin record is too large")
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or set(doc) != _FIELDS:
            raise ValueError("unexpected fields")
        record = PinRecord(
            doc["did"],
            doc["name"],
            doc["version"],
            doc["fingerprint"],
            doc["pinned_by"],
            doc["issued_at_ms"],
            bytes.fromhex(doc["signature"]),
        )
        strings = (record.did, record.name, record.version, record.fingerprint, record.pinned_by)
        if not all(isinstance(v, str) for v in strings) or type(record.issued_at_ms) is not int:
            raise ValueError("wrong field types")
        if not (is_did(record.did) and is_did(record.pinned_by)):
            raise ValueError("not a did:key")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidCard(f"malformed pin record: {exc}") from None
    if record.encode() != data:
        raise InvalidCard("pin record is not canonical JSON", did=record.did)
    if record.pinned_by not in authorities:
        raise PinNotAuthorized(
            f"pin of {record.did} signed by {record.pinned_by}, not a pin authority", did=record.did
        )
    try:
        verify_key_for_did(record.pinned_by).verify(record.signing_bytes(), record.signature)
    except BadSignatureError:
        raise PinNotAuthorized(f"pin of {record.did} is badly signed", did=record.did) from None
    return record


__all__ = ["PIN_DOMAIN", "PinRecord", "decode_pin", "sign_pin"]
