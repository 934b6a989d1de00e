"""Signed trust snapshots: a checkpoint of the folded engine state any node can verify.

A snapshot is a *body* (the engine state, :func:`trust.state.pack_state`) and a
signed *manifest* naming it::

    manifest = msgpack([version=1, mesh, seq, folded, latest_ms, taken_at_ms,
                        size, chunks, digest: bin(32), signer_did, signature: bin(64)])
    signature = Ed25519(signer, SNAPSHOT_DOMAIN || msgpack(first ten fields))
    digest    = SHA-256(body)

``seq`` is the receipt-stream sequence the state includes (everything up to and
including it was folded), ``folded`` the receipts that entered the engine by then
(a node that recomputes every K folds needs the count), ``latest_ms`` the newest
receipt time folded. A body larger than one stored value is split into
``chunks`` pieces of at most the writer's chunk size, concatenated in order.

A reader checks, in this order: format and version, that the signer is one it
was configured to trust, the signature, the mesh, then the body's size and
digest, and finally (when loading) that the engine config and anchors match its
own. Each failure is a typed :class:`~trust.errors.SnapshotError`. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, replace

import msgpack
from nacl.exceptions import BadSignatureError

from iatp.did import is_did, verify_key_for_did
from iatp.errors import InvalidDID
from iatp.identity import AgentIdentity
from trust.errors import (
    CorruptSnapshot,
    ForgedSnapshot,
    MalformedSnapshot,
    SnapshotWrongMesh,
    UnsupportedSnapshot,
    UntrustedSnapshotSigner,
)

SNAPSHOT_DOMAIN = b"agentmesh/trust/snapshot/1\x00"
SNAPSHOT_VERSION = 1
MAX_MANIFEST_BYTES = 4096
MAX_MESH_CHARS = 128
DIGEST_BYTES = 32
SIGNATURE_BYTES = 64
_FIELDS = 11


@dataclass(frozen=True, slots=True)
class SnapshotManifest:
    """The signed description of one snapshot body (see the module docstring)."""

    mesh: str
    seq: int
    folded: int
    latest_ms: int
    taken_at_ms: int
    size: int
    chunks: int
    digest: bytes
    signer: str
    signature: bytes
    version: int = SNAPSHOT_VERSION

    def _fields(self) -> list[object]:
        """The signed fields, in their canonical order."""
        return [
            self.version,
            self.mesh,
            self.seq,
            self.folded,
            self.latest_ms,
            self.taken_at_ms,
            self.size,
            self.chunks,
            self.digest,
            self.signer,
        ]

    def signed_bytes(self) -> bytes:
        """``SNAPSHOT_DOMAIN`` followed by the canonical bytes of the signed fields."""
        return SNAPSHOT_DOMAIN + msgpack.packb(self._fields(), use_bin_type=True)

    def encode(self) -> bytes:
        """The stored manifest: the signed fields, then the signature."""
        return msgpack.packb([*self._fields(), self.signature], use_bin_type=True)


def chunk_body(body: bytes, chunk_bytes: int) -> list[bytes]:
    """``body`` cut into pieces of at most ``chunk_bytes`` (one empty piece for b"")."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be >= 1")
    return [body[i : i + chunk_bytes] for i in range(0, len(body), chunk_bytes)] or [b""]


def seal_snapshot(
    body: bytes,
    *,
    mesh: str,
    seq: int,
    folded: int,
    latest_ms: int,
    taken_at_ms: int,
    signer: AgentIdentity,
    chunk_bytes: int,
) -> SnapshotManifest:
    """The manifest of ``body``, signed by ``signer``."""
    unsigned = SnapshotManifest(
        mesh=mesh,
        seq=seq,
        folded=folded,
        latest_ms=latest_ms,
        taken_at_ms=taken_at_ms,
        size=len(body),
        chunks=len(chunk_body(body, chunk_bytes)),
        digest=hashlib.sha256(body).digest(),
        signer=signer.did,
        signature=b"",
    )
    return replace(unsigned, signature=signer.sign(unsigned.signed_bytes()))


def decode_manifest(data: bytes) -> SnapshotManifest:
    """Parse manifest bytes (does not verify).

    Raises:
        MalformedSnapshot: oversized, not the manifest layout, a field mistyped, or
            not canonical.
        UnsupportedSnapshot: a format version this code does not read.
    """
    if not isinstance(data, bytes) or len(data) > MAX_MANIFEST_BYTES:
        raise MalformedSnapshot("manifest is not bytes or is too large")
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True, max_array_len=_FIELDS)
    except Exception as exc:  # msgpack's own family for truncated or invalid bytes
        raise MalformedSnapshot(f"manifest is not msgpack ({type(exc).__name__})") from exc
    if not isinstance(doc, list) or not doc:
        raise MalformedSnapshot("manifest must be an array")
    if doc[0] != SNAPSHOT_VERSION or type(doc[0]) is not int:
        raise UnsupportedSnapshot(f"snapshot format version {doc[0]!r:.20} is not supported")
    if len(doc) != _FIELDS:
        raise MalformedSnapshot(f"manifest must have {_FIELDS} fields")
    _, mesh, seq, folded, latest_ms, taken_at_ms, size, chunks, digest, signer, sig = doc
    for value in (seq, folded, latest_ms, taken_at_ms, size, chunks):
        if type(value) is not int or not 0 <= value < 2**63:
            raise MalformedSnapshot("manifest counters must be non-negative integers")
    if not isinstance(mesh, str) or not 0 < len(mesh) <= MAX_MESH_CHARS:
        raise MalformedSnapshot("manifest mesh must be a short string")
    if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        raise MalformedSnapshot("manifest digest must be 32 bytes")
    if not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
        raise MalformedSnapshot("manifest signature must be 64 bytes")
    if not isinstance(signer, str) or not is_did(signer):
        raise MalformedSnapshot("manifest signer must be a did:key")
    if chunks < 1 or chunks > max(size, 1):
        raise MalformedSnapshot("manifest chunk count out of range")
    manifest = SnapshotManifest(
        mesh, seq, folded, latest_ms, taken_at_ms, size, chunks, digest, signer, sig
    )
    if manifest.encode() != data:
        raise MalformedSnapshot("manifest is not canonical", signer=signer, seq=seq)
    return manifest


def verify_manifest(manifest: SnapshotManifest, *, mesh: str, signers: Collection[str]) -> None:
    """Check that a trusted signer signed ``manifest`` for ``mesh``.

    Raises:
        UntrustedSnapshotSigner: the signer is not in ``signers``.
        ForgedSnapshot: the signature does not verify under the signer's key.
        SnapshotWrongMesh: a genuine snapshot of another mesh.
    """
    signer, seq = manifest.signer, manifest.seq
    if signer not in signers:
        raise UntrustedSnapshotSigner(f"{signer[:80]} is not a snapshot signer", signer=signer)
    try:
        verify_key_for_did(signer).verify(manifest.signed_bytes(), manifest.signature)
    except (InvalidDID, BadSignatureError, ValueError) as exc:
        raise ForgedSnapshot("signature does not verify", signer=signer, seq=seq) from exc
    if manifest.mesh != mesh:
        raise SnapshotWrongMesh(
            f"taken on mesh {manifest.mesh[:80]!r}, not {mesh[:80]!r}", signer=signer, seq=seq
        )


def check_body(manifest: SnapshotManifest, body: bytes) -> None:
    """Check that ``body`` is the one the manifest signs for.

    Raises:
        CorruptSnapshot: the size or the SHA-256 digest differs.
    """
    if len(body) != manifest.size or hashlib.sha256(body).digest() != manifest.digest:
        raise CorruptSnapshot(
            "body does not match the signed digest", signer=manifest.signer, seq=manifest.seq
        )
