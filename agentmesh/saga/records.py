"""Saga log records and their canonical encoding.

Every state change of a saga is one :class:`SagaRecord`, appended to the saga log
*before* the coordinator acts on it. Records are numbered per saga (1, 2, ...);
the number is also the stream de-duplication id (``<saga>.<number>``), so two
replicas that race for the same number cannot both store it, and a reader keeps
the first record of each number it meets (see :mod:`agentmesh.saga.state`).

Encoding: msgpack of a map with sorted keys (recursively), version field
``v`` = 1. The same record always encodes to the same bytes. What is stored is a
*signed* record: ``[body, signature]`` where the signature is the writing
coordinator's Ed25519 signature over ``b"agentmesh/1/saga-record\x00" || body``,
checked against the ``did:key`` named in the body. A record injected into the
stream by anyone else fails to open (:class:`SagaLogCorrupt`); a replica can also
restrict which coordinator DIDs it accepts at all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import msgpack
from nacl.exceptions import BadSignatureError

from agentmesh.saga.errors import SagaLogCorrupt
from iatp.did import verify_key_for_did
from iatp.errors import InvalidDID
from iatp.identity import AgentIdentity

FORMAT_VERSION = 1
RECORD_DOMAIN = b"agentmesh/1/saga-record\x00"
MAX_RECORD_BYTES = 256 * 1024


class RecordKind(enum.StrEnum):
    """What happened. ``saga.resumed`` is a marker (number 0) outside the state machine."""

    SAGA_STARTED = "saga.started"
    SAGA_RESUMED = "saga.resumed"
    STEP_STARTED = "step.started"
    STEP_ATTEMPT_FAILED = "step.attempt_failed"
    STEP_HANDOFF = "step.handoff"
    STEP_SUCCEEDED = "step.succeeded"
    STEP_FAILED = "step.failed"
    SAGA_COMPENSATING = "saga.compensating"
    COMPENSATION_STARTED = "compensation.started"
    COMPENSATION_ATTEMPT_FAILED = "compensation.attempt_failed"
    COMPENSATION_SUCCEEDED = "compensation.succeeded"
    COMPENSATION_FAILED = "compensation.failed"
    SAGA_COMPLETED = "saga.completed"
    SAGA_COMPENSATED = "saga.compensated"
    SAGA_NEEDS_ATTENTION = "saga.needs_attention"


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """One state change.

    Attributes:
        saga_id: the saga.
        number: 1-based position in the saga's state machine (0 for markers).
        kind: what happened.
        at_ms: coordinator wall clock.
        coordinator: DID of the coordinator replica that wrote it.
        step: the step it is about (``None`` for saga-level records).
        agent: the agent DID involved, if any.
        attempt: attempt number (1-based) for starts and attempt failures.
        data: kind-specific fields (codes, results, the definition), JSON-like values.
        seq: the stream sequence it was read from (0 before it is stored).
    """

    saga_id: str
    number: int
    kind: RecordKind
    at_ms: int
    coordinator: str
    step: str | None = None
    agent: str | None = None
    attempt: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    seq: int = 0

    @property
    def msg_id(self) -> str:
        """The stream de-duplication id: one record per (saga, number)."""
        return f"{self.saga_id}.{self.number}"

    def code(self) -> str:
        return str(self.data.get("code", ""))


def canonical(value: Any) -> Any:
    """``value`` with every map's keys sorted (recursively); tuples become lists."""
    if isinstance(value, dict):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def pack(value: Any) -> bytes:
    """Canonical msgpack bytes of a JSON-like ``value``."""
    return msgpack.packb(canonical(value), use_bin_type=True)


def unpack(data: bytes, *, max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """Decode msgpack (no ext types, bounded sizes).

    Raises:
        ValueError: not valid msgpack, trailing bytes or too large.
    """
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes exceed the limit of {max_bytes}")
    return msgpack.unpackb(data, raw=False, strict_map_key=True)


def encode_record(record: SagaRecord) -> bytes:
    return pack(
        {
            "v": FORMAT_VERSION,
            "saga": record.saga_id,
            "n": record.number,
            "kind": record.kind.value,
            "at": record.at_ms,
            "by": record.coordinator,
            "step": record.step,
            "agent": record.agent,
            "attempt": record.attempt,
            "data": record.data,
        }
    )


def seal_record(record: SagaRecord, identity: AgentIdentity) -> bytes:
    """The stored form: canonical body and the coordinator's signature over it.

    Raises:
        ValueError: ``identity`` is not the record's coordinator.
    """
    if identity.did != record.coordinator:
        raise ValueError("a record is sealed by the coordinator it names")
    body = encode_record(record)
    return msgpack.packb([body, identity.sign(RECORD_DOMAIN + body)], use_bin_type=True)


def open_record(data: bytes, *, seq: int = 0, trusted: frozenset[str] | None = None) -> SagaRecord:
    """Verify and parse a stored record.

    Args:
        trusted: coordinator DIDs whose records are accepted (``None``: any signer).

    Raises:
        SagaLogCorrupt: malformed, badly signed, or written by an untrusted DID.
    """
    try:
        frame = unpack(data)
    except Exception as exc:
        raise SagaLogCorrupt(f"saga record at seq {seq} is not msgpack: {exc}") from exc
    if not (
        isinstance(frame, list)
        and len(frame) == 2
        and all(isinstance(part, bytes) for part in frame)
    ):
        raise SagaLogCorrupt(f"saga record at seq {seq} is not a signed record")
    body, signature = frame
    record = decode_record(body, seq=seq)
    if trusted is not None and record.coordinator not in trusted:
        raise SagaLogCorrupt(
            f"record at seq {seq} was written by an untrusted coordinator", saga_id=record.saga_id
        )
    try:
        verify_key_for_did(record.coordinator).verify(RECORD_DOMAIN + body, signature)
    except (BadSignatureError, InvalidDID, ValueError) as exc:
        raise SagaLogCorrupt(
            f"record at seq {seq} has a bad signature", saga_id=record.saga_id
        ) from exc
    return record


_FIELDS = {"v", "saga", "n", "kind", "at", "by", "step", "agent", "attempt", "data"}


def decode_record(data: bytes, *, seq: int = 0) -> SagaRecord:
    """Parse one stored record.

    Raises:
        SagaLogCorrupt: not a version-1 record with fields of the right types.
    """
    try:
        raw = unpack(data)
    except Exception as exc:
        raise SagaLogCorrupt(f"saga record at seq {seq} is not msgpack: {exc}") from exc
    if not isinstance(raw, dict) or set(raw) != _FIELDS or raw["v"] != FORMAT_VERSION:
        raise SagaLogCorrupt(f"saga record at seq {seq} has the wrong shape or version")
    saga = raw["saga"]
    try:
        kind = RecordKind(raw["kind"])
    except ValueError as exc:
        raise SagaLogCorrupt(f"unknown record kind {raw['kind']!r}", saga_id=saga) from exc
    checks = (
        isinstance(saga, str),
        type(raw["n"]) is int and raw["n"] >= 0,
        type(raw["at"]) is int,
        isinstance(raw["by"], str),
        raw["step"] is None or isinstance(raw["step"], str),
        raw["agent"] is None or isinstance(raw["agent"], str),
        type(raw["attempt"]) is int and raw["attempt"] >= 0,
        isinstance(raw["data"], dict),
    )
    if not all(checks):
        raise SagaLogCorrupt(f"saga record at seq {seq} has a field of the wrong type")
    return SagaRecord(
        saga_id=saga,
        number=raw["n"],
        kind=kind,
        at_ms=raw["at"],
        coordinator=raw["by"],
        step=raw["step"],
        agent=raw["agent"],
        attempt=raw["attempt"],
        data=raw["data"],
        seq=seq,
    )


__all__ = [
    "FORMAT_VERSION",
    "RECORD_DOMAIN",
    "RecordKind",
    "SagaRecord",
    "canonical",
    "decode_record",
    "encode_record",
    "open_record",
    "pack",
    "seal_record",
    "unpack",
]
