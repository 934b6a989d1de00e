"""The hash-chained, append-only audit log.

Each line of the log file is one record::

    {"seq": n, "prev": hex(hash of record n-1), "event": {every AuditEvent field}, "hash": hex}

    hash = SHA-256("agentmesh/1/audit-record\\x00" || canonical_json([seq, prev, event]))

The hash covers *every* field of the event (the decision code, the detail, the
peer, the time ...), the sequence number and the previous record's hash, so an
edited, removed, inserted or reordered record breaks the chain at a place the
verifier can name. Somebody who rewrites the file and recomputes every hash is
caught by the signed checkpoints (:mod:`agentmesh.audit.checkpoint`) that the
node publishes and its peers witness.

Group commit (:class:`GroupCommit`): records of the kinds it defers (by default
only ``policy_allowed``, one per allowed tool call) are kept in memory and
committed -- hash-chained, serialized and written with one ``write`` -- when
``max_records`` are pending, ``max_delay`` seconds after the first of them, on
:meth:`ChainedAuditLog.flush` and on close. Any other record (a refusal, a
rejection, a lifecycle event) commits at once, together with the pending ones
before it. The file format is the same either way. What a crash can lose is
stated in ``docs/policy.md`` (section "Audit log"): only deferred records that
were not committed yet -- fewer than ``max_records``, all appended within the
last ``max_delay`` seconds -- and never a refusal.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from agentmesh.audit.events import AuditEvent

logger = logging.getLogger(__name__)

RECORD_DOMAIN = b"agentmesh/1/audit-record\x00"
GENESIS = "0" * 64
EVENT_FIELDS = ("at_ms", "node", "kind", "code", "peer", "envelope_id", "subject", "detail")

_quote: Callable[[str], str] = encode_basestring  # the C escaper behind ensure_ascii=False
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: object) -> bytes:
    return _CANONICAL.encode(value).encode()


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


def _event_fields(event: AuditEvent) -> dict[str, Any]:
    """``asdict(event)`` without its deep copy (every field is an int, a str or None)."""
    return {
        "at_ms": event.at_ms,
        "code": event.code,
        "detail": event.detail,
        "envelope_id": event.envelope_id,
        "kind": event.kind,
        "node": event.node,
        "peer": event.peer,
        "subject": event.subject,
    }


def _event_json(event: AuditEvent) -> str:
    """``canonical_json(asdict(event))`` as text, assembled field by field (twice as fast).

    The keys are written in sorted order and each string is escaped by the same C
    function ``json`` uses with ``ensure_ascii=False``; any other value type (an
    ``int`` subclass, a float, ...) takes the generic encoder.
    """
    at_ms = event.at_ms
    if type(at_ms) is not int:
        return _CANONICAL.encode(_event_fields(event))
    try:
        envelope_id, peer, subject = event.envelope_id, event.peer, event.subject
        return (
            f'{{"at_ms":{at_ms},"code":{_quote(event.code)},"detail":{_quote(event.detail)},'
            f'"envelope_id":{"null" if envelope_id is None else _quote(envelope_id)},'
            f'"kind":{_quote(event.kind)},"node":{_quote(event.node)},'
            f'"peer":{"null" if peer is None else _quote(peer)},'
            f'"subject":{"null" if subject is None else _quote(subject)}}}'
        )
    except TypeError:  # a field that is not a string
        return _CANONICAL.encode(_event_fields(event))


def encode_record(seq: int, prev: str, event: AuditEvent) -> tuple[str, str]:
    """(hash, line) of the next record, serializing the event once.

    Byte-for-byte what :func:`record_hash` and :meth:`ChainedRecord.to_line` give
    (``prev`` and the hash are hex, so they need no escaping); tests check it.
    """
    event_json = _event_json(event)
    head = f'[{seq},"{prev}",'
    digest = hashlib.sha256(RECORD_DOMAIN + (head + event_json + "]").encode()).hexdigest()
    line = f'{{"event":{event_json},"hash":"{digest}","prev":"{prev}","seq":{seq}}}'
    return digest, line


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the chain ends: the last sequence number and its hash."""

    seq: int
    hash: str


CheckpointHook = Callable[[ChainHead], object]  # a CheckpointSigner returns its checkpoint

DEFERRED_KINDS = frozenset({"policy_allowed"})


@dataclass(frozen=True, slots=True)
class GroupCommit:
    """When deferred records are committed (see the module docstring).

    Attributes:
        max_records: commit as soon as this many deferred records are pending
            (the appending thread commits them before ``append`` returns).
        max_delay: commit at most this many seconds after the first pending
            deferred record was appended (the next append does it, or a
            background thread when no append comes).
        deferred_kinds: the event kinds that may wait; every other record
            commits at once (and takes the pending ones with it, in order).

    Raises:
        ValueError: ``max_records`` < 1 or ``max_delay`` not > 0.
    """

    max_records: int = 512
    max_delay: float = 0.005
    deferred_kinds: frozenset[str] = DEFERRED_KINDS

    def __post_init__(self) -> None:
        if type(self.max_records) is not int or self.max_records < 1:
            raise ValueError(f"max_records must be an integer >= 1, not {self.max_records!r}")
        if not self.max_delay > 0:
            raise ValueError(f"max_delay must be > 0 seconds, not {self.max_delay!r}")


class ChainedAuditLog:
    """An :class:`~agentmesh.audit.AuditSink` that appends hash-chained records to a file.

    Reopening an existing file continues its chain (an incomplete last line, left by
    a crash in the middle of a write, is cut off first and reported in the log).
    The file is opened in append mode with permissions 0600.

    Args:
        path: the log file.
        on_head: called with the new head once ``checkpoint_every`` records were
            committed since the last call (the checkpoint signer hooks in here);
            with group commit the head is the end of a committed batch.
        checkpoint_every: records between two ``on_head`` calls (0: never).
        fsync: call ``os.fsync`` after every commit (durable against power loss, slower).
        group_commit: defer records of some kinds (see :class:`GroupCommit`);
            ``None`` commits every record before ``append`` returns.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_head: CheckpointHook | None = None,
        checkpoint_every: int = 0,
        fsync: bool = False,
        group_commit: GroupCommit | None = None,
    ) -> None:
        self.path = Path(path)
        self._head = _read_head(self.path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = threading.Event()
        self._on_head = on_head
        self._every = checkpoint_every
        self._fsync = fsync
        self._since_checkpoint = 0
        self._pending: list[AuditEvent] = []
        self._group = group_commit
        self._deferred = group_commit.deferred_kinds if group_commit else frozenset[str]()
        self._max_pending = group_commit.max_records if group_commit else 1
        self._max_delay = group_commit.max_delay if group_commit else 0.0
        self._first_at = 0.0  # time.monotonic() of the oldest pending record
        self._committer_idle = False
        self._flusher: threading.Thread | None = None
        self.commits = 0  # batches written so far (a record committed alone counts as one)
        if group_commit is not None:
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"audit-commit {self.path.name}", daemon=True
            )
            self._flusher.start()
            atexit.register(self.close)

    @property
    def head(self) -> ChainHead:
        """The last committed record (pending deferred records are not part of it yet)."""
        return self._head

    @property
    def pending(self) -> int:
        """Deferred records appended but not committed yet."""
        return len(self._pending)

    @property
    def group_commit(self) -> GroupCommit | None:
        return self._group

    def set_checkpoint_hook(self, hook: CheckpointHook | None, every: int) -> None:
        self._on_head = hook
        self._every = every

    def append(self, event: AuditEvent) -> None:
        """Append ``event`` as the next record (thread-safe).

        A deferred kind returns once the event is queued, after committing the
        batch when it is full or its oldest record is ``max_delay`` old; any other
        kind returns once it and everything queued before it are written.

        Raises:
            ValueError: the log is closed.
            OSError: writing the file failed (the records stay pending).
        """
        with self._lock:
            if self._fd is None:
                raise ValueError(f"audit log {self.path} is closed")
            pending = self._pending
            pending.append(event)
            if event.kind in self._deferred:
                count = len(pending)
                if count == 1:
                    self._first_at = time.monotonic()
                    if self._committer_idle:
                        self._committer_idle = False
                        self._wake.notify()
                if count < self._max_pending and (
                    count == 1 or time.monotonic() - self._first_at < self._max_delay
                ):
                    return
            head = self._commit_locked()
            hook = self._on_head
        if head is not None and hook is not None:
            hook(head)

    def flush(self) -> None:
        """Commit every pending record now (no-op when none is pending or the log is closed).

        Raises:
            OSError: writing the file failed (the records stay pending).
        """
        with self._lock:
            if self._fd is None or not self._pending:
                return
            head = self._commit_locked()
            hook = self._on_head
        if head is not None and hook is not None:
            hook(head)

    def _commit_locked(self) -> ChainHead | None:
        """Chain, serialize and write the pending records; the head to checkpoint, if due."""
        assert self._fd is not None
        events = self._pending
        seq, digest = self._head.seq, self._head.hash
        lines = []
        for event in events:
            seq += 1
            digest, line = encode_record(seq, digest, event)
            lines.append(line)
        lines.append("")
        _write_all(self._fd, "\n".join(lines).encode())
        if self._fsync:
            os.fsync(self._fd)
        self._pending = []
        self._head = head = ChainHead(seq, digest)
        self.commits += 1
        self._since_checkpoint += len(events)
        if self._on_head is not None and self._every > 0 and self._since_checkpoint >= self._every:
            self._since_checkpoint = 0
            return head
        return None

    def _flush_loop(self) -> None:
        """Commit a batch that nobody else commits once its oldest record is ``max_delay`` old.

        While appends keep coming the appending threads commit (full or due
        batches), so this thread only sleeps until the current batch is due and
        looks again; it waits to be woken only once a look finds nothing pending.
        Waking it per batch would hand the GIL over on every batch.
        """
        closing = self._closing
        while not closing.is_set():
            with self._lock:
                while not self._pending and not closing.is_set():
                    self._committer_idle = True
                    self._wake.wait()
                if closing.is_set():
                    return
                due_in = self._first_at + self._max_delay - time.monotonic()
            if due_in > 0 and closing.wait(due_in):
                return  # close() commits what is left
            with self._lock:
                due = bool(self._pending) and (time.monotonic() - self._first_at >= self._max_delay)
            if due:
                try:
                    self.flush()
                except Exception as exc:  # keep them pending; the next commit retries
                    logger.error("audit log %s: commit failed: %s", self.path, exc)
                    closing.wait(self._max_delay)

    def close(self) -> None:
        """Commit what is pending, stop the background committer and close the file.

        Idempotent.
        """
        self._closing.set()
        with self._lock:
            self._wake.notify_all()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join()
        if self._group is not None:
            atexit.unregister(self.close)
        head = None
        with self._lock:
            if self._fd is None:
                return
            try:
                if self._pending:
                    head = self._commit_locked()
            finally:
                os.close(self._fd)
                self._fd = None
        if head is not None and self._on_head is not None:
            self._on_head(head)

    def __enter__(self) -> ChainedAuditLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    """One ``write`` for the whole batch in the usual case; resumes after a short write.

    On an error (a full disk) whatever part of the batch got written is cut off
    again, so the file never holds half a batch that a retry would then follow.
    """
    view = memoryview(data)
    written = 0
    try:
        while written < len(data):
            written += os.write(fd, view[written:])
    except OSError:
        if written:  # a failed write() writes nothing: only earlier short writes count
            with contextlib.suppress(OSError):
                os.ftruncate(fd, os.fstat(fd).st_size - written)
        raise


def _read_head(path: Path) -> ChainHead:
    """The last record's (seq, hash), reading only the end of the file."""
    if not path.exists():
        return ChainHead(0, GENESIS)
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        chunk = 1 << 16
        while True:
            start = max(0, size - chunk)
            handle.seek(start)
            tail = handle.read(size - start)
            end = tail.rfind(b"\n") + 1
            body = tail[:end].rstrip()
            begin = body.rfind(b"\n") + 1
            if begin > 0 or start == 0:
                break
            chunk *= 4  # the last complete line does not fit in the tail read yet
    if end < len(tail):
        # A record is always written with its newline, so text after the last one is
        # what a crash left of a commit's write: never a record. Cut it off.
        logger.warning(
            "audit log %s: cutting off %d bytes of an incomplete last record",
            path,
            len(tail) - end,
        )
        os.truncate(path, start + end)
    last = body[begin:].strip()
    if not last:
        return ChainHead(0, GENESIS)
    record = json.loads(last)
    return ChainHead(int(record["seq"]), str(record["hash"]))


def iter_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every non-empty line."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


__all__ = [
    "DEFERRED_KINDS",
    "EVENT_FIELDS",
    "GENESIS",
    "RECORD_DOMAIN",
    "ChainHead",
    "ChainedAuditLog",
    "ChainedRecord",
    "CheckpointHook",
    "GroupCommit",
    "canonical_json",
    "encode_record",
    "iter_lines",
    "record_hash",
]
