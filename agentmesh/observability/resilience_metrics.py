"""Prometheus families for circuit breakers, cascades and SLOs (``agentmesh.resilience``).

Bounded labels: breaker states are three; a per-peer ``agentmesh_circuit_open``
gauge is exported only for breakers that are not closed, at most ``top_peers`` of
them (the longest-open first); SLO labels are the capabilities of the node's
resilience document.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from agentmesh.resilience.cascade import CascadeDetector
    from agentmesh.resilience.peers import PeerBreakers
    from agentmesh.resilience.runtime import NodeResilience
    from agentmesh.resilience.slo import SloTracker

BREAKER_STATES = ("closed", "open", "half_open")


def _gauge(
    name: str, doc: str, labels: tuple[str, ...], values: dict[tuple[str, ...], float]
) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def _counter(
    name: str, doc: str, labels: tuple[str, ...], values: dict[tuple[str, ...], float]
) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def resilience_families(resilience: NodeResilience, *, top_peers: int) -> list[Metric]:
    """The families of whatever sections the node's resilience document turned on."""
    families: list[Metric] = []
    if resilience.breakers is not None:
        families += breaker_families(resilience.breakers, top_peers=top_peers)
    if resilience.cascades is not None:
        families += cascade_families(resilience.cascades)
    if resilience.slos is not None:
        families += slo_families(resilience.slos)
    return families


def breaker_families(breakers: PeerBreakers, *, top_peers: int) -> list[Metric]:
    snapshots = breakers.snapshot()
    by_state: Counter[str] = Counter({state: 0 for state in BREAKER_STATES})
    by_state.update(s.state for s in snapshots)
    not_closed = sorted(
        (s for s in snapshots if s.state != "closed"),
        key=lambda s: (s.retry_at_ms if s.retry_at_ms is not None else 0, s.peer),
    )[:top_peers]
    return [
        _gauge(
            "agentmesh_circuit_breakers",
            "Per-peer circuit breakers of this node, by state.",
            ("state",),
            {(state,): float(n) for state, n in by_state.items()},
        ),
        _gauge(
            "agentmesh_circuit_open",
            "1 for each peer whose breaker is open (0.5 half-open); at most top_peers peers.",
            ("peer",),
            {(s.peer,): 1.0 if s.state == "open" else 0.5 for s in not_closed},
        ),
        _counter(
            "agentmesh_circuit_opened",
            "Times a breaker of this node opened.",
            (),
            {(): float(sum(s.opened for s in snapshots))},
        ),
        _counter(
            "agentmesh_circuit_rejected",
            "Requests failed fast (circuit_open) by this node's breakers.",
            (),
            {(): float(sum(s.rejected for s in snapshots))},
        ),
    ]


def cascade_families(cascades: CascadeDetector) -> list[Metric]:
    return [
        _counter(
            "agentmesh_cascades",
            "Cascading-failure detector counts: events raised, failures attributed to a "
            "downstream root, quarantines requested and failed.",
            ("what",),
            {(what,): float(n) for what, n in sorted(cascades.counters.items())},
        )
    ]


def slo_families(slos: SloTracker) -> list[Metric]:
    snapshots = slos.snapshot()
    success: dict[tuple[str, ...], float] = {}
    latency_ok: dict[tuple[str, ...], float] = {}
    budget: dict[tuple[str, ...], float] = {}
    burn: dict[tuple[str, ...], float] = {}
    burning: dict[tuple[str, ...], float] = {}
    events: dict[tuple[str, ...], float] = {}
    for s in snapshots:
        key = (s.capability,)
        success[key] = s.success_rate
        if s.latency_ok_rate is not None:
            latency_ok[key] = s.latency_ok_rate
        budget[key] = s.error_budget_remaining
        burn[(s.capability, "short")] = s.burn_rate
        burn[(s.capability, "long")] = s.burn_rate_long
        burning[key] = 1.0 if s.burning else 0.0
        events[key] = float(s.total)
    return [
        _gauge(
            "agentmesh_slo_success_rate",
            "Success rate in the SLO window.",
            ("capability",),
            success,
        ),
        _gauge(
            "agentmesh_slo_latency_ok_rate",
            "Share of requests within the latency objective's threshold.",
            ("capability",),
            latency_ok,
        ),
        _gauge(
            "agentmesh_slo_error_budget_remaining",
            "Error budget left in the window (1 = untouched, 0 = spent, < 0 = overspent).",
            ("capability",),
            budget,
        ),
        _gauge(
            "agentmesh_slo_burn_rate",
            "Error-budget burn rate (1 = spending exactly the budget), short and long window.",
            ("capability", "window"),
            burn,
        ),
        _gauge(
            "agentmesh_slo_burning", "1 when both windows burn too fast.", ("capability",), burning
        ),
        _gauge(
            "agentmesh_slo_events", "Requests counted in the SLO window.", ("capability",), events
        ),
    ]


__all__ = [
    "BREAKER_STATES",
    "breaker_families",
    "cascade_families",
    "resilience_families",
    "slo_families",
]
