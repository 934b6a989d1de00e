"""Interaction receipts: the only evidence the trust engine learns from.

A :class:`Receipt` says "observer saw subject behave like *outcome* in
interaction *interaction_id* at *at_ms*". Its ``receipt_id`` is a hash of its
canonical bytes, so two receipts with the same id have the same content and
de-duplication by id is safe. When a receipt travels it is wrapped in a
:class:`SignedReceipt`: the observer's Ed25519 signature over
``RECEIPT_DOMAIN || canonical bytes``. The canonical bytes are compact JSON
(sorted, no spaces) so another language can rebuild them exactly.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from dataclasses import dataclass, field

from nacl.exceptions import BadSignatureError

from iatp.did import verify_key_for_did
from iatp.errors import InvalidDID
from iatp.identity import AgentIdentity
from trust.errors import ForgedReceipt, MalformedReceipt, SignerMismatch

RECEIPT_DOMAIN = b"agentmesh/trust/receipt/1\x00"
RECEIPT_VERSION = 1
MAX_RECEIPT_BYTES = 4096
MAX_NAME_CHARS = 256
MAX_WEIGHT = 10.0
SIGNATURE_BYTES = 64


class Outcome(enum.Enum):
    """How an interaction ended, from the observer's point of view."""

    SUCCESS = "success"
    FAILURE = "failure"
    POLICY_VIOLATION = "policy_violation"
    TIMEOUT = "timeout"
    PROTOCOL_VIOLATION = "protocol_violation"

    @property
    def severity(self) -> float:
        """Negative evidence per unit of weight (0 for success)."""
        return _SEVERITY[self]


_SEVERITY = {
    Outcome.SUCCESS: 0.0,
    Outcome.TIMEOUT: 0.5,
    Outcome.FAILURE: 1.0,
    Outcome.POLICY_VIOLATION: 2.0,
    Outcome.PROTOCOL_VIOLATION: 2.0,
}


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise MalformedReceipt(f"{what} must be a non-empty string of at most {MAX_NAME_CHARS}")
    return value


@dataclass(frozen=True, slots=True)
class Receipt:
    """One observed interaction. Build it with :meth:`create` (which sets the id).

    Attributes:
        receipt_id: hex SHA-256 (first 32 chars) of :meth:`canonical_body`.
        observer: DID of the agent that saw the interaction (and signs the receipt).
        subject: DID of the agent whose behaviour is reported.
        interaction_id: the observer's id for the interaction (e.g. an envelope id).
        outcome: what happened.
        at_ms: when it happened (Unix ms).
        action: optional action / message type the subject performed.
        weight: how much the interaction counts, in (0, 10].
    """

    receipt_id: str
    observer: str
    subject: str
    interaction_id: str
    outcome: Outcome
    at_ms: int
    action: str | None = None
    weight: float = 1.0

    @classmethod
    def create(
        cls,
        *,
        observer: str,
        subject: str,
        interaction_id: str,
        outcome: Outcome,
        at_ms: int,
        action: str | None = None,
        weight: float = 1.0,
    ) -> Receipt:
        """A validated receipt with its content-derived id.

        Raises:
            MalformedReceipt: a field is empty, too long, out of range or mistyped.
        """
        body = _canonical(observer, subject, interaction_id, outcome, at_ms, action, weight)
        return cls(_id_of(body), observer, subject, interaction_id, outcome, at_ms, action, weight)

    def canonical_body(self) -> bytes:
        """The exact bytes that are hashed into the id and signed."""
        return _canonical(
            self.observer,
            self.subject,
            self.interaction_id,
            self.outcome,
            self.at_ms,
            self.action,
            self.weight,
        )


def _canonical(
    observer: str,
    subject: str,
    interaction_id: str,
    outcome: object,
    at_ms: object,
    action: object,
    weight: object,
) -> bytes:
    _check_name(observer, "observer")
    _check_name(subject, "subject")
    _check_name(interaction_id, "interaction_id")
    if not isinstance(outcome, Outcome):
        raise MalformedReceipt(f"outcome must be an Outcome, got {outcome!r:.40}")
    if isinstance(at_ms, bool) or not isinstance(at_ms, int) or not 0 <= at_ms < 2**53:
        raise MalformedReceipt("at_ms must be a non-negative integer (Unix ms)")
    if action is not None:
        _check_name(action, "action")
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or not 0.0 < weight <= MAX_WEIGHT
    ):
        raise MalformedReceipt(f"weight must be a number in (0, {MAX_WEIGHT:g}]")
    fields = [
        RECEIPT_VERSION,
        observer,
        subject,
        interaction_id,
        outcome.value,
        at_ms,
        action,
        float(weight),
    ]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()


def _id_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class SignedReceipt:
    """A receipt and its observer's signature; ``encode`` gives the wire bytes.

    ``body`` caches the receipt's canonical body when this module made it
    (:func:`sign_receipt`, :func:`decode_signed_receipt`), so it is not
    serialised again to be verified or encoded. It cannot be passed in: a body
    that differs from the receipt's fields would have a signature checked over
    other bytes than the ones the receipt states.
    """

    receipt: Receipt
    signature: bytes
    body: bytes | None = field(default=None, init=False, compare=False, repr=False)

    def canonical_body(self) -> bytes:
        return self.body if self.body is not None else self.receipt.canonical_body()

    def encode(self) -> bytes:
        """``{"r": [...canonical fields...], "s": "<hex signature>"}`` as compact JSON."""
        return _wire(self.canonical_body(), self.signature.hex())


def _with_body(receipt: Receipt, signature: bytes, body: bytes) -> SignedReceipt:
    """A signed receipt that caches ``body``, which is ``receipt.canonical_body()``."""
    signed = SignedReceipt(receipt, signature)
    object.__setattr__(signed, "body", body)
    return signed


def _wire(body: bytes, signature_hex: str) -> bytes:
    return b'{"r":' + body + b',"s":"' + signature_hex.encode() + b'"}'


def sign_receipt(receipt: Receipt, identity: AgentIdentity) -> SignedReceipt:
    """Sign ``receipt`` as its observer.

    Raises:
        SignerMismatch: ``identity`` is not the receipt's observer.
    """
    if identity.did != receipt.observer:
        raise SignerMismatch(
            "only the observer signs its receipts",
            receipt_id=receipt.receipt_id,
            observer=receipt.observer,
        )
    body = receipt.canonical_body()
    return _with_body(receipt, identity.sign(RECEIPT_DOMAIN + body), body)


def verify_receipt(signed: SignedReceipt, *, sender: str | None = None) -> Receipt:
    """Check the observer's signature (and, if given, that ``sender`` is the observer).

    Raises:
        SignerMismatch: ``sender`` is not the receipt's observer.
        ForgedReceipt: the signature does not verify, or the observer is not a did:key.
    """
    receipt = signed.receipt
    if sender is not None and sender != receipt.observer:
        raise SignerMismatch(
            f"sent by {sender[:80]}, not by its observer",
            receipt_id=receipt.receipt_id,
            observer=receipt.observer,
        )
    try:
        key = verify_key_for_did(receipt.observer)
        key.verify(RECEIPT_DOMAIN + signed.canonical_body(), signed.signature)
    except (InvalidDID, BadSignatureError, ValueError) as exc:
        raise ForgedReceipt(
            "signature does not verify under the observer's key",
            receipt_id=receipt.receipt_id,
            observer=receipt.observer,
        ) from exc
    return receipt


def decode_signed_receipt(data: bytes) -> SignedReceipt:
    """Parse wire bytes made by :meth:`SignedReceipt.encode` (does not verify).

    Raises:
        MalformedReceipt: oversized, not the receipt format, or not canonical.
    """
    if len(data) > MAX_RECEIPT_BYTES:
        raise MalformedReceipt(f"receipt is {len(data)} bytes, limit {MAX_RECEIPT_BYTES}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedReceipt("not JSON") from exc
    if not isinstance(doc, dict) or set(doc) != {"r", "s"}:
        raise MalformedReceipt('expected exactly the keys "r" and "s"')
    fields, sig_hex = doc["r"], doc["s"]
    if not isinstance(fields, list) or len(fields) != 8 or fields[0] != RECEIPT_VERSION:
        raise MalformedReceipt("unsupported receipt version or field count")
    if not isinstance(sig_hex, str) or len(sig_hex) != 2 * SIGNATURE_BYTES:
        raise MalformedReceipt("signature must be 64 bytes of hex")
    try:
        signature = bytes.fromhex(sig_hex)
        outcome = Outcome(fields[4])
    except ValueError as exc:
        raise MalformedReceipt(str(exc)) from exc
    observer, subject, interaction_id, at_ms, action, weight = (
        fields[1],
        fields[2],
        fields[3],
        fields[5],
        fields[6],
        fields[7],
    )
    body = _canonical(observer, subject, interaction_id, outcome, at_ms, action, weight)
    if _wire(body, signature.hex()) != data:
        raise MalformedReceipt("non-canonical encoding")
    receipt = Receipt(
        _id_of(body), observer, subject, interaction_id, outcome, at_ms, action, weight
    )
    return _with_body(receipt, signature, body)
