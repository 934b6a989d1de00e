"""The trust engine: evidence in, local trust, global trust, drift, rings out.

Pure and I/O-free: the mesh, the simulations and external harnesses drive it
directly. Not thread-safe: one owner calls it (the node's event loop).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

import networkx as nx
import numpy as np
import numpy.typing as npt

from iatp.clock import Clock, SystemClock
from iatp.did import is_did
from trust.accuracy import accuracy_factors
from trust.config import TrustConfig
from trust.credibility import rater_flow, vouches
from trust.drift import DriftMonitor
from trust.edges import EdgeStore, LocalTrust, check_snapshot
from trust.errors import (
    EvidenceFromFuture,
    InvalidEvidence,
    MalformedSnapshot,
    SelfEvidence,
    SnapshotMismatch,
    StaleReceipt,
    TrustError,
)
from trust.events import DriftDetected, RingChanged, TrustEvent, TrustListener
from trust.evidence import Outcome, Receipt
from trust.explain import Endorsement, Explanation, ImpactLog
from trust.export import to_networkx
from trust.propagation import FloatArray, PropagationResult, Propagator
from trust.ring_bounds import AgentStanding, EdgeEvidence, ring_bounds
from trust.rings import (
    RING_SANDBOX,
    RingLadder,
)
from trust.state import EngineState, capture, config_items, restore
from trust.window import ReceiptWindow

logger = logging.getLogger(__name__)


class TrustEngine:
    """Signed-evidence trust with decay, drift detection and EigenTrust propagation.

    Args:
        pre_trusted: DIDs that anchor the propagation (the paper's pre-trusted peers).
            Empty means uniform anchoring, which Sybils can exploit: set it in production.
        clock: time source for decay and the future-skew check.
        config: model parameters (:class:`TrustConfig`).
    """

    def __init__(
        self,
        pre_trusted: Iterable[str] = (),
        clock: Clock | None = None,
        config: TrustConfig | None = None,
    ) -> None:
        self.config = config or TrustConfig()
        self.clock: Clock = clock or SystemClock()
        self._dids: list[str] = []
        self._ids: dict[str, int] = {}
        self._edges = EdgeStore()
        self._propagator = Propagator()
        self._rings = RingLadder(self.config)
        self._drift: dict[int, DriftMonitor] = {}
        self._flagged: set[int] = set()
        self._work: dict[str, FloatArray] = {}
        self._anchor_cache: FloatArray = np.zeros(0)
        self._drift_events: dict[int, DriftDetected] = {}
        self._impacts = ImpactLog(self.config.explain_top)
        self._seen = ReceiptWindow(self.config.receipt_horizon_ms)
        self._listeners: list[TrustListener] = []
        self._trust: FloatArray = np.zeros(0)
        self._score_array: FloatArray = np.zeros(0)
        self._credibility_array: FloatArray = np.zeros(0)
        self._evidence: FloatArray = np.zeros(0)
        self._negative: FloatArray | None = None
        self._last: PropagationResult | None = None
        self._retain: FloatArray | None = None
        # Rater accuracy factors of the latest recompute (the next one starts there).
        self._accuracy: FloatArray | None = None
        self._computed_at: int | None = None
        self.recomputes = 0
        self.rejections: Counter[str] = Counter()
        self._pre_trusted: set[int] = set()
        for did in sorted(set(pre_trusted)):
            self._pre_trusted.add(self._agent(did))
        self._refresh_scores(self._anchor())

    # -- agents ---------------------------------------------------------------

    def _check_name(self, did: str) -> None:
        if did not in self._ids and self.config.validate_dids and not is_did(did):
            raise InvalidEvidence(f"{did[:80]!r} is not a did:key")

    def _agent(self, did: str) -> int:
        idx = self._ids.get(did)
        if idx is None:
            self._check_name(did)
            idx = len(self._dids)
            self._ids[did] = idx
            self._dids.append(did)
            self._rings.add()
        return idx

    @property
    def agents(self) -> list[str]:
        """Every DID the engine has heard of (observers, subjects, pre-trusted)."""
        return list(self._dids)

    @property
    def pre_trusted(self) -> frozenset[str]:
        return frozenset(self._dids[i] for i in self._pre_trusted)

    def is_pre_trusted(self, did: str) -> bool:
        """True for an anchor of the propagation (cheaper than ``did in pre_trusted``)."""
        idx = self._ids.get(did)
        return idx is not None and idx in self._pre_trusted

    def __contains__(self, did: object) -> bool:
        return did in self._ids

    def __len__(self) -> int:
        return len(self._dids)

    # -- events ---------------------------------------------------------------

    def add_listener(self, callback: TrustListener) -> Callable[[], None]:
        """Call ``callback(event)`` on every :class:`DriftDetected` / :class:`RingChanged`.

        The engine's state is updated before listeners run, so ``ring(did)`` inside a
        listener already answers the new ring. A listener that raises is logged and
        skipped. Returns a function that removes the listener.
        """
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def _emit(self, event: TrustEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("trust listener %r failed on %s", listener, type(event).__name__)

    # -- evidence -------------------------------------------------------------

    def record(self, evidence: Receipt) -> bool:
        """Fold one already-verified receipt in. Returns False for a duplicate id.

        Raises:
            SelfEvidence: observer and subject are the same agent.
            EvidenceFromFuture: the receipt is further ahead than ``max_future_skew_ms``.
            StaleReceipt: the receipt is older than ``receipt_horizon_ms`` behind the
                newest receipt recorded (its id may have been forgotten).
            InvalidEvidence: not a Receipt, or an agent name is not a did:key.
            Every refusal is also counted by code in ``engine.rejections``.
        """
        try:
            return self._record(evidence)
        except TrustError as exc:
            self.rejections[exc.code] += 1
            raise

    def _record(self, evidence: Receipt) -> bool:
        if not isinstance(evidence, Receipt):
            raise InvalidEvidence(f"expected a Receipt, got {type(evidence).__name__}")
        rid = evidence.receipt_id
        if rid in self._seen:
            return False
        if evidence.observer == evidence.subject:
            raise SelfEvidence("an agent cannot report on itself", receipt_id=rid)
        now = self.clock.now_ms()
        if evidence.at_ms > now + self.config.max_future_skew_ms:
            raise EvidenceFromFuture(
                f"at_ms is {evidence.at_ms - now} ms ahead of the clock", receipt_id=rid
            )
        floor = self._seen.floor_ms
        if floor is not None and evidence.at_ms < floor:
            raise StaleReceipt(
                f"at_ms is {floor - evidence.at_ms} ms older than the replay horizon",
                receipt_id=rid,
                horizon_floor_ms=floor,
            )
        self._check_name(evidence.subject)  # before adding anyone: nothing half-applied
        observer = self._agent(evidence.observer)
        subject = self._agent(evidence.subject)
        self._seen.add(rid, evidence.at_ms)
        severity = evidence.outcome.severity
        weight = evidence.weight
        positive = weight if evidence.outcome is Outcome.SUCCESS else 0.0
        negative = weight * severity
        self._edges.fold(
            observer, subject, positive, negative, evidence.at_ms, self.config.half_life_ms
        )
        credibility = self.credibility_of(observer)
        impact = (positive - negative) * credibility
        self._impacts.keep(subject, evidence, impact)
        if not self.config.drift_detection:
            return True
        monitor = self._drift.get(subject)
        if monitor is None:
            monitor = self._drift[subject] = DriftMonitor(self.config)
        kind = monitor.observe(severity, credibility, evidence.action, self.config)
        if kind is not None:
            self._flagged.add(subject)
            self._on_drift(subject, kind, evidence, monitor.cusum, monitor.sandboxed)
        elif not monitor.flagged and subject in self._flagged:
            self._flagged.discard(subject)
            self._drift_events.pop(subject, None)
        return True

    def load_local_trust(
        self,
        agents: Sequence[str],
        observer: npt.ArrayLike,
        subject: npt.ArrayLike,
        positive: npt.ArrayLike,
        negative: npt.ArrayLike,
        at_ms: npt.ArrayLike,
    ) -> None:
        """Bulk-load local trust into an engine that holds no evidence yet.

        For snapshot restores and benchmarks: edge ``k`` says ``agents[observer[k]]``
        holds ``positive[k]`` / ``negative[k]`` evidence about ``agents[subject[k]]``,
        decayed to ``at_ms[k]``. Nothing is loaded if any check fails.

        Raises:
            InvalidEvidence: evidence was already recorded, an array has the wrong
                length, an index is out of range, an edge repeats or is a self-loop,
                an amount is negative or not finite, or an agent is not a did:key.
        """
        if self._edges.count or len(self._seen):
            raise InvalidEvidence("load_local_trust needs an engine without evidence")
        obs, sub, pos, neg, last = check_snapshot(
            len(agents), observer, subject, positive, negative, at_ms
        )
        if len(set(agents)) != len(agents):
            raise InvalidEvidence("an agent appears twice in the snapshot")
        if self.config.validate_dids:
            bad = next((d for d in agents if d not in self._ids and not is_did(d)), None)
            if bad is not None:
                raise InvalidEvidence(f"{bad[:80]!r} is not a did:key")
        local = [self._agent(did) for did in agents]
        mapping = np.asarray(local, dtype=np.int64)
        self._edges.load(mapping[obs], mapping[sub], pos, neg, last)

    def export_state(self) -> EngineState:
        """A copy of the folded state, enough to continue folding elsewhere (snapshots)."""
        return capture(self)

    def load_state(self, state: EngineState) -> None:
        """Start from ``state`` (made by :meth:`export_state`) instead of folding history.

        The engine must hold no evidence yet, and its config and pre-trusted agents must
        be the state's: anchors always come from this node's configuration, never from
        a snapshot. Nothing is loaded if any check fails.

        Raises:
            SnapshotMismatch: evidence was already recorded, or the config or the
                pre-trusted agents differ.
            MalformedSnapshot: an agent is not a did:key, or the edges are invalid
                (repeats, self-loops, negative or non-finite amounts).
        """
        if self._edges.count or len(self._seen) or len(self._dids) != len(self._pre_trusted):
            raise SnapshotMismatch("load_state needs an engine without evidence")
        if dict(state.config) != dict(config_items(self.config)):
            differing = sorted(
                k for k, v in state.config if dict(config_items(self.config)).get(k) != v
            )
            raise SnapshotMismatch(f"engine config differs: {', '.join(differing)[:200]}")
        anchors = {state.agents[i] for i in state.pre_trusted}
        if anchors != set(self.pre_trusted):
            raise SnapshotMismatch("pre-trusted agents differ from this node's")
        if self.config.validate_dids:
            bad = next((d for d in state.agents if not is_did(d)), None)
            if bad is not None:
                raise MalformedSnapshot(f"{bad[:80]!r} is not a did:key")
        try:
            check_snapshot(
                len(state.agents),
                state.observer,
                state.subject,
                state.alpha,
                state.beta,
                state.last,
            )
        except InvalidEvidence as exc:
            raise MalformedSnapshot(exc.reason) from exc
        restore(self, state)

    @property
    def remembered_receipts(self) -> int:
        """Receipt ids held for replay protection (bounded by ``receipt_horizon_ms``)."""
        return len(self._seen)

    @property
    def replay_floor_ms(self) -> int | None:
        """Receipts older than this are refused as stale (None: no horizon)."""
        return self._seen.floor_ms

    def record_many(self, receipts: Iterable[Receipt]) -> int:
        """Record each receipt; returns how many were new (duplicates are skipped)."""
        return sum(1 for receipt in receipts if self.record(receipt))

    def has_seen(self, receipt_id: str) -> bool:
        return receipt_id in self._seen

    def credibility_of(self, idx: int) -> float:
        """How much an observer's reports count in drift detection, in [0, 1]."""
        if idx in self._pre_trusted:
            return 1.0
        if idx in self._flagged:
            return 0.0
        credibility = self._credibility_array
        return credibility.item(idx) if idx < len(credibility) else 0.0

    def _on_drift(
        self, subject: int, kind: str, receipt: Receipt, statistic: float, sandbox: bool
    ) -> None:
        """Flag ``subject``; sandbox it too when the alarm is hard or confirms an
        earlier failure-rate alarm (``trust/drift.py``)."""
        now = self.clock.now_ms()
        did = self._dids[subject]
        event = DriftDetected(did, kind, receipt.receipt_id, statistic, now)
        self._drift_events[subject] = event
        logger.info("drift %s on %s (receipt %s)", kind, did, receipt.receipt_id)
        self._emit(event)
        if not sandbox:
            return
        old = self._rings.demote_now(subject)
        if old != RING_SANDBOX:
            self._emit(RingChanged(did, old, RING_SANDBOX, "drift", receipt.receipt_id, now))

    # -- global trust ---------------------------------------------------------

    def _anchor(self) -> FloatArray:
        n = len(self._dids)
        if len(self._anchor_cache) == n:
            return self._anchor_cache
        anchor = self._anchor_cache = np.zeros(n)
        if self._pre_trusted:
            anchor[list(self._pre_trusted)] = 1.0 / len(self._pre_trusted)
        elif n:
            anchor[:] = 1.0 / n
        return anchor

    def flagged(self, did: str) -> bool:
        """True while a drift flag is raised on ``did`` (sandboxed or on probation)."""
        idx = self._ids.get(did)
        return idx is not None and idx in self._flagged

    def sandboxed(self, did: str) -> bool:
        """True while ``did``'s drift flag also holds it in ring 3 (a hard alarm or a
        confirmed failure-rate alarm; a first failure-rate alarm means probation)."""
        idx = self._ids.get(did)
        monitor = self._drift.get(idx) if idx is not None and idx in self._flagged else None
        return monitor is not None and monitor.sandboxed

    def _sandboxed_set(self) -> list[int]:
        return sorted(i for i in self._flagged if (m := self._drift.get(i)) and m.sandboxed)

    def recompute(self, *, at_ms: int | None = None, cold: bool = False) -> int:
        """Recompute global trust, scores, evidence volumes and rings.

        Args:
            at_ms: evaluation time for decay (default: the clock). Nodes that must agree
                bit for bit evaluate at the same ``at_ms``.
            cold: start from the anchor instead of the previous vector (and the
                rater accuracy from scratch).

        Returns:
            The number of power iterations.
        """
        now = self.clock.now_ms() if at_ms is None else at_ms
        n = len(self._dids)
        cfg = self.config
        count = self._edges.count
        alpha, beta, weights = (self._buffer(name, count) for name in ("alpha", "beta", "w"))
        self._edges.decayed_into(now, cfg.half_life_ms, alpha, beta)
        np.multiply(beta, -cfg.negative_weight, out=weights)
        weights += alpha
        np.maximum(weights, 0.0, out=weights)
        observers = self._edges.observer[:count]
        suspended = sorted(self._flagged)
        if suspended:
            silenced = np.zeros(n, dtype=bool)
            silenced[suspended] = True
            weights[silenced[observers]] = 0.0
        anchor = self._anchor()
        retain = accuracy = None
        if cfg.rater_accuracy:
            retain = accuracy_factors(
                observers,
                self._edges.subject[:count],
                alpha,
                beta,
                self._credibility_array[:n]
                if len(self._credibility_array) >= n
                else np.pad(self._credibility_array, (0, n - len(self._credibility_array))),
                np.asarray(sorted(self._pre_trusted), dtype=np.int64),
                floor=cfg.accuracy_floor,
                full=cfg.accuracy_full,
                start=None if cold else self._accuracy,
                passes=3 if cold or self._accuracy is None else 2,
            )
            self._accuracy = accuracy = retain.copy()
            if suspended:
                retain[suspended] = 0.0
        self._retain = retain
        result = self._propagator.run(
            self._edges,
            n,
            weights,
            anchor,
            damping=cfg.damping,
            tolerance=cfg.tolerance,
            max_iterations=cfg.max_iterations,
            cold=cold,
            retain=retain,
        )
        self._last, self._computed_at = result, now
        self._refresh_scores(result.trust)
        subjects = self._edges.subject[:count]
        if cfg.credibility == "flow":
            self._credibility_array = self._rater_credibility(
                observers, subjects, alpha, beta, retain, suspended
            )
        credibility = self._credibility_array
        credible = np.take(credibility, observers, out=self._buffer("credible", count))
        anchors = np.zeros(n, dtype=bool)
        anchors[sorted(self._pre_trusted)] = True
        counted = self._counted(credible, alpha, beta, anchors, observers)
        part = np.multiply(alpha, counted, out=weights)  # the weights are no longer needed
        positive = np.bincount(subjects, weights=part, minlength=n).astype(np.float64)
        np.multiply(beta, counted, out=part)
        negative = np.bincount(subjects, weights=part, minlength=n).astype(np.float64)
        self._evidence, self._negative = positive + negative, negative
        if cfg.ring_policy == "evidence":
            target, floor = ring_bounds(
                cfg,
                EdgeEvidence(observers, subjects, alpha, beta, credible),
                AgentStanding(
                    current=self._rings._ring[:n],
                    scores=self._score_array,
                    evidence=self._evidence,
                    positive=positive,
                    negative=negative,
                    trust=self._trust,
                    # accuracy before the flag silenced the agent's own reports: a
                    # flagged agent's ring answers for its service, not its reports
                    retain=accuracy if accuracy is not None else np.ones(n),
                    anchors=anchors,
                    sandboxed=self._sandboxed_set(),
                    drift=self._drift,
                ),
            )
            changes = self._rings.step_with_floor(target, floor)
        else:
            changes = self._rings.step(self._score_array, self._evidence, self._sandboxed_set())
        for did_idx, old, new in changes:
            self._emit(RingChanged(self._dids[did_idx], old, new, "recompute", None, now))
        self.recomputes += 1
        return result.iterations

    def _rater_credibility(
        self,
        observers: npt.NDArray[np.int64],
        subjects: npt.NDArray[np.int64],
        alpha: FloatArray,
        beta: FloatArray,
        retain: FloatArray | None,
        flagged: Sequence[int],
    ) -> FloatArray:
        """Rater credibility: max(vouch flow, service share) x rater accuracy.

        See ``trust/credibility.py``: it is not the observer's service trust, so
        honest requesters that rarely serve count, and a Sybil region behind ``k``
        attack edges holds ``O(k)`` credibility whatever its size.
        """
        cfg = self.config
        n = len(self._dids)
        if not self._pre_trusted:
            # The flow has no source under uniform anchoring (which Sybils can exploit
            # anyway, see the class docstring): the service share, as with "share".
            return self._share_credibility(self._trust)
        accuracy = np.ones(n) if retain is None else retain[:n]
        trusted = accuracy >= 0.5
        if len(flagged):
            trusted[np.asarray(flagged, dtype=np.int64)] = False
        vouch = vouches(alpha, beta, observers, trusted, cfg.ring2_quality)
        seeds = np.asarray(sorted(self._pre_trusted), dtype=np.int64)
        flow = rater_flow(
            observers,
            subjects,
            vouch,
            n,
            seeds,
            capacity=cfg.rater_capacity,
            decay=cfg.rater_capacity_decay,
        )
        # Service trust still lends credibility to agents the flow did not reach (its
        # capacity ran out, or nobody audited them): min(1, n_eff * t / share), with
        # n_eff the total flow, so Sybil identities cannot inflate it (the total flow
        # of a Sybil region is O(k)) and the region's service trust stays bounded by
        # the personalised random walk.
        share = self._share_credibility(self._trust[:n], float(flow.sum()))
        credibility: FloatArray = np.maximum(flow, share) * accuracy
        credibility[seeds] = 1.0
        return credibility

    def _counted(
        self,
        credible: FloatArray,
        alpha: FloatArray,
        beta: FloatArray,
        anchors: npt.NDArray[np.bool_],
        observers: npt.NDArray[np.int64],
    ) -> FloatArray:
        """Per edge, the weight of its evidence in the credible sums: the observer's
        credibility times ``min(1, cap / volume)`` (``observer_evidence_cap``), so one
        observer weighs at most ``cap`` interactions about a subject, whatever it
        reports (pre-trusted observers are not capped): a credible rater that pads its
        reports about a friend or a victim cannot outweigh the other observers."""
        cap = self.config.observer_evidence_cap
        if cap <= 0.0:
            return credible
        counted = self._buffer("counted", len(credible))
        np.add(alpha, beta, out=counted)
        np.maximum(counted, cap, out=counted)
        np.divide(cap, counted, out=counted)
        counted[anchors[observers]] = 1.0
        np.multiply(counted, credible, out=counted)
        return counted

    def _buffer(self, name: str, size: int) -> FloatArray:
        """A reusable float buffer of ``size`` (grown geometrically, never shrunk)."""
        buffer = self._work.get(name)
        if buffer is None or len(buffer) < size:
            grown = 0 if buffer is None else 2 * len(buffer)
            buffer = self._work[name] = np.empty(max(size, grown))
        return buffer[:size]

    def _refresh_scores(self, trust: FloatArray) -> None:
        self._trust = trust
        positive = trust > 1e-12 * max(float(trust.max()), 1e-300) if len(trust) else trust
        share = trust * max(int(np.count_nonzero(positive)), 1)
        self._score_array = share / (share + 1.0)
        if self.config.credibility == "share":
            self._credibility_array = self._share_credibility(trust)
        # else: the vouch flow is computed by recompute (and kept in snapshots)

    def _share_credibility(self, trust: FloatArray, n_eff: float | None = None) -> FloatArray:
        """``min(1, n_eff * t / credibility_share) ** credibility_exponent``.

        ``n_eff`` defaults to the number of agents with ``t > 0``; pre-trusted agents 1.
        """
        if n_eff is None:
            positive = trust > 1e-12 * max(float(trust.max()), 1e-300) if len(trust) else trust
            n_eff = max(int(np.count_nonzero(positive)), 1)
        credibility = np.minimum(trust * (n_eff / self.config.credibility_share), 1.0)
        if self.config.credibility_exponent != 1.0:
            np.power(credibility, self.config.credibility_exponent, out=credibility)
        credibility[list(self._pre_trusted)] = 1.0
        return credibility

    # -- queries --------------------------------------------------------------

    def score(self, did: str) -> float:
        """Global score in [0, 1] (0.0 for unknown agents); fits ``Directory.find(rank=...)``."""
        idx = self._ids.get(did)
        scores = self._score_array
        if idx is None or idx >= len(scores):
            return 0.0
        if idx in self._flagged:
            return float(scores.item(idx)) * self.config.drift_penalty
        return float(scores.item(idx))

    def global_trust(self, did: str) -> float:
        """The agent's entry ``t`` of the global trust vector (sums to 1; 0.0 if unknown)."""
        idx = self._ids.get(did)
        trust = self._trust
        return float(trust.item(idx)) if idx is not None and idx < len(trust) else 0.0

    def ring(self, did: str) -> int:
        """Ring 1, 2 or 3 (never 0; 3 for unknown agents). Demotions are visible at once."""
        idx = self._ids.get(did)
        return RING_SANDBOX if idx is None else self._rings.ring(idx)

    def evidence(self, did: str) -> float:
        """Credible evidence volume about ``did`` at the last recompute."""
        idx = self._ids.get(did)
        return float(self._evidence[idx]) if idx is not None and idx < len(self._evidence) else 0.0

    def credible_evidence(self, did: str) -> tuple[float, float]:
        """(positive, negative) evidence about ``did`` weighted by observer credibility.

        As of the last recompute. ``(0, 0)`` means unknown; a large negative part means
        distrusted: callers that explore newcomers should skip the latter.
        """
        idx = self._ids.get(did)
        if idx is None or idx >= len(self._evidence):
            return 0.0, 0.0
        negative = float(self._negative[idx]) if self._negative is not None else 0.0
        return float(self._evidence[idx]) - negative, negative

    def local(self, observer: str, subject: str, *, at_ms: int | None = None) -> LocalTrust:
        """The observer's own beta estimate of the subject (0.5 with 0 evidence if none)."""
        now = self.clock.now_ms() if at_ms is None else at_ms
        o, s = self._ids.get(observer), self._ids.get(subject)
        e = self._edges.edge(o, s) if o is not None and s is not None else None
        a, b = (0.0, 0.0) if e is None else self._edges.local(e, now, self.config.half_life_ms)
        return LocalTrust(observer, subject, (a + 1.0) / (a + b + 2.0), a + b, a, b, now)

    def local_estimate(self, observer: str, subject: str) -> float | None:
        """:meth:`local`'s estimate now, or None when the observer has no evidence.

        The cheap form for selection loops (no :class:`LocalTrust` is built).
        """
        o, s = self._ids.get(observer), self._ids.get(subject)
        e = self._edges.edge(o, s) if o is not None and s is not None else None
        if e is None:
            return None
        a, b = self._edges.local(e, self.clock.now_ms(), self.config.half_life_ms)
        return (a + 1.0) / (a + b + 2.0) if a + b > 1e-9 else None  # LocalTrust.known

    def local_estimates(self, observer: str, subjects: Sequence[str]) -> list[float | None]:
        """:meth:`local_estimate` for each subject, with one lookup of the observer and clock."""
        o = self._ids.get(observer)
        if o is None:
            return [None] * len(subjects)
        edges, now, half_life = self._edges, self.clock.now_ms(), self.config.half_life_ms
        estimates: list[float | None] = [None] * len(subjects)
        for i, s in enumerate(map(self._ids.get, subjects)):
            e = None if s is None else edges.edge(o, s)
            if e is not None:
                a, b = edges.local(e, now, half_life)
                estimates[i] = (a + 1.0) / (a + b + 2.0) if a + b > 1e-9 else None
        return estimates

    def top(self, limit: int = 10) -> list[tuple[str, float, int]]:
        """The ``limit`` best (did, score, ring), best first, ties by DID."""
        ranked = sorted((-self.score(d), d) for d in self._dids)[:limit]
        return [(d, -s, self.ring(d)) for s, d in ranked]

    def explain(self, did: str) -> Explanation:
        """The score, its components and the receipts that moved it most."""
        idx = self._ids.get(did)
        if idx is None:
            return Explanation(
                did,
                False,
                0.0,
                0.0,
                0.0,
                False,
                0.0,
                0.0,
                0.0,
                None,
                RING_SANDBOX,
                RING_SANDBOX,
                self._computed_at,
            )
        now = self.clock.now_ms() if self._computed_at is None else self._computed_at
        trust = float(self._trust[idx]) if idx < len(self._trust) else 0.0
        scores = self._score_array
        share = float(scores[idx] / (1.0 - scores[idx])) if idx < len(scores) else 0.0
        endorsers: list[Endorsement] = []
        positive = negative = 0.0
        last = self._last
        for edge, observer, contribution in last.incoming(idx) if last is not None else ():
            a, b = self._edges.local(edge, now, self.config.half_life_ms)
            positive, negative = positive + a, negative + b
            endorsers.append(
                Endorsement(self._dids[observer], contribution, (a + 1) / (a + b + 2), a + b)
            )
        endorsers.sort(key=lambda e: (-e.contribution, e.observer))
        receipts = self._impacts.largest(idx)
        return Explanation(
            did=did,
            known=True,
            score=self.score(did),
            global_trust=trust,
            relative_share=share,
            pre_trusted=idx in self._pre_trusted,
            evidence=self.evidence(did),
            positive=positive,
            negative=negative,
            drift=self._drift_events.get(idx) if self.flagged(did) else None,
            ring=self.ring(did),
            target_ring=self._rings.target(idx),
            computed_at_ms=self._computed_at,
            endorsers=endorsers[: self.config.explain_top],
            receipts=receipts,
        )

    def local_trust_edges(self, *, at_ms: int | None = None) -> Iterator[LocalTrust]:
        """Every (observer, subject) pair with evidence, decayed to ``at_ms``, in fold order."""
        now = self.clock.now_ms() if at_ms is None else at_ms
        alpha, beta = self._edges.decayed(now, self.config.half_life_ms)
        observers, subjects = self._edges.observer, self._edges.subject
        for e in range(self._edges.count):
            a, b = float(alpha[e]), float(beta[e])
            yield LocalTrust(
                self._dids[int(observers[e])],
                self._dids[int(subjects[e])],
                (a + 1.0) / (a + b + 2.0),
                a + b,
                a,
                b,
                now,
            )

    def to_networkx(self, *, at_ms: int | None = None) -> nx.DiGraph:
        """The trust graph for analysis and export (see :func:`trust.export.to_networkx`)."""
        return to_networkx(self, at_ms=at_ms)
