"""trust: signed evidence, local and global trust, drift and rings (layer 1).

Pure and I/O-free; imports only :mod:`iatp`, numpy, scipy and networkx. The
model is described with its maths in ``docs/trust.md``.
"""

from trust.config import TrustConfig
from trust.drift import ACTION_DRIFT, OUTCOME_DRIFT, SOFT_DRIFT, js_divergence
from trust.edges import LocalTrust
from trust.engine import TrustEngine
from trust.errors import (
    CorruptSnapshot,
    EvidenceFromFuture,
    ForgedReceipt,
    ForgedSnapshot,
    InvalidEvidence,
    InvalidTrustConfig,
    MalformedReceipt,
    MalformedSnapshot,
    SelfEvidence,
    SignerMismatch,
    SnapshotError,
    SnapshotMismatch,
    SnapshotWrongMesh,
    StaleReceipt,
    TrustError,
    UnsupportedSnapshot,
    UntrustedSnapshotSigner,
)
from trust.events import DriftDetected, RingChanged, TrustEvent, TrustListener
from trust.evidence import (
    RECEIPT_DOMAIN,
    Outcome,
    Receipt,
    SignedReceipt,
    decode_signed_receipt,
    sign_receipt,
    verify_receipt,
)
from trust.explain import Endorsement, Explanation, ReceiptImpact
from trust.rings import RING_KERNEL, RING_PRIVILEGED, RING_SANDBOX, RING_STANDARD
from trust.selection import Choice, SelectionConfig, SelectionPolicy
from trust.snapshot import (
    SNAPSHOT_DOMAIN,
    SnapshotManifest,
    check_body,
    decode_manifest,
    seal_snapshot,
    verify_manifest,
)
from trust.state import EngineState, pack_state, unpack_state
from trust.window import ReceiptWindow

__all__ = [
    "ACTION_DRIFT",
    "OUTCOME_DRIFT",
    "RECEIPT_DOMAIN",
    "RING_KERNEL",
    "RING_PRIVILEGED",
    "RING_SANDBOX",
    "RING_STANDARD",
    "SNAPSHOT_DOMAIN",
    "SOFT_DRIFT",
    "Choice",
    "CorruptSnapshot",
    "DriftDetected",
    "Endorsement",
    "EngineState",
    "EvidenceFromFuture",
    "Explanation",
    "ForgedReceipt",
    "ForgedSnapshot",
    "InvalidEvidence",
    "InvalidTrustConfig",
    "LocalTrust",
    "MalformedReceipt",
    "MalformedSnapshot",
    "Outcome",
    "Receipt",
    "ReceiptImpact",
    "ReceiptWindow",
    "RingChanged",
    "SelectionConfig",
    "SelectionPolicy",
    "SelfEvidence",
    "SignedReceipt",
    "SignerMismatch",
    "SnapshotError",
    "SnapshotManifest",
    "SnapshotMismatch",
    "SnapshotWrongMesh",
    "StaleReceipt",
    "TrustConfig",
    "TrustEngine",
    "TrustError",
    "TrustEvent",
    "TrustListener",
    "UnsupportedSnapshot",
    "UntrustedSnapshotSigner",
    "check_body",
    "decode_manifest",
    "decode_signed_receipt",
    "js_divergence",
    "pack_state",
    "seal_snapshot",
    "sign_receipt",
    "unpack_state",
    "verify_manifest",
    "verify_receipt",
]
