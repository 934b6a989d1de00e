"""OpenTelemetry behind the core's tracing seam (:mod:`agentmesh.telemetry`).

``enable_tracing(exporter)`` installs a :class:`MeshTracer` for the process: every
signed message then carries its W3C trace context in a signed envelope header,
and receivers continue the trace only from verified envelopes. Spans:

=====================================  =========  ==========================================
span                                    kind       where
=====================================  =========  ==========================================
``iatp.request TYPE``                   client     ``node.request`` (the caller)
``iatp.send TYPE`` / ``iatp.publish``   producer   one-way messages and broadcasts
``iatp.receive TYPE``                   server     interceptors of the receiving node
                                        consumer   (revocation, policy and ring, trust)
``iatp.handle TYPE``                    internal   the receiving node's handler
``agentmesh.tool ACTION``               internal   a governed tool call
``saga.run NAME`` / ``saga.step``       internal   a saga, each step and compensation
=====================================  =========  ==========================================

Attributes: ``agentmesh.node`` / ``agentmesh.sender`` / ``agentmesh.peer`` (DIDs),
``agentmesh.ring``, ``agentmesh.decision`` and ``agentmesh.rule`` (policy),
``agentmesh.refusal_code`` with an error status on every refusal.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentmesh import telemetry

_PROPAGATOR = TraceContextTextMapPropagator()
_KINDS: dict[str, trace.SpanKind] = {
    "internal": trace.SpanKind.INTERNAL,
    "client": trace.SpanKind.CLIENT,
    "server": trace.SpanKind.SERVER,
    "producer": trace.SpanKind.PRODUCER,
    "consumer": trace.SpanKind.CONSUMER,
}
REFUSAL_CODE = "agentmesh.refusal_code"


class MeshSpan:
    """An OpenTelemetry span as the core sees it (:class:`agentmesh.telemetry.Span`)."""

    __slots__ = ("span",)

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def set_attribute(self, key: str, value: telemetry.AttributeValue) -> None:
        self.span.set_attribute(key, value)

    def refuse(self, code: str, reason: str) -> None:
        self.span.set_attribute(REFUSAL_CODE, code)
        self.span.set_status(Status(StatusCode.ERROR, f"{code}: {reason}"[:300]))

    def headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self.span))
        return carrier


class MeshTracer:
    """The process tracer: an SDK ``TracerProvider`` of its own (the global one is untouched)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("agentmesh")

    @classmethod
    def with_exporters(
        cls,
        exporters: Sequence[SpanExporter],
        *,
        service_name: str = "agentmesh",
        batch: bool = True,
    ) -> MeshTracer:
        """A tracer exporting to each exporter (batched, or one by one with ``batch=False``)."""
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        for exporter in exporters:
            processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
            provider.add_span_processor(processor)
        return cls(provider)

    @contextmanager
    def span(
        self,
        name: str,
        *,
        kind: telemetry.SpanKind = "internal",
        attributes: Mapping[str, telemetry.AttributeValue] | None = None,
        carrier: Mapping[str, str] | None = None,
    ) -> Iterator[MeshSpan]:
        # A carrier comes from a verified envelope; a malformed traceparent in it is
        # ignored by the propagator (the span then starts a trace of its own).
        parent = _PROPAGATOR.extract(carrier) if carrier is not None else None
        with self._tracer.start_as_current_span(
            name,
            context=parent,
            kind=_KINDS[kind],
            attributes=attributes,
            record_exception=False,
        ) as span:
            yield MeshSpan(span)

    def inject(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier

    def current(self) -> MeshSpan | None:
        span = trace.get_current_span()
        return MeshSpan(span) if span.is_recording() else None

    def force_flush(self) -> bool:
        return self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()


def enable_tracing(
    *exporters: SpanExporter, service_name: str = "agentmesh", batch: bool = True
) -> MeshTracer:
    """Trace this process's mesh traffic; returns the tracer (``disable_tracing`` undoes it)."""
    tracer = MeshTracer.with_exporters(exporters, service_name=service_name, batch=batch)
    telemetry.install_tracer(tracer)
    return tracer


def disable_tracing() -> None:
    """Stop tracing (flushes and shuts down the installed tracer, if it is a MeshTracer)."""
    previous = telemetry.install_tracer(None)
    if isinstance(previous, MeshTracer):
        previous.shutdown()


def span_record(span: ReadableSpan) -> dict[str, object]:
    """One finished span as a flat JSON-able record (the ``--trace-file`` line format)."""
    context = span.get_span_context()
    parent = span.parent
    assert context is not None
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "kind": span.kind.name.lower(),
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name.lower(),
        "status_description": span.status.description,
        "attributes": dict(span.attributes or {}),
        "service": (span.resource.attributes.get("service.name") if span.resource else None),
    }


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span to a file as one JSON object per line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            for span in spans:
                self._file.write(json.dumps(span_record(span), sort_keys=True, default=str) + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def file_exporter(path: str | Path) -> SpanExporter:
    return JsonLinesSpanExporter(path)


def otlp_exporter(endpoint: str) -> SpanExporter:
    """OTLP over HTTP/protobuf to a collector (``http://127.0.0.1:4318/v1/traces``)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint)


def read_trace_file(path: str | Path) -> list[dict[str, object]]:
    """The span records of a ``--trace-file`` (for tests and ``agentmesh`` tooling)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


__all__ = [
    "REFUSAL_CODE",
    "JsonLinesSpanExporter",
    "MeshSpan",
    "MeshTracer",
    "disable_tracing",
    "enable_tracing",
    "file_exporter",
    "otlp_exporter",
    "read_trace_file",
    "span_record",
]
