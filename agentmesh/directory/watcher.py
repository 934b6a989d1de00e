"""A KV bucket mirrored into local state by a background watch.

Every directory component (cards, revocations, rotations, capability pins) keeps a
local copy of one bucket: it loads the bucket's current values, then follows every
change, so that reads are local and never wait on the network. The store is any
:class:`~agentmesh.transport.base.KeyValue`: JetStream KV on ``NatsTransport``
(distributed) or the in-memory bus on ``InMemoryTransport`` (embedded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable

from agentmesh.errors import KeyNotFound, NotConnected, TransportError
from agentmesh.transport.base import KeyValue, KVEntry, KVOperation, Transport

logger = logging.getLogger(__name__)

EntryHandler = Callable[[KVEntry], None]

# The buckets watched over each transport (started, not closed): what a metrics
# endpoint reports lag for, without every owner having to hand its bucket over.
_watching: weakref.WeakKeyDictionary[Transport, weakref.WeakSet[WatchedBucket]] = (
    weakref.WeakKeyDictionary()
)


def watched_buckets(transport: Transport) -> list[WatchedBucket]:
    """The buckets watched over ``transport`` now, sorted by bucket name."""
    return sorted(_watching.get(transport, ()), key=lambda watched: watched.bucket)


def bucket_name(mesh: str, what: str) -> str:
    """The bucket of ``what`` in ``mesh`` (bucket names allow no dots)."""
    return f"{mesh.replace('.', '-')}_registry_{what}"


class WatchedBucket:
    """Feeds ``on_entry`` with every live value of a bucket, then with every change.

    ``on_entry`` runs on the event loop, in revision order, and must not raise
    (a raising handler is logged and the watch goes on).

    Someone with enough rights on the broker can delete the bucket under us; a
    watch on a deleted bucket then waits forever. So every ``check_every``
    seconds the bucket's existence is checked; a lost bucket is recreated (or
    re-bound once its owner recreates it), watched again, and ``on_reset`` is
    called so that owners of entries can re-announce them.

    Args:
        transport: where the bucket lives.
        bucket: its name.
        on_entry: called with every value and change.
        on_reset: called after a lost bucket was recreated and is watched again.
        history: revisions kept per key if this call creates the bucket.
        check_every: seconds between existence checks.
    """

    def __init__(
        self,
        transport: Transport,
        bucket: str,
        on_entry: EntryHandler,
        *,
        on_reset: Callable[[], None] | None = None,
        history: int = 1,
        check_every: float = 5.0,
    ) -> None:
        self._transport = transport
        self._bucket = bucket
        self._on_entry = on_entry
        self._on_reset = on_reset
        self._history = history
        self._check_every = check_every
        self.resets = 0
        # The revision last handed to on_entry, and the changes the store still had
        # to deliver after it (its ``pending``): this view's lag behind the bucket.
        self.revision = 0
        self.lag = 0
        self._incarnation: str | None = None
        self._guard: asyncio.Task[None] | None = None
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[str] = set()
        self._ready = asyncio.Event()
        self._subscribed = asyncio.Event()

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("the bucket is not open; call start() first")
        return self._kv

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def start(self, *, timeout: float = 5.0) -> None:
        """Open the bucket, start watching and wait until the current values are loaded.

        Raises:
            TransportError: the bucket could not be opened or listed.
            TimeoutError: the current values did not arrive within ``timeout``.
        """
        self._kv = await self._transport.key_value(self._bucket, history=self._history)
        self._incarnation = await self._kv.incarnation(timeout=timeout)
        self._pending = set(await self._kv.keys(timeout=timeout))
        if not self._pending:
            self._ready.set()
        self._task = asyncio.create_task(self._follow(), name=f"watch:{self._bucket}")
        with contextlib.suppress(TypeError):  # a transport without weak references
            _watching.setdefault(self._transport, weakref.WeakSet()).add(self)
        # Even with no keys, return only once the watch exists: a write made right
        # after start() must reach on_entry (a late consumer would see only the
        # last value of each key).
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout)
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            self._ready.set()
        await self._check_loaded(timeout)
        self._guard = asyncio.create_task(self._keep_alive(), name=f"guard:{self._bucket}")

    async def _check_loaded(self, timeout: float) -> None:
        """Fail closed when a stored key never arrived (the watch ended or stalled).

        A key deleted between the listing and the watch never shows up: it is
        dropped. Any other key missing means this view would start without it, so
        the watch is stopped and the start fails (seen on a cluster while a new
        stream leader was taking over).
        """
        unseen = set(self._pending)
        for key in sorted(unseen):
            try:
                await self.kv.get(key, timeout=timeout)
            except KeyNotFound:
                unseen.discard(key)
        if unseen:
            await self.aclose()
            raise TransportError(
                f"bucket {self._bucket}: {len(unseen)} stored keys did not arrive within "
                f"{timeout}s (is the stream electing a leader?): start again"
            )

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._check_every)
            try:
                now = await self.kv.incarnation(timeout=2.0)
                if now is not None and now == self._incarnation:
                    continue
                logger.warning("bucket %s was deleted: watching it again", self._bucket)
                self._kv = await self._transport.key_value(self._bucket, history=self._history)
                self._incarnation = await self._kv.incarnation(timeout=2.0)
            except NotConnected:
                return  # the transport closed: nothing left to guard
            except TransportError as exc:  # transient, or not ours to recreate: try again
                logger.warning("bucket %s: check failed: %s", self._bucket, exc)
                continue
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            self._subscribed.clear()
            self._task = asyncio.create_task(self._follow(), name=f"watch:{self._bucket}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), 5.0)
            self.resets += 1
            if self._on_reset is not None:
                self._on_reset()

    async def _follow(self) -> None:
        try:
            async with contextlib.aclosing(self.kv.watch(on_ready=self._subscribed.set)) as changes:
                async for entry in changes:
                    self.revision, self.lag = entry.revision, entry.pending
                    try:
                        self._on_entry(entry)
                    except Exception:
                        logger.exception("bucket %s: handler failed", self._bucket)
                    if not self._ready.is_set():
                        self._pending.discard(entry.key)
                        if not self._pending or entry.operation is KVOperation.DELETE:
                            self._ready.set()
        except TransportError as exc:
            logger.warning("bucket %s: watch ended: %s", self._bucket, exc)
        finally:
            self._subscribed.set()
            self._ready.set()

    async def aclose(self) -> None:
        """Stop watching. Idempotent."""
        with contextlib.suppress(TypeError):
            _watching.get(self._transport, weakref.WeakSet()).discard(self)
        guard, self._guard = self._guard, None
        task, self._task = self._task, None
        for running in (guard, task):
            if running is not None:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await running
