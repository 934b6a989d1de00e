"""What ``agentmesh node run`` turns on for operators: traces and Prometheus metrics.

This module imports OpenTelemetry and prometheus-client only when tracing or
metrics are turned on (``--trace-file``, ``--otlp-endpoint``, ``--metrics-port``),
so a node without the ``observability`` extra runs as before.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

from agentmesh import telemetry

if TYPE_CHECKING:
    from agentmesh.node.node import MeshNode
    from agentmesh.observability.tracing import MeshTracer
    from agentmesh.policy.runtime import NodeGovernance
    from agentmesh.resilience.runtime import NodeResilience
    from agentmesh.trustnet.service import MeshTrust


@dataclass(frozen=True, slots=True)
class ObservabilityOptions:
    """``node run`` options for operators (every one off by default).

    Attributes:
        metrics_port: serve Prometheus metrics on this port (0: any free port).
        metrics_host: the address the metrics endpoint binds (loopback by default).
        metrics_top_peers: per-peer trust scores are exported for this many of the
            best-scored peers only (bounded cardinality, see docs/metrics.md).
        trace_file: append finished spans to this file, one JSON object per line.
        otlp_endpoint: export spans over OTLP/HTTP to this collector URL.
        service_name: the OpenTelemetry ``service.name`` of this process.
    """

    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_top_peers: int = 50
    trace_file: str | None = None
    otlp_endpoint: str | None = None
    service_name: str = "agentmesh-node"

    @property
    def tracing(self) -> bool:
        return self.trace_file is not None or self.otlp_endpoint is not None

    @property
    def enabled(self) -> bool:
        return self.tracing or self.metrics_port is not None


def missing_packages(*, metrics: bool, tracing: bool) -> list[str]:
    """The extra's packages that the asked-for features need and this Python lacks."""
    wanted = [
        *(("prometheus-client", "prometheus_client"),) * metrics,
        *(("opentelemetry-sdk", "opentelemetry.sdk"),) * tracing,
    ]
    missing = []
    for package, module in wanted:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package is missing
            found = False
        if not found:
            missing.append(package)
    return missing


class NodeObservability:
    """Installs the tracer and serves metrics for one node process (an async context)."""

    def __init__(self, options: ObservabilityOptions, *, emit: Callable[..., None]) -> None:
        self.options = options
        self._emit = emit
        self._tracer: MeshTracer | None = None
        self._previous: telemetry.Tracer | None = None
        self._stack = contextlib.ExitStack()
        self.metrics_port: int | None = None

    async def __aenter__(self) -> Self:
        if self.options.tracing:
            from agentmesh.observability.tracing import MeshTracer, file_exporter, otlp_exporter

            exporters = []
            if self.options.trace_file is not None:
                exporters.append(file_exporter(self.options.trace_file))
            if self.options.otlp_endpoint is not None:
                exporters.append(otlp_exporter(self.options.otlp_endpoint))
            self._tracer = MeshTracer.with_exporters(
                exporters, service_name=self.options.service_name
            )
            self._previous = telemetry.install_tracer(self._tracer)
            self._emit("tracing", exporters=[type(e).__name__ for e in exporters])
        return self

    def attach(
        self,
        node: MeshNode,
        *,
        governance: NodeGovernance | None = None,
        trust: MeshTrust | None = None,
        resilience: NodeResilience | None = None,
    ) -> None:
        """Register the node's metrics and start the metrics endpoint (if asked for)."""
        if self.options.metrics_port is None:
            return
        from agentmesh.observability.metrics import serve_node_metrics

        server = serve_node_metrics(
            node,
            governance=governance,
            trust=trust,
            resilience=resilience,
            host=self.options.metrics_host,
            port=self.options.metrics_port,
            top_peers=self.options.metrics_top_peers,
        )
        self._stack.callback(server.close)
        self.metrics_port = server.port
        self._emit("metrics", host=self.options.metrics_host, port=server.port)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()
        if self._tracer is not None:
            telemetry.install_tracer(self._previous)
            self._tracer.shutdown()
            self._tracer = None
