"""Publish audit checkpoints on the mesh and witness the peers' checkpoints.

Checkpoints go to a stream (JetStream on NATS) on the subject
``{mesh}.audit.checkpoint.{node-key}``, de-duplicated by ``{node}:{seq}``. Any
peer, or an auditor later, reads them back (:func:`fetch_checkpoints`) and
verifies a node's log against heads the node cannot take back. A
:class:`CheckpointWitness` follows the stream, verifies every checkpoint, and
flags equivocation (two different signed heads for one sequence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agentmesh.audit.checkpoint import Checkpoint, CheckpointSigner, checkpoint_is_valid
from agentmesh.node.addressing import MeshAddressing
from agentmesh.transport.base import Stream, Transport

logger = logging.getLogger(__name__)


def stream_name(mesh: str) -> str:
    return f"{mesh.replace('.', '-')}_audit_checkpoints"


def checkpoint_subject(mesh: str, node: str | None = None) -> str:
    key = MeshAddressing.agent_key(node) if node is not None else "*"
    return f"{MeshAddressing(mesh).mesh}.audit.checkpoint.{key}"


async def open_checkpoint_stream(transport: Transport, mesh: str) -> Stream:
    """Create-or-bind the checkpoint stream of ``mesh``."""
    return await transport.stream(stream_name(mesh), [f"{mesh}.audit.checkpoint.*"])


class CheckpointPublisher:
    """Publishes every checkpoint a :class:`CheckpointSigner` signs (async, in order).

    ``signer`` calls are synchronous (from the audit log); they queue the
    checkpoint and a background task appends it to the stream.
    """

    def __init__(self, transport: Transport, signer: CheckpointSigner, *, mesh: str) -> None:
        self._transport = transport
        self._mesh = mesh
        self._queue: asyncio.Queue[Checkpoint] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stream: Stream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0
        self.failed = 0
        signer.add_listener(self._enqueue)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stream = await open_checkpoint_stream(self._transport, self._mesh)
        self._task = asyncio.create_task(self._run(), name="audit-checkpoint-publisher")

    def _enqueue(self, checkpoint: Checkpoint) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._queue.put_nowait(checkpoint)
        else:
            loop.call_soon_threadsafe(self._queue.put_nowait, checkpoint)

    async def _run(self) -> None:
        assert self._stream is not None
        while True:
            checkpoint = await self._queue.get()
            try:
                await self._stream.append(
                    checkpoint_subject(self._mesh, checkpoint.node),
                    checkpoint.to_json().encode(),
                    msg_id=f"{checkpoint.node}:{checkpoint.seq}",
                )
                self.published += 1
            except Exception as exc:
                self.failed += 1
                logger.warning("could not publish audit checkpoint: %s", exc)
            finally:
                self._queue.task_done()

    async def drain(self, *, timeout: float = 5.0) -> None:
        """Wait until every queued checkpoint was published (or failed)."""
        await asyncio.wait_for(self._queue.join(), timeout=timeout)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


async def fetch_checkpoints(
    transport: Transport, mesh: str, node: str, *, timeout: float = 5.0
) -> list[Checkpoint | None]:
    """Every checkpoint of ``node`` stored on the mesh (``None`` for a malformed one)."""
    stream = await open_checkpoint_stream(transport, mesh)
    last = await stream.last_seq(timeout=timeout)
    found: list[Checkpoint | None] = []
    if last == 0:
        return found
    reader = stream.read(subject=checkpoint_subject(mesh, node))

    async def collect() -> None:
        async for message in reader:
            try:
                found.append(Checkpoint.from_json(message.data))
            except (ValueError, KeyError):
                found.append(None)
            if message.seq >= last:
                return

    try:
        await asyncio.wait_for(collect(), timeout=timeout)
    except TimeoutError:
        pass  # the newest messages were other nodes' checkpoints
    finally:
        await reader.aclose()
    return found


class CheckpointWitness:
    """Verifies checkpoints as they appear and remembers the newest per node.

    ``equivocations`` lists (node, seq) for which two different validly signed
    heads were seen: proof that the node rewrote its log.
    """

    def __init__(self) -> None:
        self.latest: dict[str, Checkpoint] = {}
        self.seen: dict[tuple[str, int], str] = {}
        self.equivocations: list[tuple[str, int]] = []
        self.rejected = 0

    def observe(self, checkpoint: Checkpoint) -> bool:
        """Record a checkpoint; ``False`` if its signature does not verify."""
        if not checkpoint_is_valid(checkpoint):
            self.rejected += 1
            return False
        key = (checkpoint.node, checkpoint.seq)
        known = self.seen.setdefault(key, checkpoint.head)
        if known != checkpoint.head:
            self.equivocations.append(key)
        newest = self.latest.get(checkpoint.node)
        if newest is None or checkpoint.seq > newest.seq:
            self.latest[checkpoint.node] = checkpoint
        return True


__all__ = [
    "CheckpointPublisher",
    "CheckpointWitness",
    "checkpoint_subject",
    "fetch_checkpoints",
    "open_checkpoint_stream",
    "stream_name",
]
