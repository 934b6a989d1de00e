"""The hash-chained, append-only audit log.

Each line of the log file is one record::

    {"seq": n, "prev": hex(hash of record n-1), "event": {every AuditEvent field}, "hash": hex}

    hash = SHA-256("agentmesh/1/audit-record\\x00" || canonical_json([seq, prev, event]))

The hash covers *every* field of the event (the decision code, the detail, the
peer, the time ...), the sequence number and the previous record's hash, so an
edited, removed, inserted or reordered record breaks the chain at a place the
verifier can name. Somebody who rewrites the file and recomputes every hash is
caught by the signed checkpoints (:mod:`agentmesh.auditlog.checkpoint`) that the
node publishes and its peers witness.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agentmesh.audit import AuditEvent

RECORD_DOMAIN = b"agentmesh/1/audit-record\x00"
GENESIS = "0" * 64
EVENT_FIELDS = ("at_ms", "node", "kind", "code", "peer", "envelope_id", "subject", "detail")


def canonical_json(value: object) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def record_hash(seq: int, prev: str, event: dict[str, Any]) -> str:
    return hashlib.sha256(RECORD_DOMAIN + canonical_json([seq, prev, event])).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainedRecord:
    """One record of the chain."""

    seq: int
    prev: str
    event: AuditEvent
    hash: str

    @classmethod
    def create(cls, seq: int, prev: str, event: AuditEvent) -> ChainedRecord:
        return cls(seq, prev, event, record_hash(seq, prev, asdict(event)))

    def to_line(self) -> str:
        body = {"seq": self.seq, "prev": self.prev, "event": asdict(self.event), "hash": self.hash}
        return canonical_json(body).decode()


def encode_record(seq: int, prev: str, event: AuditEvent) -> tuple[str, str]:
    """(hash, line) of the next record, serializing the event once.

    Byte-for-byte what :func:`record_hash` and :meth:`ChainedRecord.to_line` give
    (``prev`` and the hash are hex, so they need no escaping); tests check it.
    """
    event_json = canonical_json(asdict(event))
    head = f'[{seq},"{prev}",'.encode()
    digest = hashlib.sha256(RECORD_DOMAIN + head + event_json + b"]").hexdigest()
    line = f'{{"event":{event_json.decode()},"hash":"{digest}","prev":"{prev}","seq":{seq}}}'
    return digest, line


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the chain ends: the last sequence number and its hash."""

    seq: int
    hash: str


CheckpointHook = Callable[[ChainHead], None]


class ChainedAuditLog:
    """An :class:`~agentmesh.audit.AuditSink` that appends hash-chained records to a file.

    Reopening an existing file continues its chain. The file is opened in
    append mode with permissions 0600.

    Args:
        path: the log file.
        on_head: called with the new head after every ``checkpoint_every`` records
            (the checkpoint signer hooks in here).
        checkpoint_every: records between two ``on_head`` calls (0: never).
        fsync: call ``os.fsync`` after every record (durable, slower).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_head: CheckpointHook | None = None,
        checkpoint_every: int = 0,
        fsync: bool = False,
    ) -> None:
        self.path = Path(path)
        self._head = _read_head(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._on_head = on_head
        self._every = checkpoint_every
        self._fsync = fsync
        self._since_checkpoint = 0

    @property
    def head(self) -> ChainHead:
        return self._head

    def set_checkpoint_hook(self, hook: CheckpointHook | None, every: int) -> None:
        self._on_head = hook
        self._every = every

    def append(self, event: AuditEvent) -> None:
        """Append ``event`` as the next record (thread-safe)."""
        with self._lock:
            seq = self._head.seq + 1
            digest, line = encode_record(seq, self._head.hash, event)
            self._file.write(line + "\n")
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
            self._head = ChainHead(seq, digest)
            self._since_checkpoint += 1
            due = self._every > 0 and self._since_checkpoint >= self._every
            if due:
                self._since_checkpoint = 0
            head = self._head
        if due and self._on_head is not None:
            self._on_head(head)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> ChainedAuditLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_head(path: Path) -> ChainHead:
    if not path.exists() or path.stat().st_size == 0:
        return ChainHead(0, GENESIS)
    last = ""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                last = line
    data = json.loads(last)
    return ChainHead(int(data["seq"]), str(data["hash"]))


def iter_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every non-empty line."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


__all__ = [
    "EVENT_FIELDS",
    "GENESIS",
    "RECORD_DOMAIN",
    "ChainHead",
    "ChainedAuditLog",
    "ChainedRecord",
    "CheckpointHook",
    "canonical_json",
    "encode_record",
    "iter_lines",
    "record_hash",
]
