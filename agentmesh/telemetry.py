"""The tracing seam of the core: off (``None``) unless an observability wing installs a tracer.

The core never imports OpenTelemetry. Code on the message path reads the module
attribute :data:`tracer` once and does nothing more when it is ``None``, so
tracing costs one attribute load when it is off. ``agentmesh.observability``
installs an OpenTelemetry-backed :class:`Tracer` with :func:`install_tracer`.

Trace context crosses processes as the W3C ``traceparent`` (and ``tracestate``)
*envelope header*: headers are inside the signed payload, so the context cannot
be lifted onto another message or altered in transit, and a receiver reads it
only after the signature (or session MAC), validity and replay checks passed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Literal, Protocol

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

SpanKind = Literal["internal", "client", "server", "producer", "consumer"]
AttributeValue = str | int | float | bool


class Span(Protocol):
    """What the core may do with a span it opened."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...

    def refuse(self, code: str, reason: str) -> None:
        """Mark the span as failed with an agentmesh refusal (or error) code."""
        ...

    def headers(self) -> dict[str, str]:
        """This span's context as trace headers (to parent a span in another task)."""
        ...


class Tracer(Protocol):
    """A tracer as the core sees it (see ``agentmesh.observability.tracing``)."""

    def span(
        self,
        name: str,
        *,
        kind: SpanKind = "internal",
        attributes: Mapping[str, AttributeValue] | None = None,
        carrier: Mapping[str, str] | None = None,
    ) -> AbstractContextManager[Span]:
        """A span that is current inside the ``with`` block.

        ``carrier``: trace headers taken from a *verified* envelope; the span
        becomes a child of the remote span they name (malformed ones are ignored).
        """
        ...

    def inject(self) -> dict[str, str]:
        """The current span's context as envelope headers (empty when none is current)."""
        ...

    def current(self) -> Span | None:
        """The span current in this context (to annotate it), if any is recording."""
        ...


tracer: Tracer | None = None


def install_tracer(new: Tracer | None) -> Tracer | None:
    """Install (or, with ``None``, remove) the process tracer; returns the previous one."""
    global tracer
    previous, tracer = tracer, new
    return previous


def trace_headers(envelope_headers: tuple[tuple[str, str], ...]) -> dict[str, str] | None:
    """The trace headers among an envelope's (sorted) headers, or ``None``."""
    found = {key: value for key, value in envelope_headers if key in (TRACEPARENT, TRACESTATE)}
    return found or None


def with_trace_context(
    headers: Mapping[str, str] | None, active: Tracer
) -> Mapping[str, str] | None:
    """``headers`` plus the current trace context (explicit headers win)."""
    context = active.inject()
    if not context:
        return headers
    if headers:
        context.update(headers)
    return context


def iter_attributes(
    values: Mapping[str, AttributeValue | None],
) -> Iterator[tuple[str, AttributeValue]]:
    """The non-``None`` attributes (spans refuse ``None`` values)."""
    for key, value in values.items():
        if value is not None:
            yield key, value
