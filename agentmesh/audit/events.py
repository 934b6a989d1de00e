"""Audit events: every rejection, every session and every lifecycle change.

This module is the plain append-only sink of the mesh runtime. Audit events go
here, never to the logger, and never contain payloads or key material.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audited fact. ``code`` is the stable error or event code."""

    at_ms: int
    node: str
    kind: str
    code: str
    peer: str | None = None
    envelope_id: str | None = None
    subject: str | None = None
    detail: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


@runtime_checkable
class AuditSink(Protocol):
    def append(self, event: AuditEvent) -> None: ...


class MemoryAuditSink:
    """Keeps the newest ``capacity`` events in memory (the embedded default)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._events: deque[AuditEvent] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def append(self, event: AuditEvent) -> None:
        with self._lock:
            self._events.append(event)

    def __iter__(self) -> Iterator[AuditEvent]:
        with self._lock:
            return iter(list(self._events))

    def __len__(self) -> int:
        return len(self._events)

    def of_kind(self, kind: str) -> list[AuditEvent]:
        return [e for e in self if e.kind == kind]

    def codes(self, kind: str | None = None) -> list[str]:
        return [e.code for e in self if kind is None or e.kind == kind]


class JsonlAuditSink:
    """Appends one JSON object per line to a file opened in append mode (0600)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def append(self, event: AuditEvent) -> None:
        with self._lock:
            self._file.write(event.to_json() + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_jsonl_audit(path: str | os.PathLike[str]) -> list[AuditEvent]:
    """Events of a plain JSON-lines log or of a hash-chained one (``agentmesh.audit``)."""
    events = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                data = json.loads(line)
                if "event" in data and "hash" in data:
                    data = data["event"]
                events.append(AuditEvent(**data))
    return events


class FanoutAuditSink:
    """Sends every event to several sinks (e.g. memory for the CLI and a file)."""

    def __init__(self, *sinks: AuditSink) -> None:
        self._sinks = sinks

    def append(self, event: AuditEvent) -> None:
        for sink in self._sinks:
            sink.append(event)
