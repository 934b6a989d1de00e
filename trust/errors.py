"""Errors raised by the trust engine.

Every class carries a stable ``code`` (counters, audit records, CLI output)::

    AgentMeshError                         (iatp.errors)
    └── TrustError                         code "trust_error"
        ├── InvalidTrustConfig             code "invalid_trust_config"
        ├── InvalidEvidence                code "invalid_evidence"   (fields: receipt_id, reason)
        │   ├── SelfEvidence               code "self_evidence"
        │   ├── EvidenceFromFuture         code "evidence_from_future"
        │   └── MalformedReceipt           code "malformed_receipt"
        └── ForgedReceipt                  code "forged_receipt"     (fields: receipt_id, observer)
            └── SignerMismatch             code "signer_mismatch"
"""

from __future__ import annotations

from iatp.errors import AgentMeshError


class TrustError(AgentMeshError):
    """A trust computation or a piece of evidence broke a rule."""

    code = "trust_error"


class InvalidTrustConfig(TrustError):
    """A :class:`~trust.config.TrustConfig` value is out of range."""

    code = "invalid_trust_config"


class InvalidEvidence(TrustError):
    """A receipt is well signed (or unsigned) but cannot count as evidence."""

    code = "invalid_evidence"

    def __init__(self, reason: str, *, receipt_id: str | None = None) -> None:
        super().__init__(f"invalid evidence {receipt_id or '?'}: {reason}")
        self.reason = reason
        self.receipt_id = receipt_id


class SelfEvidence(InvalidEvidence):
    """An agent reported on itself: it never counts."""

    code = "self_evidence"


class EvidenceFromFuture(InvalidEvidence):
    """The receipt's time is further ahead of the engine's clock than the allowed skew."""

    code = "evidence_from_future"


class MalformedReceipt(InvalidEvidence):
    """The receipt's bytes or fields do not follow the receipt format."""

    code = "malformed_receipt"


class ForgedReceipt(TrustError):
    """The receipt's signature does not verify under its observer's key."""

    code = "forged_receipt"

    def __init__(self, reason: str, *, receipt_id: str | None, observer: str | None) -> None:
        super().__init__(f"forged receipt {receipt_id or '?'} from {observer or '?'}: {reason}")
        self.reason = reason
        self.receipt_id = receipt_id
        self.observer = observer


class SignerMismatch(ForgedReceipt):
    """The receipt arrived from a sender who is not its observer."""

    code = "signer_mismatch"
