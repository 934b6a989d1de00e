"""The folded state of a :class:`~trust.engine.TrustEngine`, as canonical bytes and back.

A snapshot must let another engine *continue folding* and end bit for bit where
an engine that folded the whole history ends: so it holds everything a fold or a
recompute reads, in the engine's own order (agent indices, edge order), with
floats as exact IEEE-754 bytes:

* agents (index order), the pre-trusted indices and the engine config;
* edges: observer, subject, alpha, beta, last (little-endian int64 / float64);
* rings (current, target, promotion streak), the last trust vector, the
  warm-start vector, evidence volumes and their negative part, the rater
  credibilities, recompute count and time;
* drift monitors (CUSUM, baseline, flag, streak, action window and history, the
  failure-rate test with its reports not yet learnt),
  raised flags and their events, the explain log (top receipts per agent);
* the receipt-id window (horizon, watermark, remembered ids with their times).

The body is one msgpack map with a fixed key order (``pack_state``). Decoding
(``unpack_state``) checks every type, length and range and raises
:class:`~trust.errors.MalformedSnapshot`; nothing is applied until all of it
passed (:meth:`TrustEngine.load_state`).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import numpy.typing as npt

from trust.config import TrustConfig
from trust.drift import DriftMonitor
from trust.edges import EdgeStore
from trust.errors import MalformedSnapshot
from trust.events import DriftDetected
from trust.explain import ImpactLog, ReceiptImpact
from trust.propagation import Propagator
from trust.rings import RingLadder

if TYPE_CHECKING:
    from trust.engine import TrustEngine

STATE_VERSION = 6
MAX_STATE_BYTES = 1 << 31

ConfigValue = int | float | bool | str | None


@dataclass(frozen=True, slots=True)
class DriftState:
    """One agent's :class:`~trust.drift.DriftMonitor`."""

    agent: int
    cusum: float
    baseline: float
    flagged: bool
    streak: int
    window: tuple[str, ...]
    history: tuple[tuple[str, int], ...]
    last_divergence: float
    checks: int
    bernoulli: float = 0.0  # the failure-rate CUSUM and its learnt rate (seen, bad_seen)
    seen: float = 0.0
    bad_seen: float = 0.0
    pending_seen: float = 0.0  # the block of reports not yet learnt into p0
    pending_bad: float = 0.0
    recent: tuple[tuple[float, float], ...] = ()  # the last credible reports
    sandboxed: bool = False  # the flag also holds the agent in ring 3
    probation: float = 0.0  # evidence for p0 since a failure-rate alarm
    fresh: int = 0  # the newest recent reports not in the pending block yet


@dataclass(frozen=True, slots=True)
class ImpactEntry:
    """One entry of the explain log's per-agent heap (``seq`` breaks ties)."""

    magnitude: float
    seq: int
    impact: ReceiptImpact


@dataclass(frozen=True, slots=True)
class EngineState:
    """Everything an engine needs to continue folding (see the module docstring)."""

    config: tuple[tuple[str, ConfigValue], ...]
    agents: tuple[str, ...]
    pre_trusted: tuple[int, ...]
    observer: npt.NDArray[np.int64]
    subject: npt.NDArray[np.int64]
    alpha: npt.NDArray[np.float64]
    beta: npt.NDArray[np.float64]
    last: npt.NDArray[np.float64]
    ring: npt.NDArray[np.int8]
    target: npt.NDArray[np.int8]
    streak: npt.NDArray[np.int32]
    trust: npt.NDArray[np.float64]
    previous: npt.NDArray[np.float64] | None
    evidence: npt.NDArray[np.float64]
    negative: npt.NDArray[np.float64] | None
    credibility: npt.NDArray[np.float64]
    accuracy: npt.NDArray[np.float64] | None
    computed_at: int | None
    recomputes: int
    flagged: tuple[int, ...]
    drift: tuple[DriftState, ...]
    drift_events: tuple[tuple[int, DriftDetected], ...]
    impacts: tuple[tuple[int, tuple[ImpactEntry, ...]], ...]
    impact_seq: int
    horizon_ms: int | None
    watermark_ms: int
    receipt_ids: tuple[tuple[str, int], ...]


def config_items(config: TrustConfig) -> tuple[tuple[str, ConfigValue], ...]:
    return tuple((f.name, getattr(config, f.name)) for f in fields(config))


# -- capture and restore (the engine's private fields are read here, not in the engine) --


def capture(engine: TrustEngine) -> EngineState:
    """A copy of ``engine``'s folded state (O(agents + edges + window))."""
    e = engine
    n, count = len(e._dids), e._edges.count
    negative = e._negative
    rings = e._rings
    previous = e._propagator.previous
    impacts = tuple(
        (agent, tuple(ImpactEntry(m, s, impact) for m, s, impact in sorted(heap)))
        for agent, heap in sorted(e._impacts._heaps.items())
    )
    return EngineState(
        config=config_items(e.config),
        agents=tuple(e._dids),
        pre_trusted=tuple(sorted(e._pre_trusted)),
        observer=e._edges.observer[:count].copy(),
        subject=e._edges.subject[:count].copy(),
        alpha=e._edges.alpha[:count].copy(),
        beta=e._edges.beta[:count].copy(),
        last=e._edges.last[:count].copy(),
        ring=rings._ring[:n].copy(),
        target=rings._target[:n].copy(),
        streak=rings._streak[:n].copy(),
        trust=np.array(e._trust, dtype=np.float64),
        previous=None if previous is None else np.array(previous, dtype=np.float64),
        evidence=np.array(e._evidence, dtype=np.float64),
        negative=None if negative is None else np.array(negative, dtype=np.float64),
        credibility=np.array(e._credibility_array, dtype=np.float64),
        accuracy=None if e._accuracy is None else e._accuracy.copy(),
        computed_at=e._computed_at,
        recomputes=e.recomputes,
        flagged=tuple(sorted(e._flagged)),
        drift=tuple(
            DriftState(
                agent,
                m.cusum,
                m.baseline,
                m.flagged,
                m.streak,
                tuple(m.window),
                tuple(m.history.items()),
                m.last_divergence,
                m._checks,
                m.bernoulli,
                m.seen,
                m.bad_seen,
                m.pending_seen,
                m.pending_bad,
                tuple(m.recent),
                m.sandboxed,
                m.probation,
                m.fresh,
            )
            for agent, m in sorted(e._drift.items())
        ),
        drift_events=tuple(sorted(e._drift_events.items())),
        impacts=impacts,
        impact_seq=e._impacts.next_seq,
        horizon_ms=e._seen.horizon_ms,
        watermark_ms=e._seen.watermark_ms,
        receipt_ids=tuple(e._seen.entries()),
    )


# -- bytes ------------------------------------------------------------------------


def _bytes(array: npt.NDArray[Any] | None, dtype: str) -> bytes | None:
    return None if array is None else np.ascontiguousarray(array, dtype=dtype).tobytes()


def pack_state(state: EngineState) -> bytes:
    """Canonical bytes of ``state`` (a msgpack map with a fixed key order)."""
    doc: dict[str, object] = {
        "v": STATE_VERSION,
        "config": [list(item) for item in state.config],
        "agents": list(state.agents),
        "pre_trusted": list(state.pre_trusted),
        "edges": [
            _bytes(state.observer, "<i8"),
            _bytes(state.subject, "<i8"),
            _bytes(state.alpha, "<f8"),
            _bytes(state.beta, "<f8"),
            _bytes(state.last, "<f8"),
        ],
        "rings": [
            _bytes(state.ring, "<i1"),
            _bytes(state.target, "<i1"),
            _bytes(state.streak, "<i4"),
        ],
        "trust": _bytes(state.trust, "<f8"),
        "previous": _bytes(state.previous, "<f8"),
        "evidence": _bytes(state.evidence, "<f8"),
        "negative": _bytes(state.negative, "<f8"),
        "credibility": _bytes(state.credibility, "<f8"),
        "accuracy": _bytes(state.accuracy, "<f8"),
        "computed_at": state.computed_at,
        "recomputes": state.recomputes,
        "flagged": list(state.flagged),
        "drift": [
            [
                d.agent,
                d.cusum,
                d.baseline,
                d.flagged,
                d.streak,
                list(d.window),
                [list(h) for h in d.history],
                d.last_divergence,
                d.checks,
                d.bernoulli,
                d.seen,
                d.bad_seen,
                d.pending_seen,
                d.pending_bad,
                [list(p) for p in d.recent],
                d.sandboxed,
                d.probation,
                d.fresh,
            ]
            for d in state.drift
        ],
        "drift_events": [
            [agent, ev.did, ev.kind, ev.receipt_id, ev.statistic, ev.at_ms]
            for agent, ev in state.drift_events
        ],
        "impacts": [
            [
                agent,
                [
                    [
                        x.magnitude,
                        x.seq,
                        x.impact.receipt_id,
                        x.impact.observer,
                        x.impact.outcome,
                        x.impact.at_ms,
                        x.impact.impact,
                    ]
                    for x in entries
                ],
            ]
            for agent, entries in state.impacts
        ],
        "impact_seq": state.impact_seq,
        "window": [state.horizon_ms, state.watermark_ms, [list(r) for r in state.receipt_ids]],
    }
    return msgpack.packb(doc, use_bin_type=True)


_KEYS = frozenset(
    {
        "v",
        "agents",
        "pre_trusted",
        "config",
        "edges",
        "rings",
        "trust",
        "previous",
        "evidence",
        "negative",
        "credibility",
        "accuracy",
        "computed_at",
        "recomputes",
        "flagged",
        "drift",
        "drift_events",
        "impacts",
        "impact_seq",
        "window",
    }
)


def unpack_state(data: bytes) -> EngineState:
    """Parse :func:`pack_state` bytes, checking every field.

    Raises:
        MalformedSnapshot: not the state format, a field of the wrong type, length
            or range, or an index outside the agent list.
    """
    try:
        return _unpack(data)
    except MalformedSnapshot:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise MalformedSnapshot(f"engine state: {exc}"[:200]) from exc
    except Exception as exc:  # msgpack raises its own family for truncated or bad bytes
        raise MalformedSnapshot(f"engine state: {type(exc).__name__}") from exc


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise MalformedSnapshot(f"engine state: {what}")


def _int(value: object, what: str, low: int = 0, high: int = 2**63 - 1) -> int:
    _need(type(value) is int and low <= value <= high, f"{what} must be an int in range")
    assert isinstance(value, int)
    return value


def _float(value: object, what: str) -> float:
    _need(type(value) is float and math.isfinite(value), f"{what} must be a finite float")
    assert isinstance(value, float)
    return value


def _str(value: object, what: str) -> str:
    _need(isinstance(value, str) and 0 < len(value) <= 1024, f"{what} must be a string")
    assert isinstance(value, str)
    return value


def _list(value: object, what: str, length: int | None = None) -> list[Any]:
    _need(isinstance(value, list), f"{what} must be an array")
    assert isinstance(value, list)
    _need(length is None or len(value) == length, f"{what} must have {length} items")
    return value


def _array(value: object, dtype: str, length: int | None, what: str) -> npt.NDArray[Any]:
    _need(isinstance(value, bytes), f"{what} must be bytes")
    assert isinstance(value, bytes)
    size = np.dtype(dtype).itemsize
    _need(len(value) % size == 0, f"{what} has a partial item")
    array = np.frombuffer(value, dtype=dtype).astype(dtype[1:] if dtype[0] == "<" else dtype)
    _need(length is None or len(array) == length, f"{what} must have {length} items")
    if array.dtype.kind == "f":
        _need(bool(np.all(np.isfinite(array))), f"{what} must be finite")
    return array


def _unpack(data: bytes) -> EngineState:
    _need(isinstance(data, bytes) and len(data) <= MAX_STATE_BYTES, "not bytes or too large")
    doc = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    _need(isinstance(doc, dict) and set(doc) == _KEYS, "unexpected keys")
    _need(doc["v"] == STATE_VERSION, "unsupported state version")
    agents = tuple(_str(a, "agent") for a in _list(doc["agents"], "agents"))
    n = len(agents)
    _need(len(set(agents)) == n, "an agent appears twice")

    def index(value: object, what: str) -> int:
        return _int(value, what, 0, n - 1)

    config: list[tuple[str, ConfigValue]] = []
    for item in _list(doc["config"], "config"):
        name, value = _list(item, "config item", 2)
        _need(value is None or type(value) in (int, float, bool, str), "config value type")
        config.append((_str(name, "config name"), value))
    pre = tuple(index(i, "pre_trusted") for i in _list(doc["pre_trusted"], "pre_trusted"))
    _need(list(pre) == sorted(set(pre)), "pre_trusted must be sorted and unique")
    raw_edges = _list(doc["edges"], "edges", 5)
    observer = _array(raw_edges[0], "<i8", None, "edge observers")
    count = len(observer)
    subject = _array(raw_edges[1], "<i8", count, "edge subjects")
    alpha, beta, last = (_array(raw_edges[k], "<f8", count, "edge amounts") for k in (2, 3, 4))
    raw_rings = _list(doc["rings"], "rings", 3)
    ring = _array(raw_rings[0], "<i1", n, "rings")
    target = _array(raw_rings[1], "<i1", n, "ring targets")
    streak = _array(raw_rings[2], "<i4", n, "ring streaks")
    _need(bool(np.all((ring >= 1) & (ring <= 3) & (target >= 1) & (target <= 3))), "ring range")
    _need(bool(np.all(streak >= 0)), "streak range")
    trust = _array(doc["trust"], "<f8", None, "trust")
    previous = None if doc["previous"] is None else _array(doc["previous"], "<f8", None, "prev")
    evidence = _array(doc["evidence"], "<f8", None, "evidence")
    negative = (
        None if doc["negative"] is None else _array(doc["negative"], "<f8", len(evidence), "neg")
    )
    credibility = _array(doc["credibility"], "<f8", None, "credibility")
    _need(bool(np.all((credibility >= 0) & (credibility <= 1))), "credibility range")
    accuracy = None if doc["accuracy"] is None else _array(doc["accuracy"], "<f8", None, "acc")
    _need(accuracy is None or bool(np.all((accuracy >= 0) & (accuracy <= 1))), "accuracy range")
    for vector in (trust, previous, evidence, credibility, accuracy):
        _need(vector is None or len(vector) <= n, "vector longer than the agent list")
    computed_at = None if doc["computed_at"] is None else _int(doc["computed_at"], "computed_at")
    flagged = tuple(index(i, "flagged") for i in _list(doc["flagged"], "flagged"))
    _need(list(flagged) == sorted(set(flagged)), "flagged must be sorted and unique")
    drift = tuple(_drift_state(item, index) for item in _list(doc["drift"], "drift"))
    _need(len({d.agent for d in drift}) == len(drift), "a drift monitor appears twice")
    events = []
    for item in _list(doc["drift_events"], "drift_events"):
        agent, did, kind, rid, statistic, at_ms = _list(item, "drift event", 6)
        event = DriftDetected(
            _str(did, "did"),
            _str(kind, "kind"),
            _str(rid, "receipt"),
            _float(statistic, "statistic"),
            _int(at_ms, "at_ms"),
        )
        events.append((index(agent, "event agent"), event))
    impacts = []
    for item in _list(doc["impacts"], "impacts"):
        agent, entries = _list(item, "impacts item", 2)
        parsed = []
        for entry in _list(entries, "impact entries"):
            magnitude, seq, rid, observer_did, outcome, at_ms, impact = _list(entry, "impact", 7)
            parsed.append(
                ImpactEntry(
                    _float(magnitude, "magnitude"),
                    _int(seq, "seq"),
                    ReceiptImpact(
                        _str(rid, "receipt"),
                        _str(observer_did, "observer"),
                        _str(outcome, "outcome"),
                        _int(at_ms, "at_ms"),
                        _float(impact, "impact"),
                    ),
                )
            )
        impacts.append((index(agent, "impact agent"), tuple(parsed)))
    horizon, watermark, ids = _list(doc["window"], "window", 3)
    receipt_ids = []
    for item in _list(ids, "receipt ids"):
        rid, at_ms = _list(item, "receipt id", 2)
        receipt_ids.append((_str(rid, "receipt id"), _int(at_ms, "receipt time")))
    return EngineState(
        config=tuple(config),
        agents=agents,
        pre_trusted=pre,
        observer=observer,
        subject=subject,
        alpha=alpha,
        beta=beta,
        last=last,
        ring=ring,
        target=target,
        streak=streak,
        trust=trust,
        previous=previous,
        evidence=evidence,
        negative=negative,
        credibility=credibility,
        accuracy=accuracy,
        computed_at=computed_at,
        recomputes=_int(doc["recomputes"], "recomputes"),
        flagged=flagged,
        drift=drift,
        drift_events=tuple(events),
        impacts=tuple(impacts),
        impact_seq=_int(doc["impact_seq"], "impact_seq"),
        horizon_ms=None if horizon is None else _int(horizon, "horizon", 1),
        watermark_ms=_int(watermark, "watermark"),
        receipt_ids=tuple(receipt_ids),
    )


def _drift_state(item: object, index: Any) -> DriftState:
    (
        agent,
        cusum,
        baseline,
        flagged,
        streak,
        window,
        history,
        divergence,
        checks,
        bernoulli,
        seen,
        bad_seen,
        pending_seen,
        pending_bad,
        recent,
        sandboxed,
        probation,
        fresh,
    ) = _list(item, "drift monitor", 18)
    _need(type(flagged) is bool, "drift flag must be a bool")
    _need(type(sandboxed) is bool and (flagged or not sandboxed), "sandboxed needs a flag")
    pairs = []
    for pair in _list(history, "action history"):
        action, count = _list(pair, "history item", 2)
        pairs.append((_str(action, "action"), _int(count, "count", 1)))
    return DriftState(
        index(agent, "drift agent"),
        _float(cusum, "cusum"),
        _float(baseline, "baseline"),
        flagged,
        _int(streak, "drift streak"),
        tuple(_str(a, "action") for a in _list(window, "action window")),
        tuple(pairs),
        _float(divergence, "divergence"),
        _int(checks, "checks"),
        _float(bernoulli, "failure-rate cusum"),
        _float(seen, "seen"),
        _float(bad_seen, "bad seen"),
        _float(pending_seen, "pending weight"),
        _float(pending_bad, "pending badness"),
        tuple(_report(p) for p in _list(recent, "recent reports")),
        sandboxed,
        _float(probation, "probation"),
        _int(fresh, "fresh reports", 0, len(_list(recent, "recent reports"))),
    )


def _report(item: object) -> tuple[float, float]:
    weight, badness = _list(item, "recent report", 2)
    return _float(weight, "report weight"), _float(badness, "report badness")


def restore(engine: TrustEngine, state: EngineState) -> None:
    """Replace a fresh engine's state with ``state`` (checked by the caller first)."""
    e, cfg = engine, engine.config
    n = len(state.agents)
    e._dids = list(state.agents)
    e._ids = {did: i for i, did in enumerate(state.agents)}
    e._pre_trusted = set(state.pre_trusted)
    e._anchor_cache = np.zeros(0)
    edges = EdgeStore()
    edges.load(state.observer, state.subject, state.alpha, state.beta, state.last)
    e._edges = edges
    e._propagator = Propagator()
    e._propagator.previous = None if state.previous is None else state.previous.copy()
    ladder = RingLadder(cfg)
    capacity = max(len(ladder._ring), 1 << max(n - 1, 1).bit_length())
    for name, values, fill in (
        ("_ring", state.ring, 3),
        ("_target", state.target, 3),
        ("_streak", state.streak, 0),
    ):
        array = np.full(capacity, fill, dtype=values.dtype)
        array[:n] = values
        setattr(ladder, name, array)
    ladder._count = n
    e._rings = ladder
    monitors: dict[int, DriftMonitor] = {}
    for d in state.drift:
        monitor = DriftMonitor(cfg)
        monitor.cusum, monitor.baseline, monitor.flagged = d.cusum, d.baseline, d.flagged
        monitor.streak, monitor.last_divergence, monitor._checks = (
            d.streak,
            d.last_divergence,
            d.checks,
        )
        monitor.window = deque(d.window, maxlen=cfg.action_window)
        monitor.history = Counter(dict(d.history))
        monitor.bernoulli, monitor.seen, monitor.bad_seen = d.bernoulli, d.seen, d.bad_seen
        monitor.pending_seen, monitor.pending_bad = d.pending_seen, d.pending_bad
        monitor.recent.extend(d.recent)
        monitor.sandboxed, monitor.probation = d.sandboxed, d.probation
        monitor.fresh = min(d.fresh, len(monitor.recent))
        monitors[d.agent] = monitor
    e._drift = monitors
    e._flagged = set(state.flagged)
    e._drift_events = dict(state.drift_events)
    impacts = ImpactLog(cfg.explain_top)
    impacts._heaps = {
        agent: [(x.magnitude, x.seq, x.impact) for x in entries] for agent, entries in state.impacts
    }
    for heap in impacts._heaps.values():
        heapq.heapify(heap)
    impacts.next_seq = state.impact_seq
    e._impacts = impacts
    e._seen.restore(state.watermark_ms, state.receipt_ids)
    e._evidence = state.evidence.copy()
    e._negative = None if state.negative is None else state.negative.copy()
    e._last = None
    e._computed_at = state.computed_at
    e.recomputes = state.recomputes
    e._credibility_array = state.credibility.copy()
    e._accuracy = None if state.accuracy is None else state.accuracy.copy()
    e._refresh_scores(state.trust.copy())
