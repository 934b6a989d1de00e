"""Identities at rest: a JSON file encrypted with a passphrase.

The passphrase is stretched with argon2id (PyNaCl ``pwhash.argon2id``) into a
SecretBox key (XSalsa20-Poly1305). The plaintext is ``msgpack([seed, did])`` so a
tampered DID in the clear header is caught after decryption; any tampered
ciphertext, salt or KDF parameter fails authentication. Files are written
atomically (temporary file, fsync, rename) with mode 0600.

File format (JSON object, all binary fields standard base64)::

    {"format": "agentmesh-keystore", "version": 1, "did": "did:key:z6Mk...",
     "kdf": "argon2id", "opslimit": int, "memlimit": int, "salt": b64(16),
     "box": b64(nonce(24) || ciphertext)}
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgpack
from nacl.exceptions import CryptoError
from nacl.pwhash import argon2id
from nacl.secret import SecretBox
from nacl.utils import random as random_bytes

from iatp.errors import KeystoreDecryptError, KeystoreError, KeystoreFormatError
from iatp.identity import SEED_BYTES, AgentIdentity

FORMAT = "agentmesh-keystore"
VERSION = 1
MAX_FILE_BYTES = 16_384


@dataclass(frozen=True, slots=True)
class KdfParams:
    """argon2id cost. ``interactive`` is the default; ``moderate`` for long-lived keys."""

    opslimit: int = argon2id.OPSLIMIT_INTERACTIVE
    memlimit: int = argon2id.MEMLIMIT_INTERACTIVE

    @classmethod
    def moderate(cls) -> KdfParams:
        return cls(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)


# A tampered file must not make us allocate gigabytes or spin for minutes.
_MAX_OPSLIMIT = argon2id.OPSLIMIT_SENSITIVE
_MAX_MEMLIMIT = argon2id.MEMLIMIT_SENSITIVE


def _derive_key(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    return argon2id.kdf(
        SecretBox.KEY_SIZE,
        passphrase.encode("utf-8"),
        salt,
        opslimit=params.opslimit,
        memlimit=params.memlimit,
    )


def encrypt_identity(
    identity: AgentIdentity, passphrase: str, *, params: KdfParams | None = None
) -> bytes:
    """The keystore file content (UTF-8 JSON) for ``identity``."""
    params = params or KdfParams()
    salt = random_bytes(argon2id.SALTBYTES)
    box = SecretBox(_derive_key(passphrase, salt, params))
    sealed = box.encrypt(msgpack.packb([identity.seed(), identity.did], use_bin_type=True))
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "did": identity.did,
        "kdf": "argon2id",
        "opslimit": params.opslimit,
        "memlimit": params.memlimit,
        "salt": base64.b64encode(salt).decode(),
        "box": base64.b64encode(bytes(sealed)).decode(),
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def save_identity(
    identity: AgentIdentity,
    path: str | os.PathLike[str],
    passphrase: str,
    *,
    params: KdfParams | None = None,
) -> None:
    """Encrypt ``identity`` to ``path`` atomically, with permissions 0600.

    Raises:
        KeystoreError: the file could not be written.
    """
    target = Path(path)
    content = encrypt_identity(identity, passphrase, params=params)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise KeystoreError(str(target), f"cannot write: {exc.strerror or exc}") from exc


def _field(doc: dict[str, object], name: str, kind: type, where: str) -> object:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise KeystoreFormatError(where, f"field {name!r} missing or not a {kind.__name__}")
    return value


def _b64(doc: dict[str, object], name: str, where: str) -> bytes:
    text = _field(doc, name, str, where)
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise KeystoreFormatError(where, f"field {name!r} is not base64") from None


def read_keystore_did(path: str | os.PathLike[str]) -> str:
    """The DID recorded in a keystore's clear header (not authenticated until loaded)."""
    doc = _parse(_read(Path(path)), str(path))
    return str(_field(doc, "did", str, str(path)))


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KeystoreError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise KeystoreFormatError(str(path), f"larger than {MAX_FILE_BYTES} bytes")
    return data


def _parse(content: bytes, where: str) -> dict[str, object]:
    try:
        doc = json.loads(content)
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad JSON and integers over the digit limit;
        # RecursionError, deeply nested arrays.
        raise KeystoreFormatError(where, "not a JSON keystore") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeystoreFormatError(where, f"not an {FORMAT} file")
    version = doc.get("version")
    if type(version) is not int or version != VERSION or doc.get("kdf") != "argon2id":
        raise KeystoreFormatError(where, "unsupported keystore version or KDF")
    return doc


def decrypt_identity(content: bytes, passphrase: str, *, where: str = "<memory>") -> AgentIdentity:
    """Decrypt keystore ``content``; either the whole identity or an error.

    Raises:
        KeystoreFormatError: not a keystore, or a field is malformed.
        KeystoreDecryptError: wrong passphrase, or the file was tampered with.
    """
    doc = _parse(content, where)
    opslimit = int(str(_field(doc, "opslimit", int, where)))
    memlimit = int(str(_field(doc, "memlimit", int, where)))
    if not (argon2id.OPSLIMIT_MIN <= opslimit <= _MAX_OPSLIMIT) or not (
        argon2id.MEMLIMIT_MIN <= memlimit <= _MAX_MEMLIMIT
    ):
        raise KeystoreFormatError(where, "argon2id parameters out of the allowed range")
    salt = _b64(doc, "salt", where)
    sealed = _b64(doc, "box", where)
    if len(salt) != argon2id.SALTBYTES:
        raise KeystoreFormatError(where, "salt has the wrong length")
    if len(sealed) < SecretBox.NONCE_SIZE + SecretBox.MACBYTES:
        raise KeystoreFormatError(where, "sealed box is truncated")
    key = _derive_key(passphrase, salt, KdfParams(opslimit, memlimit))
    try:
        plaintext = SecretBox(key).decrypt(sealed)
    except CryptoError:
        raise KeystoreDecryptError(where, "wrong passphrase or tampered file") from None
    try:
        seed, did = msgpack.unpackb(plaintext, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise KeystoreDecryptError(where, "decrypted content is malformed") from None
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise KeystoreDecryptError(where, "decrypted seed is malformed")
    identity = AgentIdentity.from_seed(seed)
    if did != identity.did or doc.get("did") != identity.did:
        raise KeystoreDecryptError(where, "DID does not match the key (tampered file)")
    return identity


def load_identity(path: str | os.PathLike[str], passphrase: str) -> AgentIdentity:
    """Load and decrypt the identity at ``path``.

    Raises:
        KeystoreError: unreadable file.
        KeystoreFormatError: not a keystore, or a field is malformed.
        KeystoreDecryptError: wrong passphrase, or the file was tampered with.
    """
    return decrypt_identity(_read(Path(path)), passphrase, where=str(path))
