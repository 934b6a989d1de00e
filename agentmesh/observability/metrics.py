"""Prometheus metrics of one node, read from the node's own state at scrape time.

The core keeps plain counters (``NodeCounters``, ``Governor.decisions``,
``RingEnforcer.events``, ``KillSwitch.transitions``, the saga coordinator's
counters, each watched bucket's revision and lag) and never imports a metrics
library: a :class:`NodeMetrics` collector turns them into metric families when
Prometheus scrapes. Two hooks exist only while a collector is attached: the
signature-verification histogram (``node.verify_latency``; without it the node
pays a ``None`` check) and a trust-engine listener that counts ring changes.

Scrapes arrive on the HTTP server's threads; the node's state belongs to its
event loop, so every scrape reads it *on the loop* (one hop, ``scrape_timeout``
at most): the numbers are consistent and no dictionary changes size under a
reader. Each node gets its own :class:`~prometheus_client.CollectorRegistry`,
so several nodes can serve metrics from one process.

Every label set is bounded; the metric list, labels and bounds are in
``docs/metrics.md``. Per-peer trust scores are capped to the ``top_peers``
best-scored agents (default :data:`DEFAULT_TOP_PEERS`).

Usage (what ``agentmesh node run --metrics-port`` does)::

    server = serve_node_metrics(node, governance=governance, trust=trust, port=9464)
    ...
    server.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from agentmesh.directory.watcher import watched_buckets
from agentmesh.node.latency import LatencyHistogram
from agentmesh.observability.resilience_metrics import resilience_families
from trust.events import RingChanged, TrustEvent

if TYPE_CHECKING:
    from agentmesh.node.node import MeshNode
    from agentmesh.policy.killswitch import KillSwitch
    from agentmesh.policy.runtime import NodeGovernance
    from agentmesh.resilience.runtime import NodeResilience
    from agentmesh.saga.coordinator import SagaCoordinator
    from agentmesh.trustnet.service import MeshTrust
    from trust.selection import SelectionPolicy

DEFAULT_TOP_PEERS = 50
SCRAPE_TIMEOUT = 2.0
MESSAGE_KINDS = ("inbox", "session", "sealed", "topic", "reply", "handshake")
RINGS = (0, 1, 2, 3)
CHOICE_RULES = ("trusted", "explore", "newcomer", "audit")
SAGA_ENDINGS = ("completed", "compensated", "needs-attention")
BLOCKING_STATUSES = ("quarantined", "revoked")
# Elevation events of the ring enforcer that change an agent's effective ring.
_ELEVATION_CHANGES = {
    "elevated": "promotion",
    "elevation_ended": "demotion",
    "elevation_expired": "demotion",
}


def _counter(
    name: str, doc: str, labels: Iterable[str], values: Mapping[tuple[str, ...], float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    return family


def _gauge(
    name: str, doc: str, labels: Iterable[str], values: Mapping[tuple[str, ...], float]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    return family


def _by_kind(counts: Counter[str]) -> dict[tuple[str, ...], float]:
    """Every message kind (zero when unseen), and any other kind a counter holds."""
    return {(kind,): float(counts.get(kind, 0)) for kind in (*MESSAGE_KINDS, *counts)}


class NodeMetrics(Collector):
    """A Prometheus collector over one node and what runs around it.

    Create it on the node's event loop (it remembers the loop scrapes hop to).

    Args:
        node: the (running) node.
        governance: its governance (policy decisions, ring elevations, quarantines).
        trust: its trust service (scores, rings, ring changes).
        sagas: a saga coordinator driving sagas from this node.
        resilience: its circuit breakers, cascade detector and SLOs.
        selection: the trust-aware selection policy this node chooses providers
            with (choices by rule, candidates filtered, the configured rates).
        top_peers: how many of the best-scored peers get a per-peer trust gauge.
        scrape_timeout: seconds a scrape waits for the event loop.
    """

    def __init__(
        self,
        node: MeshNode,
        *,
        governance: NodeGovernance | None = None,
        trust: MeshTrust | None = None,
        sagas: SagaCoordinator | None = None,
        resilience: NodeResilience | None = None,
        selection: SelectionPolicy | None = None,
        top_peers: int = DEFAULT_TOP_PEERS,
        scrape_timeout: float = SCRAPE_TIMEOUT,
    ) -> None:
        if top_peers < 0:
            raise ValueError("top_peers must be >= 0")
        self.node = node
        self.governance = governance
        self.trust = trust
        self.sagas = sagas
        self.resilience = resilience
        self.selection = selection
        self.top_peers = top_peers
        self.scrape_timeout = scrape_timeout
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._owns_latency = node.verify_latency is None
        self.verify_latency = node.verify_latency or LatencyHistogram()
        node.verify_latency = self.verify_latency
        # (reason, direction) -> count, from the trust engine's RingChanged events.
        self.trust_ring_changes: Counter[tuple[str, str]] = Counter()
        self._unlisten: Callable[[], None] | None = None
        if trust is not None:
            self._unlisten = trust.engine.add_listener(self._on_trust_event)

    def close(self) -> None:
        """Detach the hooks (the histogram and the trust listener). Idempotent."""
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        if self._owns_latency and self.node.verify_latency is self.verify_latency:
            self.node.verify_latency = None

    def _on_trust_event(self, event: TrustEvent) -> None:
        if isinstance(event, RingChanged):
            direction = "demotion" if event.demotion else "promotion"
            self.trust_ring_changes[(event.reason, direction)] += 1

    # -- collection ----------------------------------------------------------------------------

    def collect(self) -> Iterable[Metric]:
        """The metric families now (read on the node's event loop).

        Raises:
            TimeoutError: the event loop did not answer within ``scrape_timeout``
                (the scrape fails with an HTTP 500: a stuck loop shows as ``up == 0``).
        """
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running() or _on(loop):
            return self.families()
        result: concurrent.futures.Future[list[Metric]] = concurrent.futures.Future()

        def read() -> None:
            if not result.set_running_or_notify_cancel():
                return
            try:
                result.set_result(self.families())
            except BaseException as exc:
                result.set_exception(exc)

        loop.call_soon_threadsafe(read)
        try:
            return result.result(timeout=self.scrape_timeout)
        except concurrent.futures.TimeoutError:
            result.cancel()
            raise TimeoutError("the node's event loop did not answer a scrape in time") from None

    def families(self) -> list[Metric]:
        """Every metric family (call on the node's event loop)."""
        families = self._node_families()
        ring_changes: Counter[tuple[str, str]] = Counter(self.trust_ring_changes)
        governance = self.governance
        if governance is not None and governance.governance is not None:
            families += self._policy_families(governance.governance.governor.decisions)
            events = governance.governance.rings.events
            for code, direction in _ELEVATION_CHANGES.items():
                if events.get(code):
                    ring_changes[(code, direction)] += events[code]
            families.append(
                _counter(
                    "agentmesh_ring_elevations_refused",
                    "Signed ring elevations this node refused.",
                    (),
                    {(): float(events.get("elevation_refused", 0))},
                )
            )
        families.append(
            _counter(
                "agentmesh_ring_changes",
                "Ring changes of agents seen by this node (trust recomputes and drift, "
                "signed elevations), by reason and direction.",
                ("reason", "direction"),
                {key: float(value) for key, value in ring_changes.items()},
            )
        )
        if governance is not None and governance.kill_switch is not None:
            families += self._quarantine_families(governance.kill_switch)
        if self.trust is not None:
            families += self._trust_families(self.trust)
        if self.selection is not None:
            families += self._selection_families(self.selection)
        if self.sagas is not None:
            families += self._saga_families(self.sagas)
        if self.resilience is not None:
            families += resilience_families(self.resilience, top_peers=self.top_peers)
        families += self._watch_families()
        return families

    def _node_families(self) -> list[Metric]:
        node, counters = self.node, self.node.counters
        info = GaugeMetricFamily(
            "agentmesh_node_info", "This node (value 1).", labels=["did", "mesh"]
        )
        info.add_metric([node.did, node.config.mesh], 1.0)
        families: list[Metric] = [
            info,
            _counter(
                "agentmesh_messages_received",
                "Frames that arrived, by subject kind (before any check).",
                ("kind",),
                _by_kind(counters.received_by),
            ),
            _counter(
                "agentmesh_messages_sent",
                "Frames sent, by subject kind.",
                ("kind",),
                _by_kind(counters.sent_by),
            ),
        ]
        for name, doc, value in (
            ("accepted", "Messages that passed every check.", counters.accepted),
            ("handled", "Messages whose handler returned.", counters.handled),
            ("handler_errors", "Messages whose handler raised.", counters.handler_errors),
            ("handshakes", "Handshakes this node completed as initiator.", counters.handshakes),
        ):
            families.append(_counter(f"agentmesh_messages_{name}", doc, (), {(): float(value)}))
        families.append(
            _counter(
                "agentmesh_rejected",
                "Refused frames and messages, by refusal code.",
                ("code",),
                {(code,): float(count) for code, count in counters.rejected.items()},
            )
        )
        histogram = self.verify_latency
        verify = HistogramMetricFamily(
            "agentmesh_verify_seconds",
            "Seconds from a signed frame's arrival to its signature verdict (queueing included).",
            buckets=[(_le(bound), float(count)) for bound, count in histogram.cumulative()],
            sum_value=histogram.sum,
        )
        families.append(verify)
        return families

    @staticmethod
    def _policy_families(decisions: Counter[tuple[str, str]]) -> list[Metric]:
        return [
            _counter(
                "agentmesh_policy_decisions",
                "Governor decisions, by the rule (or check) that decided and the outcome "
                "(allowed, or the refusal code).",
                ("rule", "outcome"),
                {key: float(value) for key, value in decisions.items()},
            )
        ]

    @staticmethod
    def _quarantine_families(kill_switch: KillSwitch) -> list[Metric]:
        blocked = Counter(status.value for status in kill_switch.listed().values())
        return [
            _gauge(
                "agentmesh_quarantined_agents",
                "Agents this node blocks now, by status.",
                ("status",),
                {(status,): float(blocked.get(status, 0)) for status in BLOCKING_STATUSES},
            ),
            _counter(
                "agentmesh_quarantine_transitions",
                "Agents that became blocked (quarantined) or unblocked (released) here.",
                ("transition",),
                {
                    (name,): float(kill_switch.transitions.get(name, 0))
                    for name in ("quarantined", "released")
                },
            ),
            _counter(
                "agentmesh_quarantine_orders_received",
                "Quarantine orders received on the control subject.",
                (),
                {(): float(kill_switch.received)},
            ),
            _counter(
                "agentmesh_quarantine_orders_rejected",
                "Quarantine orders refused (bad signature, not an authority, ...), by code.",
                ("code",),
                {(code,): float(count) for code, count in kill_switch.rejected.items()},
            ),
        ]

    def _trust_families(self, trust: MeshTrust) -> list[Metric]:
        engine = trust.engine
        agents = engine.agents
        by_ring = Counter(engine.ring(did) for did in agents)
        own = self.node.did
        best = [(did, score) for did, score, _ in engine.top(self.top_peers + 1) if did != own]
        families: list[Metric] = [
            _gauge(
                "agentmesh_trust_agents",
                "Agents the trust engine knows.",
                (),
                {(): float(len(agents))},
            ),
            _gauge(
                "agentmesh_trust_agents_by_ring",
                "Agents the trust engine knows, by the ring it gives them.",
                ("ring",),
                {(str(ring),): float(by_ring.get(ring, 0)) for ring in RINGS},
            ),
            _gauge(
                "agentmesh_trust_score",
                f"Global trust score in [0, 1] of the best-scored peers (at most "
                f"{self.top_peers}).",
                ("peer",),
                {(did,): score for did, score in best[: self.top_peers]},
            ),
            _counter(
                "agentmesh_trust_recomputes",
                "Global trust recomputations.",
                (),
                {(): float(engine.recomputes)},
            ),
        ]
        with contextlib.suppress(Exception):  # the ledger exists once the service started
            families.append(
                _counter(
                    "agentmesh_trust_receipts_folded",
                    "Signed receipts folded into the trust engine.",
                    (),
                    {(): float(trust.ledger.folded)},
                )
            )
        return families

    @staticmethod
    def _selection_families(policy: SelectionPolicy) -> list[Metric]:
        config = policy.config
        return [
            _counter(
                "agentmesh_selection_choices",
                "Providers chosen by the trust-aware selection policy, by the rule that "
                "chose (trusted, explore, newcomer, audit; see docs/trust.md).",
                ("rule",),
                {(rule,): float(policy.chosen_by[rule]) for rule in CHOICE_RULES},
            ),
            _counter(
                "agentmesh_selection_filtered",
                "Candidates the distrust filter left out.",
                (),
                {(): float(policy.filtered)},
            ),
            _gauge(
                "agentmesh_selection_configured_rate",
                "The selection policy's configured probabilities, by rule.",
                ("rule",),
                {("explore",): config.explore, ("audit",): config.audit},
            ),
        ]

    @staticmethod
    def _saga_families(sagas: SagaCoordinator) -> list[Metric]:
        counters = sagas.counters
        endings = (counters.completed, counters.compensated, counters.needs_attention)
        families: list[Metric] = [
            _gauge(
                "agentmesh_sagas_driving",
                "Sagas this replica drives now.",
                (),
                {(): float(sagas.driving)},
            ),
            _counter(
                "agentmesh_sagas_finished",
                "Sagas this replica drove to an end, by final status.",
                ("status",),
                {(status,): float(n) for status, n in zip(SAGA_ENDINGS, endings, strict=True)},
            ),
            _counter(
                "agentmesh_saga_transitions",
                "Saga state changes this replica logged, by record kind.",
                ("kind",),
                {(kind,): float(n) for kind, n in counters.by_kind.items()},
            ),
        ]
        for name, doc, value in (
            ("resumed", "Sagas this replica took the lease of.", counters.resumed),
            ("step_attempts", "Step requests sent.", counters.attempts),
            ("handoffs", "Steps handed off to another agent.", counters.handoffs),
            ("ownership_lost", "Sagas another replica took over.", counters.ownership_lost),
        ):
            families.append(_counter(f"agentmesh_saga_{name}", doc, (), {(): float(value)}))
        return families

    def _watch_families(self) -> list[Metric]:
        lag: dict[tuple[str, ...], float] = {}
        revision: dict[tuple[str, ...], float] = {}
        resets: dict[tuple[str, ...], float] = {}
        for watched in watched_buckets(self.node.transport):
            key = (watched.bucket,)
            # Two watches of one bucket over one transport: report the one further behind.
            lag[key] = max(lag.get(key, 0.0), float(watched.lag))
            revision[key] = min(revision.get(key, float(watched.revision)), watched.revision)
            resets[key] = resets.get(key, 0.0) + watched.resets
        return [
            _gauge(
                "agentmesh_watch_lag",
                "Changes of a watched KV bucket not yet applied by this node "
                "(JetStream's pending count at the last applied change).",
                ("bucket",),
                lag,
            ),
            _gauge(
                "agentmesh_watch_revision",
                "The last revision of a watched KV bucket this node applied.",
                ("bucket",),
                revision,
            ),
            _counter(
                "agentmesh_watch_resets",
                "Times a watched bucket was lost (deleted) and watched again.",
                ("bucket",),
                resets,
            ),
        ]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread is running ``loop`` now."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log on stderr (a node's stderr is for its own problems)."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """The HTTP endpoint (``GET /metrics``) of one node's collector, in a thread.

    Args:
        metrics: the collector (closed with the server).
        host: address to bind (loopback by default; ``::1`` and other IPv6 work).
        port: port to bind; 0 takes any free port (see :attr:`port`).

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(self, metrics: NodeMetrics, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.metrics = metrics
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(metrics)
        server_class = _Server6 if ":" in host else _Server
        self._httpd = make_server(
            host, port, make_wsgi_app(self.registry), server_class, handler_class=_QuietHandler
        )
        self.host = host
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"metrics:{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._httpd.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving, free the port, detach the collector's hooks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=2.0)
        self.metrics.close()


def serve_node_metrics(
    node: MeshNode,
    *,
    governance: NodeGovernance | None = None,
    trust: MeshTrust | None = None,
    sagas: SagaCoordinator | None = None,
    resilience: NodeResilience | None = None,
    selection: SelectionPolicy | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    top_peers: int = DEFAULT_TOP_PEERS,
) -> MetricsServer:
    """Serve ``node``'s metrics on ``http://host:port/metrics`` (call on its event loop).

    Raises:
        OSError: the address cannot be bound.
        ValueError: ``top_peers`` is negative.
    """
    metrics = NodeMetrics(
        node,
        governance=governance,
        trust=trust,
        sagas=sagas,
        resilience=resilience,
        selection=selection,
        top_peers=top_peers,
    )
    try:
        return MetricsServer(metrics, host=host, port=port)
    except BaseException:
        metrics.close()
        raise


__all__ = [
    "DEFAULT_TOP_PEERS",
    "MESSAGE_KINDS",
    "MetricsServer",
    "NodeMetrics",
    "serve_node_metrics",
]
