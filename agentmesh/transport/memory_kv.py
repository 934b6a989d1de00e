"""The in-memory key-value bucket: JetStream KV semantics without a server.

A bucket has one revision counter; every put and delete takes the next revision
(as every KV write is the next message of the bucket's stream in JetStream).
Deletes leave a tombstone, so a later ``create`` succeeds and an ``update`` must
name the tombstone's revision. With a ``ttl`` an entry (tombstones included)
disappears ``ttl`` seconds after it was written, as JetStream's ``max_age`` does,
measured on the bus's injectable monotonic clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, replace

from agentmesh.errors import KeyExists, KeyNotFound, PayloadTooLarge, RevisionMismatch
from agentmesh.transport.base import KVEntry, KVOperation, StoreLimits
from agentmesh.transport.memory_link import TransportLink
from agentmesh.transport.subjects import tokens_match, validate_kv_key


@dataclass(frozen=True, slots=True)
class _Record:
    entry: KVEntry
    written_at: float


@dataclass(eq=False, slots=True)
class _Watcher:
    pattern: Sequence[str]
    deliver: Callable[[KVEntry], None]


class BucketState:
    """One bucket's data on the bus, shared by every transport bound to it."""

    def __init__(
        self,
        name: str,
        *,
        history: int,
        ttl: float | None,
        monotonic: Callable[[], float],
        limits: StoreLimits | None = None,
    ) -> None:
        self.name = name
        self.limits = limits or StoreLimits()
        self.history = history  # kept for parity with JetStream; only the latest is served
        self.ttl = ttl
        self._monotonic = monotonic
        self._revision = 0
        self._latest: dict[str, _Record] = {}
        self._history: dict[str, list[_Record]] = {}
        self._watchers: list[_Watcher] = []

    def latest(self, key: str) -> KVEntry | None:
        """The newest entry for ``key`` (a tombstone included), or None once expired."""
        record = self._latest.get(key)
        if record is None:
            return None
        if self.ttl is not None and self._monotonic() - record.written_at >= self.ttl:
            del self._latest[key]
            return None
        return record.entry

    def write(self, key: str, value: bytes, operation: KVOperation) -> KVEntry:
        """Store the next revision of ``key``.

        Raises:
            KeyExists: The bucket is write-once and ``key`` was written before.
            PayloadTooLarge: ``value`` is above the bucket's ``max_value_size``.
        """
        if self.limits.write_once and self.latest(key) is not None:
            raise KeyExists(f"{self.name}/{key} is write-once and already written")
        limit = self.limits.max_value_size
        if limit is not None and len(value) > limit:
            raise PayloadTooLarge(f"value of {len(value)} bytes exceeds {self.name}'s {limit}")
        self._revision += 1
        entry = KVEntry(self.name, key, value, self._revision, operation)
        record = _Record(entry, self._monotonic())
        self._latest[key] = record
        kept = self._history.setdefault(key, [])
        kept.append(record)
        del kept[: -self.history]
        tokens = key.split(".")
        for watcher in list(self._watchers):
            if tokens_match(watcher.pattern, tokens):
                watcher.deliver(entry)
        return entry

    def revisions(self, key: str) -> list[KVEntry]:
        """Stored revisions of ``key`` (unexpired), oldest first."""
        now = self._monotonic()
        return [
            r.entry
            for r in self._history.get(key, [])
            if self.ttl is None or now - r.written_at < self.ttl
        ]

    def live_entries(self, pattern: Sequence[str] | None = None) -> list[KVEntry]:
        """Current (non-deleted, unexpired) entries in revision order."""
        entries = []
        for key in list(self._latest):
            entry = self.latest(key)
            if entry is None or entry.operation is KVOperation.DELETE:
                continue
            if pattern is None or tokens_match(pattern, key.split(".")):
                entries.append(entry)
        entries.sort(key=lambda e: e.revision)
        return entries

    def watch(self, watcher: _Watcher) -> list[KVEntry]:
        """Register ``watcher`` and return the snapshot it starts from, atomically."""
        self._watchers.append(watcher)
        return self.live_entries(watcher.pattern)

    def unwatch(self, watcher: _Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)


class InMemoryKeyValue:
    """A handle on a bucket of an :class:`~agentmesh.transport.memory.InMemoryBus`.

    Implements :class:`~agentmesh.transport.base.KeyValue`. Obtain it from
    :meth:`InMemoryTransport.key_value`; it stops working when that transport closes.
    """

    def __init__(self, state: BucketState, link: TransportLink, *, max_payload: int) -> None:
        self._state = state
        self._link = link
        self._max_payload = max_payload

    @property
    def bucket(self) -> str:
        return self._state.name

    def _precheck(self, key: str) -> None:
        validate_kv_key(key)
        self._link.check_open()

    def _check_size(self, value: bytes) -> None:
        if len(value) > self._max_payload:
            raise PayloadTooLarge(
                f"value of {len(value)} bytes exceeds max_payload {self._max_payload}"
            )

    async def get(self, key: str, *, timeout: float = 2.0) -> KVEntry:
        """The current value of ``key``.

        Raises:
            KeyNotFound: The key was never written, is deleted or expired.
            InvalidSubject: The key is malformed.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        entry = self._state.latest(key)
        if entry is None or entry.operation is KVOperation.DELETE:
            raise KeyNotFound(f"{self.bucket}/{key} not found")
        return entry

    async def put(self, key: str, value: bytes, *, timeout: float = 2.0) -> int:
        """Unconditional write; returns the new revision.

        Raises:
            PayloadTooLarge: ``value`` is above max_payload.
            InvalidSubject: The key is malformed.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        self._check_size(value)
        return self._state.write(key, bytes(value), KVOperation.PUT).revision

    async def create(self, key: str, value: bytes, *, timeout: float = 2.0) -> int:
        """Write only if ``key`` does not exist (deleted or expired keys count as absent).

        Raises:
            KeyExists: The key has a live value.
            PayloadTooLarge: ``value`` is above max_payload.
            InvalidSubject: The key is malformed.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        self._check_size(value)
        current = self._state.latest(key)
        if current is not None and current.operation is KVOperation.PUT:
            raise KeyExists(f"{self.bucket}/{key} exists at revision {current.revision}")
        return self._state.write(key, bytes(value), KVOperation.PUT).revision

    async def update(
        self, key: str, value: bytes, *, last_revision: int, timeout: float = 2.0
    ) -> int:
        """Compare-and-set: write only if the key's newest revision is ``last_revision``.

        A tombstone counts as the newest revision; ``last_revision=0`` means "absent".

        Raises:
            RevisionMismatch: The key is at another revision (``expected`` is set).
            PayloadTooLarge: ``value`` is above max_payload.
            InvalidSubject: The key is malformed.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        self._check_size(value)
        current = self._state.latest(key)
        current_revision = 0 if current is None else current.revision
        if current_revision != last_revision:
            raise RevisionMismatch(
                f"{self.bucket}/{key} is at revision {current_revision}, not {last_revision}",
                expected=last_revision,
            )
        return self._state.write(key, bytes(value), KVOperation.PUT).revision

    async def delete(self, key: str, *, timeout: float = 2.0) -> None:
        """Write a tombstone (a DELETE entry with its own revision).

        Raises:
            InvalidSubject: The key is malformed.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        self._state.write(key, b"", KVOperation.DELETE)

    async def keys(self, *, timeout: float = 2.0) -> list[str]:
        """Live keys, sorted.

        Raises:
            NotConnected: The transport is not connected.
        """
        self._link.check_open()
        return sorted(entry.key for entry in self._state.live_entries())

    async def history(self, key: str, *, timeout: float = 2.0) -> list[KVEntry]:
        """The stored revisions of ``key``, oldest first (deletes included).

        Raises:
            InvalidSubject: The key is malformed.
            NotConnected: The transport is not connected.
        """
        self._precheck(key)
        return self._state.revisions(key)

    async def incarnation(self, *, timeout: float = 2.0) -> str | None:
        """Always the same: buckets on the in-memory bus cannot be deleted.

        Raises:
            NotConnected: The transport is not connected.
        """
        self._link.check_open()
        return f"memory:{id(self._state)}"

    async def watch(
        self, pattern: str = ">", *, on_ready: Callable[[], None] | None = None
    ) -> AsyncGenerator[KVEntry, None]:
        """Live values of keys matching ``pattern`` (revision order), then every change.

        Deletes that happened before the watch started are not replayed; later ones
        arrive as ``KVOperation.DELETE`` entries. Ends when the transport closes.

        Raises:
            InvalidSubject: The pattern is malformed.
            NotConnected: The transport is not connected.
        """
        validate_kv_key(pattern, allow_wildcards=True)
        self._link.check_open()
        queue: asyncio.Queue[KVEntry | None] = asyncio.Queue()
        watcher = _Watcher(pattern.split("."), queue.put_nowait)
        snapshot = self._state.watch(watcher)
        token = self._link.on_close(lambda: queue.put_nowait(None))
        if on_ready is not None:
            on_ready()
        try:
            for index, entry in enumerate(snapshot):
                yield replace(entry, pending=len(snapshot) - index - 1 + queue.qsize())
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield replace(item, pending=queue.qsize()) if queue.qsize() else item
        finally:
            self._state.unwatch(watcher)
            self._link.discard(token)
