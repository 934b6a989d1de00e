"""Signed checkpoints of an audit chain.

A checkpoint says "node N's audit chain had head H at sequence S", signed with
the node's Ed25519 key::

    signature = Ed25519_node("agentmesh/1/audit-checkpoint\\x00" ||
                             canonical_json([node, seq, head, at_ms]))

The node keeps its checkpoints next to the log (``<log>.checkpoints``, JSON
lines) and publishes them on the mesh, where peers witness them
(:mod:`agentmesh.audit.witness`). A rewritten log cannot match a checkpoint
a peer already holds, and a checkpoint cannot be forged without the node's key.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError

from agentmesh.audit.chain import ChainHead, canonical_json, iter_lines
from iatp.clock import Clock, SystemClock
from iatp.did import verify_key_for_did
from iatp.errors import InvalidDID
from iatp.identity import AgentIdentity

CHECKPOINT_DOMAIN = b"agentmesh/1/audit-checkpoint\x00"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement of an audit chain's head."""

    node: str
    seq: int
    head: str
    at_ms: int
    signature: bytes

    def signing_bytes(self) -> bytes:
        return CHECKPOINT_DOMAIN + canonical_json([self.node, self.seq, self.head, self.at_ms])

    def to_json(self) -> str:
        return canonical_json(
            {
                "node": self.node,
                "seq": self.seq,
                "head": self.head,
                "at_ms": self.at_ms,
                "signature": self.signature.hex(),
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> Checkpoint:
        """Raises: ValueError (malformed)."""
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != {"node", "seq", "head", "at_ms", "signature"}:
            raise ValueError("a checkpoint has exactly node, seq, head, at_ms, signature")
        node, seq, head, at_ms, signature = (
            data["node"],
            data["seq"],
            data["head"],
            data["at_ms"],
            data["signature"],
        )
        if not (isinstance(node, str) and isinstance(head, str) and isinstance(signature, str)):
            raise ValueError("checkpoint node, head and signature are strings")
        if type(seq) is not int or type(at_ms) is not int:
            raise ValueError("checkpoint seq and at_ms are integers")
        return cls(node, seq, head, at_ms, bytes.fromhex(signature))


def sign_checkpoint(identity: AgentIdentity, head: ChainHead, at_ms: int) -> Checkpoint:
    unsigned = Checkpoint(identity.did, head.seq, head.hash, at_ms, b"")
    return Checkpoint(
        identity.did, head.seq, head.hash, at_ms, identity.sign(unsigned.signing_bytes())
    )


def checkpoint_is_valid(checkpoint: Checkpoint, node: str | None = None) -> bool:
    """True when the signature verifies under the checkpoint's node key (and it is ``node``)."""
    if node is not None and checkpoint.node != node:
        return False
    try:
        verify_key_for_did(checkpoint.node).verify(checkpoint.signing_bytes(), checkpoint.signature)
    except (BadSignatureError, InvalidDID, ValueError, TypeError):
        return False
    return True


def checkpoint_path(log_path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(log_path)}.checkpoints")


def read_checkpoints(path: str | os.PathLike[str]) -> list[tuple[int, Checkpoint | None]]:
    """(line, checkpoint or ``None`` if malformed) for each line; empty if no file."""
    if not Path(path).exists():
        return []
    found: list[tuple[int, Checkpoint | None]] = []
    for number, line in iter_lines(path):
        try:
            found.append((number, Checkpoint.from_json(line)))
        except (ValueError, KeyError):
            found.append((number, None))
    return found


CheckpointListener = Callable[[Checkpoint], None]


class CheckpointSigner:
    """Signs chain heads and appends them to the sidecar file; listeners publish them.

    Hook it into a log: ``log.set_checkpoint_hook(signer, every=1000)``.
    """

    def __init__(
        self,
        identity: AgentIdentity,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
    ) -> None:
        self.identity = identity
        self.path = Path(path)
        self._clock: Clock = clock or SystemClock()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._listeners: list[CheckpointListener] = []
        self.latest: Checkpoint | None = None

    def add_listener(self, listener: CheckpointListener) -> None:
        self._listeners.append(listener)

    def __call__(self, head: ChainHead) -> Checkpoint:
        checkpoint = sign_checkpoint(self.identity, head, self._clock.now_ms())
        with self._lock:
            self._file.write(checkpoint.to_json() + "\n")
            self._file.flush()
            self.latest = checkpoint
        for listener in list(self._listeners):
            listener(checkpoint)
        return checkpoint

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


__all__ = [
    "CHECKPOINT_DOMAIN",
    "Checkpoint",
    "CheckpointListener",
    "CheckpointSigner",
    "checkpoint_is_valid",
    "checkpoint_path",
    "read_checkpoints",
    "sign_checkpoint",
]
