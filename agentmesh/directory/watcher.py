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
from collections.abc import Callable

from agentmesh.errors import TransportError
from agentmesh.transport.base import KeyValue, KVEntry, KVOperation, Transport

logger = logging.getLogger(__name__)

EntryHandler = Callable[[KVEntry], None]


def bucket_name(mesh: str, what: str) -> str:
    """The bucket of ``what`` in ``mesh`` (bucket names allow no dots)."""
    return f"{mesh.replace('.', '-')}_registry_{what}"


class WatchedBucket:
    """Feeds ``on_entry`` with every live value of a bucket, then with every change.

    ``on_entry`` runs on the event loop, in revision order, and must not raise
    (a raising handler is logged and the watch goes on).
    """

    def __init__(self, transport: Transport, bucket: str, on_entry: EntryHandler) -> None:
        self._transport = transport
        self._bucket = bucket
        self._on_entry = on_entry
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
    def ready(self) -> bool:
        return self._ready.is_set()

    async def start(self, *, timeout: float = 5.0) -> None:
        """Open the bucket, start watching and wait until the current values are loaded.

        Raises:
            TransportError: the bucket could not be opened or listed.
            TimeoutError: the current values did not arrive within ``timeout``.
        """
        self._kv = await self._transport.key_value(self._bucket, history=1)
        self._pending = set(await self._kv.keys(timeout=timeout))
        if not self._pending:
            self._ready.set()
        self._task = asyncio.create_task(self._follow(), name=f"watch:{self._bucket}")
        # Even with no keys, return only once the watch exists: a write made right
        # after start() must reach on_entry (a late consumer would see only the
        # last value of each key).
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout)
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            # A key deleted between keys() and the watch never shows up: go on.
            logger.warning("bucket %s: %d keys not seen at start", self._bucket, len(self._pending))
            self._ready.set()

    async def _follow(self) -> None:
        try:
            async with contextlib.aclosing(self.kv.watch(on_ready=self._subscribed.set)) as changes:
                async for entry in changes:
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
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
