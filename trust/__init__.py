"""trust: signed evidence, local and global trust, drift and rings (layer 1).

Pure and I/O-free; imports only :mod:`iatp`, numpy, scipy and networkx. The
model is described with its maths in ``docs/trust.md``.
"""

from trust.config import TrustConfig
from trust.drift import ACTION_DRIFT, OUTCOME_DRIFT, js_divergence
from trust.edges import LocalTrust
from trust.engine import TrustEngine
from trust.errors import (
    EvidenceFromFuture,
    ForgedReceipt,
    InvalidEvidence,
    InvalidTrustConfig,
    MalformedReceipt,
    SelfEvidence,
    SignerMismatch,
    TrustError,
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

__all__ = [
    "ACTION_DRIFT",
    "OUTCOME_DRIFT",
    "RECEIPT_DOMAIN",
    "RING_KERNEL",
    "RING_PRIVILEGED",
    "RING_SANDBOX",
    "RING_STANDARD",
    "DriftDetected",
    "Endorsement",
    "EvidenceFromFuture",
    "Explanation",
    "ForgedReceipt",
    "InvalidEvidence",
    "InvalidTrustConfig",
    "LocalTrust",
    "MalformedReceipt",
    "Outcome",
    "Receipt",
    "ReceiptImpact",
    "RingChanged",
    "SelfEvidence",
    "SignedReceipt",
    "SignerMismatch",
    "TrustConfig",
    "TrustEngine",
    "TrustError",
    "TrustEvent",
    "TrustListener",
    "decode_signed_receipt",
    "js_divergence",
    "sign_receipt",
    "verify_receipt",
]
