"""Audit: every rejection, session and lifecycle change, and the tamper-evident log.

:mod:`agentmesh.audit.events` holds the events and the plain sinks (memory, JSON
lines, fan-out) the mesh runtime writes to; the rest makes a log tamper-evident:

See :mod:`agentmesh.audit.chain` for the record format and group commit,
:mod:`agentmesh.audit.checkpoint` for signed heads,
:mod:`agentmesh.audit.witness` for publishing them on the mesh, and
:mod:`agentmesh.audit.verify` for finding where a log was tampered with.
"""

from agentmesh.audit.chain import ChainedAuditLog, ChainedRecord, ChainHead, GroupCommit
from agentmesh.audit.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    checkpoint_is_valid,
    checkpoint_path,
    read_checkpoints,
    sign_checkpoint,
)
from agentmesh.audit.events import (
    AuditEvent,
    AuditSink,
    FanoutAuditSink,
    JsonlAuditSink,
    MemoryAuditSink,
    read_jsonl_audit,
)
from agentmesh.audit.verify import Problem, VerifyReport, verify_log

__all__ = [
    "AuditEvent",
    "AuditSink",
    "ChainHead",
    "ChainedAuditLog",
    "ChainedRecord",
    "Checkpoint",
    "CheckpointSigner",
    "FanoutAuditSink",
    "GroupCommit",
    "JsonlAuditSink",
    "MemoryAuditSink",
    "Problem",
    "VerifyReport",
    "checkpoint_is_valid",
    "checkpoint_path",
    "read_checkpoints",
    "read_jsonl_audit",
    "sign_checkpoint",
    "verify_log",
]
