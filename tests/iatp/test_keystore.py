"""Encrypted identity files: round trip, permissions, atomic writes, and tampering.

Most tests use the cheapest argon2id parameters so that the many decrypt attempts
stay fast; one round trip uses the real (interactive) default.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.pwhash import argon2id

from iatp.errors import KeystoreDecryptError, KeystoreError, KeystoreFormatError
from iatp.identity import AgentIdentity
from iatp.keystore import (
    MAX_FILE_BYTES,
    KdfParams,
    decrypt_identity,
    encrypt_identity,
    load_identity,
    read_keystore_did,
    save_identity,
)

FAST = KdfParams(opslimit=argon2id.OPSLIMIT_MIN, memlimit=argon2id.MEMLIMIT_MIN)
PASSPHRASE = "correct horse battery staple"
SEED = bytes(range(32))


@pytest.fixture
def identity() -> AgentIdentity:
    return AgentIdentity.from_seed(SEED)


@pytest.fixture
def keystore(tmp_path: Path, identity: AgentIdentity) -> Path:
    path = tmp_path / "agent.json"
    save_identity(identity, path, PASSPHRASE, params=FAST)
    return path


def _doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_bytes())
    return doc


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc))


def _flip(b64: str, index: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# -- round trip ----------------------------------------------------------------


def test_round_trip_with_default_interactive_kdf(tmp_path: Path, identity: AgentIdentity) -> None:
    path = tmp_path / "agent.json"
    save_identity(identity, path, PASSPHRASE)
    doc = _doc(path)
    assert doc["opslimit"] == argon2id.OPSLIMIT_INTERACTIVE
    assert doc["memlimit"] == argon2id.MEMLIMIT_INTERACTIVE
    loaded = load_identity(path, PASSPHRASE)
    assert loaded.did == identity.did
    assert loaded.seed() == identity.seed()
    assert loaded.sign(b"x") == identity.sign(b"x")


def test_round_trip_with_fast_kdf_and_str_path(keystore: Path, identity: AgentIdentity) -> None:
    loaded = load_identity(str(keystore), PASSPHRASE)
    assert loaded.seed() == identity.seed()
    assert read_keystore_did(keystore) == identity.did


def test_unicode_passphrase_round_trips(tmp_path: Path, identity: AgentIdentity) -> None:
    path = tmp_path / "agent.json"
    save_identity(identity, path, "pässwörd 🔑", params=FAST)
    assert load_identity(path, "pässwörd 🔑").did == identity.did
    with pytest.raises(KeystoreDecryptError):
        load_identity(path, "passwörd 🔑")


def test_file_holds_no_secret_in_the_clear(keystore: Path, identity: AgentIdentity) -> None:
    content = keystore.read_bytes()
    assert identity.seed().hex().encode() not in content
    assert base64.b64encode(identity.seed()) not in content
    assert identity.seed() not in content
    assert PASSPHRASE.encode() not in content


def test_file_format_fields(keystore: Path, identity: AgentIdentity) -> None:
    doc = _doc(keystore)
    assert set(doc) == {"format", "version", "did", "kdf", "opslimit", "memlimit", "salt", "box"}
    assert doc["format"] == "agentmesh-keystore"
    assert doc["version"] == 1
    assert doc["kdf"] == "argon2id"
    assert doc["did"] == identity.did
    assert len(base64.b64decode(doc["salt"])) == argon2id.SALTBYTES


def test_two_saves_use_fresh_salt_and_nonce(tmp_path: Path, identity: AgentIdentity) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    save_identity(identity, a, PASSPHRASE, params=FAST)
    save_identity(identity, b, PASSPHRASE, params=FAST)
    doc_a, doc_b = _doc(a), _doc(b)
    assert doc_a["salt"] != doc_b["salt"]
    assert doc_a["box"][:32] != doc_b["box"][:32]


def test_moderate_params_are_stronger_than_default() -> None:
    assert KdfParams.moderate().opslimit > KdfParams().opslimit
    assert KdfParams.moderate().memlimit > KdfParams().memlimit


# -- permissions and atomic writes ------------------------------------------------


def test_file_mode_is_0600(keystore: Path) -> None:
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600


def test_overwrite_replaces_a_world_readable_file_with_mode_0600(
    tmp_path: Path, identity: AgentIdentity
) -> None:
    path = tmp_path / "agent.json"
    path.write_text("old content")
    path.chmod(0o644)
    save_identity(identity, path, PASSPHRASE, params=FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_identity(path, PASSPHRASE).did == identity.did


def test_mode_is_0600_even_with_a_permissive_umask(tmp_path: Path, identity: AgentIdentity) -> None:
    old = os.umask(0)
    try:
        save_identity(identity, tmp_path / "agent.json", PASSPHRASE, params=FAST)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "agent.json").stat().st_mode) == 0o600


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path, identity: AgentIdentity) -> None:
    for _ in range(3):
        save_identity(identity, tmp_path / "agent.json", PASSPHRASE, params=FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.json"]


def test_relative_path_is_written_in_the_current_directory(
    tmp_path: Path, identity: AgentIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    save_identity(identity, "relative.json", PASSPHRASE, params=FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relative.json"]
    assert load_identity("relative.json", PASSPHRASE).did == identity.did


def test_failed_replace_cleans_up_and_keeps_the_target(
    tmp_path: Path, identity: AgentIdentity
) -> None:
    # The rename onto a non-empty directory fails after the temp file is written.
    target = tmp_path / "agent.json"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(KeystoreError, match="cannot write"):
        save_identity(identity, target, PASSPHRASE, params=FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.json"]
    assert (target / "keep").read_text() == "x"


def test_write_into_missing_directory_raises_keystore_error(
    tmp_path: Path, identity: AgentIdentity
) -> None:
    with pytest.raises(KeystoreError, match="cannot write"):
        save_identity(identity, tmp_path / "missing" / "agent.json", PASSPHRASE, params=FAST)


def test_missing_file_raises_keystore_error(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="cannot read"):
        load_identity(tmp_path / "nope.json", PASSPHRASE)
    with pytest.raises(KeystoreError, match="cannot read"):
        read_keystore_did(tmp_path / "nope.json")


# -- wrong passphrase and tampering -------------------------------------------------


def test_wrong_passphrase_raises_decrypt_error(keystore: Path) -> None:
    with pytest.raises(KeystoreDecryptError, match="passphrase") as info:
        load_identity(keystore, PASSPHRASE + "!")
    assert info.value.code == "keystore_decrypt"
    assert info.value.path == str(keystore)
    with pytest.raises(KeystoreDecryptError):
        load_identity(keystore, "")


def _tamper_cases(
    identity_did: str, other_did: str
) -> list[tuple[str, Callable[[dict[str, Any]], None], type[KeystoreError]]]:
    def set_(key: str, value: object) -> Callable[[dict[str, Any]], None]:
        return lambda doc: doc.__setitem__(key, value)

    def delete(key: str) -> Callable[[dict[str, Any]], None]:
        return lambda doc: doc.pop(key)

    def edit(key: str, fn: Callable[[Any], Any]) -> Callable[[dict[str, Any]], None]:
        return lambda doc: doc.__setitem__(key, fn(doc[key]))

    fmt, dec = KeystoreFormatError, KeystoreDecryptError
    return [
        # did header
        ("did replaced by another valid DID", set_("did", other_did), dec),
        (
            "did with one character changed",
            edit("did", lambda d: d[:-1] + ("A" if d[-1] != "A" else "B")),
            dec,
        ),
        # salt
        ("salt byte flipped", edit("salt", lambda s: _flip(s, 0)), dec),
        ("salt last byte flipped", edit("salt", lambda s: _flip(s, 15)), dec),
        (
            "salt too short",
            edit("salt", lambda s: base64.b64encode(base64.b64decode(s)[:15]).decode()),
            fmt,
        ),
        (
            "salt too long",
            edit("salt", lambda s: base64.b64encode(base64.b64decode(s) + b"\0").decode()),
            fmt,
        ),
        ("salt not base64", set_("salt", "!!!not base64!!!"), fmt),
        ("salt not a string", set_("salt", 1234), fmt),
        ("salt missing", delete("salt"), fmt),
        # box
        ("box nonce byte flipped", edit("box", lambda s: _flip(s, 0)), dec),
        ("box ciphertext byte flipped", edit("box", lambda s: _flip(s, 30)), dec),
        ("box MAC byte flipped", edit("box", lambda s: _flip(s, 24)), dec),
        ("box last byte flipped", edit("box", lambda s: _flip(s, -1)), dec),
        (
            "box truncated by one byte",
            edit("box", lambda s: base64.b64encode(base64.b64decode(s)[:-1]).decode()),
            dec,
        ),
        (
            "box extended by one byte",
            edit("box", lambda s: base64.b64encode(base64.b64decode(s) + b"\0").decode()),
            dec,
        ),
        (
            "box truncated below nonce+MAC",
            edit("box", lambda s: base64.b64encode(base64.b64decode(s)[:30]).decode()),
            fmt,
        ),
        (
            "box truncated to nonce only",
            edit("box", lambda s: base64.b64encode(base64.b64decode(s)[:24]).decode()),
            fmt,
        ),
        ("box empty", set_("box", ""), fmt),
        ("box not base64", set_("box", "@@@@"), fmt),
        ("box not a string", set_("box", ["a"]), fmt),
        ("box missing", delete("box"), fmt),
        # KDF parameters
        ("opslimit changed in range", edit("opslimit", lambda v: v + 1), dec),
        ("memlimit changed in range", edit("memlimit", lambda v: v * 2), dec),
        ("opslimit zero", set_("opslimit", 0), fmt),
        ("opslimit negative", set_("opslimit", -1), fmt),
        ("opslimit above sensitive", set_("opslimit", argon2id.OPSLIMIT_SENSITIVE + 1), fmt),
        ("opslimit huge", set_("opslimit", 2**64), fmt),
        ("opslimit as string", set_("opslimit", "1"), fmt),
        ("opslimit as float", set_("opslimit", 1.0), fmt),
        ("opslimit as bool", set_("opslimit", True), fmt),
        ("opslimit null", set_("opslimit", None), fmt),
        ("opslimit missing", delete("opslimit"), fmt),
        ("memlimit below minimum", set_("memlimit", argon2id.MEMLIMIT_MIN - 1), fmt),
        ("memlimit above sensitive", set_("memlimit", argon2id.MEMLIMIT_SENSITIVE + 1), fmt),
        ("memlimit as string", set_("memlimit", "8192"), fmt),
        ("memlimit missing", delete("memlimit"), fmt),
        # envelope of the file
        ("format changed", set_("format", "other-keystore"), fmt),
        ("format missing", delete("format"), fmt),
        ("version 2", set_("version", 2), fmt),
        ("version 0", set_("version", 0), fmt),
        ("version as string", set_("version", "1"), fmt),
        ("version as bool true", set_("version", True), fmt),
        ("version as float", set_("version", 1.0), fmt),
        ("version missing", delete("version"), fmt),
        ("kdf scrypt", set_("kdf", "scrypt"), fmt),
        ("kdf argon2i", set_("kdf", "argon2i"), fmt),
        ("kdf missing", delete("kdf"), fmt),
    ]


def test_tampering_any_field_is_refused_with_the_right_error(
    keystore: Path, identity: AgentIdentity, tmp_path: Path
) -> None:
    other = AgentIdentity.from_seed(b"\x42" * 32)
    original = _doc(keystore)
    cases = _tamper_cases(identity.did, other.did)
    failures = []
    for name, mutate, expected in cases:
        doc = json.loads(json.dumps(original))
        mutate(doc)
        target = tmp_path / "tampered.json"
        _write(target, doc)
        try:
            loaded = load_identity(target, PASSPHRASE)
        except KeystoreError as exc:
            if type(exc) is not expected:
                failures.append(f"{name}: {type(exc).__name__} ({exc}), want {expected.__name__}")
            continue
        except Exception as exc:
            failures.append(f"{name}: leaked {type(exc).__name__}: {exc}")
            continue
        failures.append(f"{name}: loaded {loaded!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("did_header", "what"),
    [(None, "null"), (123, "integer"), (["did:key:z"], "list")],
)
def test_malformed_did_header_is_refused(keystore: Path, did_header: object, what: str) -> None:
    doc = _doc(keystore)
    doc["did"] = did_header
    _write(keystore, doc)
    with pytest.raises((KeystoreFormatError, KeystoreDecryptError)):
        load_identity(keystore, PASSPHRASE)
    with pytest.raises(KeystoreFormatError):
        read_keystore_did(keystore)


def test_missing_did_header_is_refused(keystore: Path) -> None:
    doc = _doc(keystore)
    del doc["did"]
    _write(keystore, doc)
    with pytest.raises((KeystoreFormatError, KeystoreDecryptError)):
        load_identity(keystore, PASSPHRASE)


def test_swapped_did_header_from_another_keystore_is_refused(tmp_path: Path) -> None:
    alice, bob = AgentIdentity.from_seed(b"\x01" * 32), AgentIdentity.from_seed(b"\x02" * 32)
    save_identity(alice, tmp_path / "alice.json", PASSPHRASE, params=FAST)
    save_identity(bob, tmp_path / "bob.json", PASSPHRASE, params=FAST)
    alice_doc, bob_doc = _doc(tmp_path / "alice.json"), _doc(tmp_path / "bob.json")

    # Bob's sealed key under Alice's name: the box decrypts, but to Bob's DID.
    spliced = dict(bob_doc, did=alice_doc["did"])
    _write(tmp_path / "spliced.json", spliced)
    assert read_keystore_did(tmp_path / "spliced.json") == alice.did  # header is unauthenticated
    with pytest.raises(KeystoreDecryptError, match="DID"):
        load_identity(tmp_path / "spliced.json", PASSPHRASE)

    # Alice's header and salt with Bob's box: the derived key no longer opens it.
    mixed = dict(alice_doc, box=bob_doc["box"])
    _write(tmp_path / "mixed.json", mixed)
    with pytest.raises(KeystoreDecryptError):
        load_identity(tmp_path / "mixed.json", PASSPHRASE)


def test_decrypted_plaintext_must_match_the_header_did(identity: AgentIdentity) -> None:
    content = encrypt_identity(identity, PASSPHRASE, params=FAST)
    assert decrypt_identity(content, PASSPHRASE).did == identity.did
    doc = json.loads(content)
    doc["did"] = AgentIdentity.generate().did
    with pytest.raises(KeystoreDecryptError):
        decrypt_identity(json.dumps(doc).encode(), PASSPHRASE)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty file"),
        pytest.param(b"not json at all", id="not JSON"),
        pytest.param(b"\xff\xfe\xfd garbage", id="invalid UTF-8"),
        pytest.param(b"[1, 2, 3]", id="JSON array"),
        pytest.param(b'"agentmesh-keystore"', id="JSON string"),
        pytest.param(b"null", id="JSON null"),
        pytest.param(b'{"format": "agentmesh-keystore"', id="truncated JSON"),
        pytest.param(b"[" * 8_000 + b"]" * 8_000, id="deeply nested JSON"),
        pytest.param(
            b'{"format": "agentmesh-keystore", "version": ' + b"9" * 5_000 + b"}",
            id="integer over the digit limit",
        ),
    ],
)
def test_non_keystore_content_raises_format_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(KeystoreFormatError):
        load_identity(path, PASSPHRASE)
    with pytest.raises(KeystoreFormatError):
        read_keystore_did(path)


def test_oversized_file_raises_format_error(keystore: Path) -> None:
    doc = _doc(keystore)
    doc["padding"] = "x" * MAX_FILE_BYTES
    _write(keystore, doc)
    with pytest.raises(KeystoreFormatError, match="larger"):
        load_identity(keystore, PASSPHRASE)
    with pytest.raises(KeystoreFormatError, match="larger"):
        read_keystore_did(keystore)


def test_unknown_extra_field_within_size_does_not_unlock_anything(keystore: Path) -> None:
    # Extra fields are tolerated, but the key still has to decrypt and match.
    doc = _doc(keystore)
    doc["comment"] = "hello"
    _write(keystore, doc)
    assert load_identity(keystore, PASSPHRASE).seed() == SEED
    with pytest.raises(KeystoreDecryptError):
        load_identity(keystore, "wrong")


def test_every_single_byte_truncation_of_the_file_is_refused(
    keystore: Path, tmp_path: Path
) -> None:
    content = keystore.read_bytes()
    target = tmp_path / "cut.json"
    # Every prefix: most are invalid JSON; none may load.
    for cut in range(0, len(content) - 2, 7):
        target.write_bytes(content[:cut])
        with pytest.raises(KeystoreError):
            load_identity(target, PASSPHRASE)


def test_errors_are_keystore_subclasses() -> None:
    assert issubclass(KeystoreFormatError, KeystoreError)
    assert issubclass(KeystoreDecryptError, KeystoreError)
    assert not issubclass(KeystoreFormatError, KeystoreDecryptError)
