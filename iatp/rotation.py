"""Key rotation statements: the old key hands over to a new one.

Signing input (``msgpack`` of a 4-array, canonical encoding)::

    claim      = msgpack([old_did, new_did, sequence, issued_at_ms])
    old_sig    = Ed25519_old("iatp/1/rotation\\x00" || claim)
    new_sig    = Ed25519_new("iatp/1/rotation-accept\\x00" || claim || old_sig)

A verifier accepts a statement only when both signatures hold under the keys
named by ``old_did`` and ``new_did``. The countersignature covers the old
signature, so neither key alone can produce a valid statement.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
from nacl.exceptions import BadSignatureError

from iatp.did import verify_key_for_did
from iatp.errors import InvalidDID, RotationError
from iatp.identity import AgentIdentity

ROTATION_DOMAIN = b"iatp/1/rotation\x00"
ROTATION_ACCEPT_DOMAIN = b"iatp/1/rotation-accept\x00"
MAX_STATEMENT_BYTES = 1024


@dataclass(frozen=True, slots=True)
class RotationStatement:
    old_did: str
    new_did: str
    sequence: int
    issued_at_ms: int
    old_signature: bytes
    new_signature: bytes

    def claim_bytes(self) -> bytes:
        return _claim(self.old_did, self.new_did, self.sequence, self.issued_at_ms)

    def encode(self) -> bytes:
        return msgpack.packb(
            [
                self.old_did,
                self.new_did,
                self.sequence,
                self.issued_at_ms,
                self.old_signature,
                self.new_signature,
            ],
            use_bin_type=True,
        )


def _claim(old_did: str, new_did: str, sequence: int, issued_at_ms: int) -> bytes:
    return msgpack.packb([old_did, new_did, sequence, issued_at_ms], use_bin_type=True)


def rotate(
    old: AgentIdentity, new: AgentIdentity, *, sequence: int, issued_at_ms: int
) -> RotationStatement:
    """A statement that ``old`` hands over to ``new``, signed by both."""
    if old.did == new.did:
        raise RotationError("a rotation needs two different keys")
    claim = _claim(old.did, new.did, sequence, issued_at_ms)
    old_sig = old.sign(ROTATION_DOMAIN + claim)
    new_sig = new.sign(ROTATION_ACCEPT_DOMAIN + claim + old_sig)
    return RotationStatement(old.did, new.did, sequence, issued_at_ms, old_sig, new_sig)


def verify_rotation(statement: RotationStatement) -> RotationStatement:
    """Return ``statement`` if both signatures hold; otherwise raise.

    Raises:
        RotationError: malformed fields, same key twice, or a signature that
            does not verify under the key its DID names.
    """
    s = statement
    if not (type(s.sequence) is int and 0 <= s.sequence < 2**63):
        raise RotationError("sequence must be a non-negative 64-bit integer")
    if not (type(s.issued_at_ms) is int and 0 <= s.issued_at_ms < 2**63):
        raise RotationError("issued_at_ms must be a non-negative 64-bit integer")
    if s.old_did == s.new_did:
        raise RotationError("old and new DID are the same")
    try:
        old_key = verify_key_for_did(s.old_did)
        new_key = verify_key_for_did(s.new_did)
    except InvalidDID as exc:
        raise RotationError(f"rotation names an invalid DID: {exc.reason}") from None
    claim = s.claim_bytes()
    try:
        old_key.verify(ROTATION_DOMAIN + claim, s.old_signature)
    except (BadSignatureError, ValueError, TypeError):
        raise RotationError("the old key's signature does not verify") from None
    try:
        new_key.verify(ROTATION_ACCEPT_DOMAIN + claim + s.old_signature, s.new_signature)
    except (BadSignatureError, ValueError, TypeError):
        raise RotationError("the new key's countersignature does not verify") from None
    return s


def decode_rotation(data: bytes) -> RotationStatement:
    """Parse and verify an encoded statement.

    Raises:
        RotationError: malformed, oversized, or not validly signed by both keys.
    """
    if len(data) > MAX_STATEMENT_BYTES:
        raise RotationError("rotation statement is too large")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise RotationError("rotation statement is not valid msgpack") from None
    if not isinstance(fields, list) or len(fields) != 6:
        raise RotationError("rotation statement must be an array of 6 fields")
    old_did, new_did, seq, at, old_sig, new_sig = fields
    types_ok = (
        isinstance(old_did, str)
        and isinstance(new_did, str)
        and type(seq) is int
        and type(at) is int
        and isinstance(old_sig, bytes)
        and isinstance(new_sig, bytes)
    )
    if not types_ok:
        raise RotationError("rotation statement has a field of the wrong type")
    statement = RotationStatement(old_did, new_did, seq, at, old_sig, new_sig)
    if statement.encode() != data:
        raise RotationError("rotation statement is not canonically encoded")
    return verify_rotation(statement)
