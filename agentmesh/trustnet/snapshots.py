"""Signed trust snapshots on the mesh: a KV bucket that any node can start from.

Bucket ``trust-snapshots-<mesh>``: key ``manifest`` holds the newest signed
manifest (:mod:`trust.snapshot`), keys ``chunk.<seq>.<i>`` the pieces of its body
(values stay under the server's payload limit). A writer stores the chunks first
and the manifest last, and deletes the chunks of snapshots older than the one
before it, so a reader that read a manifest still finds its chunks.

A joining node (``MeshTrust`` with ``SnapshotPolicy(signers=...)``) reads the
manifest, checks signer, signature, mesh, body digest and that the snapshot is
not ahead of the stream, loads the engine state (config and anchors must match
its own), then folds only the stream after ``seq``. A snapshot that fails any
check is refused with its typed code, counted and audited, and the node folds
the whole stream instead: every receipt is still verified one by one, so
falling back costs time, never safety.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentmesh.errors import KeyNotFound
from agentmesh.transport.base import KeyValue, Transport
from trust.errors import CorruptSnapshot, SnapshotError
from trust.snapshot import SnapshotManifest, chunk_body, decode_manifest

MANIFEST_KEY = "manifest"
AUDIT_KIND = "trust_snapshot"
DEFAULT_CHUNK_BYTES = 512 * 1024


def bucket_name(mesh: str) -> str:
    return f"trust-snapshots-{mesh}"


def chunk_key(seq: int, index: int) -> str:
    return f"chunk.{seq}.{index}"


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """How a node uses trust snapshots.

    Attributes:
        signers: DIDs whose snapshots this node starts from (e.g. the mesh
            authority). Empty: never start from a snapshot (full replay).
        write_every: write a snapshot, signed by this node, after every this many
            folded receipts (None: this node does not write snapshots). Writers
            should recompute deterministically (``recompute_every``, no wall-clock
            interval) so their snapshots equal what a full replay reaches.
        chunk_bytes: largest stored value of a body piece.
        check_interval: seconds between checks of ``write_every``.
    """

    signers: frozenset[str] = frozenset()
    write_every: int | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    check_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.write_every is not None and self.write_every < 1:
            raise ValueError("write_every must be >= 1 (or None)")
        if self.chunk_bytes < 1024:
            raise ValueError("chunk_bytes must be >= 1024")
        if self.check_interval <= 0:
            raise ValueError("check_interval must be > 0")


class SnapshotStore:
    """Read and write snapshots of one mesh. Build with :meth:`open`."""

    def __init__(self, kv: KeyValue, mesh: str) -> None:
        self.kv = kv
        self.mesh = mesh

    @classmethod
    async def open(cls, transport: Transport, mesh: str) -> SnapshotStore:
        """Create-or-bind the bucket.

        Raises:
            TransportError: the bucket could not be created or bound.
        """
        return cls(await transport.key_value(bucket_name(mesh), history=1), mesh)

    async def write(
        self, manifest: SnapshotManifest, body: bytes, *, chunk_bytes: int, timeout: float = 10.0
    ) -> None:
        """Store ``body``'s chunks, then the manifest; drop chunks two snapshots old.

        Raises:
            TransportError: a write did not complete.
        """
        pieces = chunk_body(body, chunk_bytes)
        if len(pieces) != manifest.chunks:
            raise ValueError("manifest was sealed with another chunk size")
        previous = await self._current_seq(timeout=timeout)
        for index, piece in enumerate(pieces):
            await self.kv.put(chunk_key(manifest.seq, index), piece, timeout=timeout)
        await self.kv.put(MANIFEST_KEY, manifest.encode(), timeout=timeout)
        keep = {manifest.seq, previous}
        for key in await self.kv.keys(timeout=timeout):
            parts = key.split(".")
            stale = len(parts) == 3 and parts[0] == "chunk" and parts[1].isdigit()
            if stale and int(parts[1]) not in keep:
                await self.kv.delete(key, timeout=timeout)

    async def _current_seq(self, *, timeout: float) -> int | None:
        try:
            entry = await self.kv.get(MANIFEST_KEY, timeout=timeout)
            return decode_manifest(entry.value).seq
        except (KeyNotFound, SnapshotError):  # an unreadable manifest is replaced
            return None

    async def manifest(self, *, timeout: float = 5.0) -> SnapshotManifest | None:
        """The newest manifest (not yet verified), or None when there is none.

        Raises:
            MalformedSnapshot, UnsupportedSnapshot: the stored manifest is unreadable.
            TransportError: the bucket could not be read.
        """
        try:
            entry = await self.kv.get(MANIFEST_KEY, timeout=timeout)
        except KeyNotFound:
            return None
        return decode_manifest(entry.value)

    async def body(self, manifest: SnapshotManifest, *, timeout: float = 10.0) -> bytes:
        """The body named by ``manifest`` (its digest is checked by the caller).

        Raises:
            CorruptSnapshot: a chunk is missing or the pieces exceed the signed size.
            TransportError: the bucket could not be read.
        """
        pieces: list[bytes] = []
        total = 0
        for index in range(manifest.chunks):
            try:
                entry = await self.kv.get(chunk_key(manifest.seq, index), timeout=timeout)
            except KeyNotFound as exc:
                raise CorruptSnapshot(
                    f"chunk {index} is missing", signer=manifest.signer, seq=manifest.seq
                ) from exc
            total += len(entry.value)
            if total > manifest.size:
                raise CorruptSnapshot(
                    "chunks exceed the signed size", signer=manifest.signer, seq=manifest.seq
                )
            pieces.append(entry.value)
        return b"".join(pieces)
