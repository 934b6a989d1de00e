"""The answer of :meth:`TrustEngine.explain`: a score and what made it."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from trust.events import DriftDetected
from trust.evidence import Receipt


@dataclass(frozen=True, slots=True)
class ReceiptImpact:
    """A receipt and how much it moved the subject's evidence.

    ``impact`` is signed: ``+weight * credibility`` for a success,
    ``-weight * severity * credibility`` otherwise, with the observer's
    credibility when the receipt was recorded.
    """

    receipt_id: str
    observer: str
    outcome: str
    at_ms: int
    impact: float


@dataclass(frozen=True, slots=True)
class Endorsement:
    """One observer's share of the subject's global trust in the last recompute."""

    observer: str
    contribution: float
    local_estimate: float
    evidence: float


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything behind ``score(did)`` and ``ring(did)``.

    Attributes:
        score: the score as :meth:`TrustEngine.score` returns it.
        global_trust: the EigenTrust component t_i (sums to 1 over agents).
        relative_share: ``n_eff * t_i`` (1.0 = an average share).
        pre_trusted: whether the agent anchors the propagation.
        evidence: credible evidence volume (what the ring thresholds use).
        positive: decayed positive evidence about the agent, all observers.
        negative: decayed negative evidence, all observers.
        drift: the last drift event while the flag is raised, else None.
        ring: current ring; target_ring: where the last recompute points.
        endorsers: the observers whose opinion carried most of ``global_trust``.
        receipts: the receipts that moved the evidence most (largest ``|impact|``).
    """

    did: str
    known: bool
    score: float
    global_trust: float
    relative_share: float
    pre_trusted: bool
    evidence: float
    positive: float
    negative: float
    drift: DriftDetected | None
    ring: int
    target_ring: int
    computed_at_ms: int | None
    endorsers: list[Endorsement] = field(default_factory=list)
    receipts: list[ReceiptImpact] = field(default_factory=list)


class ImpactLog:
    """Per agent, the ``size`` receipts with the largest ``|impact|`` (a bounded min-heap)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._heaps: dict[int, list[tuple[float, int, ReceiptImpact]]] = {}
        self.next_seq = 0  # insertion order: the tie-break (kept by snapshots)

    def keep(self, subject: int, receipt: Receipt, impact: float) -> None:
        heap = self._heaps.setdefault(subject, [])
        self.next_seq += 1
        item = (
            abs(impact),
            self.next_seq - 1,
            ReceiptImpact(
                receipt.receipt_id, receipt.observer, receipt.outcome.value, receipt.at_ms, impact
            ),
        )
        if len(heap) < self._size:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)

    def largest(self, subject: int) -> list[ReceiptImpact]:
        """Largest ``|impact|`` first (the later receipt first on ties)."""
        return [item[2] for item in sorted(self._heaps.get(subject, []), reverse=True)]
