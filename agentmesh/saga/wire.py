"""Step requests and replies on the mesh (bodies of signed ``saga.step`` envelopes).

The envelope already authenticates the coordinator and binds the reply to the
request; these bodies say *what* to do and *how it ended*. Canonical msgpack.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any

from agentmesh.saga.errors import StepMessageError
from agentmesh.saga.records import pack, unpack

STEP_TYPE = "saga.step"
WIRE_VERSION = 1


class StepKind(enum.StrEnum):
    FORWARD = "forward"
    COMPENSATE = "compensate"


class ReplyStatus(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class StepRequestBody:
    """What the coordinator asks an agent to do."""

    saga_id: str
    step: str
    kind: StepKind
    action: str
    key: str
    params: dict[str, Any] = field(default_factory=dict)
    forward_result: dict[str, Any] | None = None

    def digest(self) -> str:
        """Hash of what the action depends on: a re-delivery must match it exactly."""
        return hashlib.sha256(
            pack([self.saga_id, self.step, self.kind.value, self.action, self.params])
        ).hexdigest()


@dataclass(frozen=True, slots=True)
class StepReplyBody:
    """How the action ended on the agent. ``duplicate``: the first result, replayed."""

    status: ReplyStatus
    result: dict[str, Any] = field(default_factory=dict)
    code: str = ""
    detail: str = ""
    duplicate: bool = False


def encode_request(body: StepRequestBody) -> bytes:
    return pack(
        {
            "v": WIRE_VERSION,
            "saga": body.saga_id,
            "step": body.step,
            "kind": body.kind.value,
            "action": body.action,
            "key": body.key,
            "params": body.params,
            "forward_result": body.forward_result,
        }
    )


def _decode_map(data: bytes, fields: set[str], what: str) -> dict[str, Any]:
    try:
        raw = unpack(data, max_bytes=1024 * 1024)
    except Exception as exc:
        raise StepMessageError(f"{what} is not msgpack: {exc}") from exc
    if not isinstance(raw, dict) or set(raw) != fields or raw.get("v") != WIRE_VERSION:
        raise StepMessageError(f"{what} has the wrong fields or version")
    return raw


def decode_request(data: bytes) -> StepRequestBody:
    """Raises: StepMessageError: malformed."""
    raw = _decode_map(
        data,
        {"v", "saga", "step", "kind", "action", "key", "params", "forward_result"},
        "step request",
    )
    try:
        kind = StepKind(raw["kind"])
    except ValueError as exc:
        raise StepMessageError(f"unknown step kind {raw['kind']!r}") from exc
    strings = (raw["saga"], raw["step"], raw["action"], raw["key"])
    if not all(isinstance(s, str) and 0 < len(s) <= 256 for s in strings):
        raise StepMessageError("saga, step, action and key must be non-empty strings")
    if not isinstance(raw["params"], dict) or not (
        raw["forward_result"] is None or isinstance(raw["forward_result"], dict)
    ):
        raise StepMessageError("params and forward_result must be maps")
    return StepRequestBody(
        raw["saga"],
        raw["step"],
        kind,
        raw["action"],
        raw["key"],
        raw["params"],
        raw["forward_result"],
    )


def encode_reply(body: StepReplyBody) -> bytes:
    return pack(
        {
            "v": WIRE_VERSION,
            "status": body.status.value,
            "result": body.result,
            "code": body.code,
            "detail": body.detail[:300],
            "duplicate": body.duplicate,
        }
    )


def decode_reply(data: bytes) -> StepReplyBody:
    """Raises: StepMessageError: malformed."""
    raw = _decode_map(data, {"v", "status", "result", "code", "detail", "duplicate"}, "reply")
    try:
        status = ReplyStatus(raw["status"])
    except ValueError as exc:
        raise StepMessageError(f"unknown reply status {raw['status']!r}") from exc
    if not (
        isinstance(raw["result"], dict)
        and isinstance(raw["code"], str)
        and isinstance(raw["detail"], str)
        and isinstance(raw["duplicate"], bool)
    ):
        raise StepMessageError("reply fields have the wrong types")
    return StepReplyBody(status, raw["result"], raw["code"], raw["detail"], raw["duplicate"])


__all__ = [
    "STEP_TYPE",
    "ReplyStatus",
    "StepKind",
    "StepReplyBody",
    "StepRequestBody",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]
