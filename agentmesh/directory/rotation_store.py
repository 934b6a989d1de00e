"""Rotation statements in KV: every node follows an agent to its new key.

Stored under the old DID's multibase part in ``{mesh}_registry_rotations``, created
once (create-if-absent), verified (both signatures) on every read. A second,
different statement for the same old DID is refused (``rotation_rejected``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from agentmesh.directory.reporting import Reporter
from agentmesh.directory.watcher import WatchedBucket, bucket_name
from agentmesh.errors import KeyExists
from agentmesh.node.addressing import MeshAddressing
from agentmesh.transport.base import KVEntry, KVOperation, Transport
from iatp.errors import RotationError
from iatp.rotation import RotationStatement, verify_rotation
from registry.errors import RegistryError, RotationRejected
from registry.rotations import RotationChain, decode_rotation_entry

REJECTED = "registry_rejected"


class RotationStore:
    """The verified rotation chain of a mesh, mirrored from its bucket."""

    def __init__(
        self,
        transport: Transport,
        mesh: str,
        reporter: Reporter,
        on_added: Callable[[RotationStatement], None],
    ) -> None:
        self.chain = RotationChain()
        self._reporter = reporter
        self._on_added = on_added
        self._bucket = WatchedBucket(transport, bucket_name(mesh, "rotations"), self._on_entry)

    async def start(self, *, timeout: float) -> None:
        await self._bucket.start(timeout=timeout)

    async def aclose(self) -> None:
        await self._bucket.aclose()

    async def publish(self, statement: RotationStatement, *, timeout: float) -> None:
        """Verify and store ``statement``; applied locally at once.

        Raises:
            RotationRejected: invalid, or conflicting with a known statement (audited).
            TransportError: the store refused the write.
        """
        try:
            verify_rotation(statement)
            known = self.chain.statement_from(statement.old_did)
            if known is not None and known != statement:
                raise RotationRejected(
                    f"{statement.old_did} already rotated", did=statement.old_did
                )
        except RotationError as exc:
            error = RotationRejected(str(exc), did=statement.old_did)
            self._reporter.refuse(REJECTED, error, statement.old_did, "rotation")
            raise error from None
        except RotationRejected as exc:
            self._reporter.refuse(REJECTED, exc, statement.old_did, "rotation")
            raise
        # On KeyExists the watch delivers whichever statement won; a conflict is refused there.
        with contextlib.suppress(KeyExists):
            await self._bucket.kv.create(
                MeshAddressing.agent_key(statement.old_did), statement.encode(), timeout=timeout
            )
        self._add(statement)

    def _on_entry(self, item: KVEntry) -> None:
        if item.operation is KVOperation.DELETE:
            return
        try:
            statement = decode_rotation_entry(item.value)
            if MeshAddressing.agent_key(statement.old_did) != item.key:
                raise RotationRejected("rotation stored under another key", did=statement.old_did)
        except RegistryError as exc:
            self._reporter.refuse(REJECTED, exc, exc.did, item.key)
            return
        self._add(statement)

    def _add(self, statement: RotationStatement) -> None:
        try:
            added = self.chain.add(statement)
        except RotationRejected as exc:
            self._reporter.refuse(REJECTED, exc, exc.did, "rotation")
            return
        if added is not None:
            detail = f"{statement.old_did} -> {statement.new_did}"
            self._reporter.record("registry", "rotated", statement.old_did, detail)
            self._on_added(statement)
