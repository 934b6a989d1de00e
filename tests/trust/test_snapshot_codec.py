"""Signed snapshot manifests: seal, decode, verify, and every way to forge one."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iatp.identity import AgentIdentity
from trust import (
    SNAPSHOT_DOMAIN,
    CorruptSnapshot,
    ForgedSnapshot,
    MalformedSnapshot,
    SnapshotError,
    SnapshotManifest,
    SnapshotWrongMesh,
    UnsupportedSnapshot,
    UntrustedSnapshotSigner,
    check_body,
    decode_manifest,
    seal_snapshot,
    verify_manifest,
)
from trust.snapshot import chunk_body

AUTHORITY = AgentIdentity.from_seed(b"\x07" * 32)
MALLORY = AgentIdentity.from_seed(b"\x66" * 32)
BODY = bytes(range(256)) * 40
TRUSTED = {AUTHORITY.did}


def sealed(body: bytes = BODY, signer: AgentIdentity = AUTHORITY, mesh: str = "m1") -> bytes:
    return seal_snapshot(
        body,
        mesh=mesh,
        seq=120,
        folded=118,
        latest_ms=1_700_000_000_500,
        taken_at_ms=1_700_000_001_000,
        signer=signer,
        chunk_bytes=4096,
    ).encode()


def test_a_sealed_snapshot_verifies_and_names_its_body() -> None:
    manifest = decode_manifest(sealed())
    verify_manifest(manifest, mesh="m1", signers=TRUSTED)
    check_body(manifest, BODY)
    assert (manifest.seq, manifest.folded, manifest.size) == (120, 118, len(BODY))
    assert manifest.chunks == len(chunk_body(BODY, 4096)) == 3
    assert manifest.digest == hashlib.sha256(BODY).digest()
    # A third party can check the signature from the documented layout alone.
    fields = msgpack.unpackb(sealed())
    AUTHORITY.verify_key.verify(SNAPSHOT_DOMAIN + msgpack.packb(fields[:10]), fields[10])


def test_a_changed_body_is_corrupt() -> None:
    manifest = decode_manifest(sealed())
    with pytest.raises(CorruptSnapshot) as refused:
        check_body(manifest, BODY[:-1] + b"\x00")
    assert refused.value.seq == 120
    with pytest.raises(CorruptSnapshot):
        check_body(manifest, BODY + b"x")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", 121),
        ("folded", 1),
        ("latest_ms", 1_800_000_000_000),
        ("taken_at_ms", 0),
        ("size", 10),
        ("digest", hashlib.sha256(b"other").digest()),
        ("mesh", "m2"),
    ],
)
def test_a_changed_signed_field_breaks_the_signature(field: str, value: object) -> None:
    tampered = replace(decode_manifest(sealed()), **{field: value})
    forged = decode_manifest(tampered.encode())  # well formed, just not what was signed
    with pytest.raises(ForgedSnapshot):
        verify_manifest(forged, mesh=forged.mesh, signers=TRUSTED)


def test_a_snapshot_signed_by_someone_else_is_refused() -> None:
    manifest = decode_manifest(sealed(signer=MALLORY))
    with pytest.raises(UntrustedSnapshotSigner) as refused:
        verify_manifest(manifest, mesh="m1", signers=TRUSTED)
    assert refused.value.signer == MALLORY.did
    # Mallory's signature under the authority's name does not verify either.
    claimed = replace(manifest, signer=AUTHORITY.did)
    with pytest.raises(ForgedSnapshot):
        verify_manifest(decode_manifest(claimed.encode()), mesh="m1", signers=TRUSTED)


def test_a_genuine_snapshot_of_another_mesh_is_refused() -> None:
    manifest = decode_manifest(sealed(mesh="other"))
    with pytest.raises(SnapshotWrongMesh):
        verify_manifest(manifest, mesh="m1", signers=TRUSTED)


def test_unknown_versions_and_bad_layouts_are_typed() -> None:
    fields = msgpack.unpackb(sealed())
    with pytest.raises(UnsupportedSnapshot):
        decode_manifest(msgpack.packb([2, *fields[1:]]))
    with pytest.raises(MalformedSnapshot):
        decode_manifest(msgpack.packb(fields[:-1]))
    with pytest.raises(MalformedSnapshot):
        decode_manifest(msgpack.packb([*fields[:8], b"short", *fields[9:]]))
    with pytest.raises(MalformedSnapshot):
        decode_manifest(msgpack.packb([*fields[:9], "not-a-did", fields[10]]))
    with pytest.raises(MalformedSnapshot):
        decode_manifest(msgpack.packb([*fields[:2], -1, *fields[3:]]))
    # Non-canonical: the same numbers in wider integer encodings.
    wide = bytearray(sealed())
    wide[1:2] = b"\xcd\x00\x01"  # version 1 as uint16
    with pytest.raises(MalformedSnapshot, match="canonical"):
        decode_manifest(bytes(wide))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_are_refused_with_a_snapshot_error(data: bytes) -> None:
    def check() -> None:
        verify_manifest(decode_manifest(data), mesh="m1", signers=TRUSTED)

    with pytest.raises(SnapshotError):
        check()


def test_manifest_type_is_frozen() -> None:
    manifest = decode_manifest(sealed())
    assert isinstance(manifest, SnapshotManifest)
    with pytest.raises(AttributeError):
        manifest.seq = 1  # type: ignore[misc]
