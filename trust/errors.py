"""Errors raised by the trust engine.

Every class carries a stable ``code`` (counters, audit records, CLI output)::

    AgentMeshError                         (iatp.errors)
    └── TrustError                         code "trust_error"
        ├── InvalidTrustConfig             code "invalid_trust_config"
        ├── InvalidEvidence                code "invalid_evidence"   (fields: receipt_id, reason)
        │   ├── SelfEvidence               code "self_evidence"
        │   ├── EvidenceFromFuture         code "evidence_from_future"
        │   ├── StaleReceipt               code "stale_receipt"      (field: horizon_floor_ms)
        │   └── MalformedReceipt           code "malformed_receipt"
        ├── ForgedReceipt                  code "forged_receipt"     (fields: receipt_id, observer)
        │   └── SignerMismatch             code "signer_mismatch"
        └── SnapshotError                  code "snapshot_error"     (fields: signer, seq, reason)
            ├── MalformedSnapshot          code "malformed_snapshot"
            ├── UnsupportedSnapshot        code "unsupported_snapshot"
            ├── CorruptSnapshot            code "corrupt_snapshot"
            ├── ForgedSnapshot             code "forged_snapshot"
            ├── UntrustedSnapshotSigner    code "untrusted_snapshot_signer"
            ├── SnapshotWrongMesh          code "snapshot_wrong_mesh"
            └── SnapshotMismatch           code "snapshot_mismatch"
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


class StaleReceipt(InvalidEvidence):
    """The receipt is older than the replay horizon: its id may be forgotten, so it never counts.

    The horizon trails the newest receipt time folded (a time every node derives from
    the same stream), so every node refuses the same receipts.
    """

    code = "stale_receipt"

    def __init__(self, reason: str, *, receipt_id: str | None, horizon_floor_ms: int) -> None:
        super().__init__(reason, receipt_id=receipt_id)
        self.horizon_floor_ms = horizon_floor_ms


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


class SnapshotError(TrustError):
    """A trust snapshot cannot be started from; the node folds the whole stream instead."""

    code = "snapshot_error"

    def __init__(self, reason: str, *, signer: str | None = None, seq: int | None = None) -> None:
        super().__init__(f"trust snapshot at seq {seq if seq is not None else '?'}: {reason}")
        self.reason = reason
        self.signer = signer
        self.seq = seq


class MalformedSnapshot(SnapshotError):
    """The snapshot's bytes or fields do not follow the snapshot format."""

    code = "malformed_snapshot"


class UnsupportedSnapshot(SnapshotError):
    """The snapshot's format version is not one this node reads."""

    code = "unsupported_snapshot"


class CorruptSnapshot(SnapshotError):
    """The snapshot body does not hash to the digest its signed manifest names."""

    code = "corrupt_snapshot"


class ForgedSnapshot(SnapshotError):
    """The manifest's signature does not verify under the named signer's key."""

    code = "forged_snapshot"


class UntrustedSnapshotSigner(SnapshotError):
    """The snapshot is signed by a DID this node was not configured to trust."""

    code = "untrusted_snapshot_signer"


class SnapshotWrongMesh(SnapshotError):
    """The snapshot was taken on another mesh."""

    code = "snapshot_wrong_mesh"


class SnapshotMismatch(SnapshotError):
    """The snapshot does not fit this node: other config or anchors, or ahead of the stream."""

    code = "snapshot_mismatch"
