"""Operator tooling: OpenTelemetry traces, Prometheus metrics (extra ``observability``)."""
