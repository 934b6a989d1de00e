"""Tamper-evident audit: a hash chain over every record, signed checkpoints, verification.

See :mod:`agentmesh.auditlog.chain` for the record format and group commit,
:mod:`agentmesh.auditlog.checkpoint` for signed heads,
:mod:`agentmesh.auditlog.witness` for publishing them on the mesh, and
:mod:`agentmesh.auditlog.verify` for finding where a log was tampered with.
"""

from agentmesh.auditlog.chain import ChainedAuditLog, ChainedRecord, ChainHead, GroupCommit
from agentmesh.auditlog.checkpoint import (
    Checkpoint,
    CheckpointSigner,
    checkpoint_is_valid,
    checkpoint_path,
    read_checkpoints,
    sign_checkpoint,
)
from agentmesh.auditlog.verify import Problem, VerifyReport, verify_log

__all__ = [
    "ChainHead",
    "ChainedAuditLog",
    "ChainedRecord",
    "Checkpoint",
    "CheckpointSigner",
    "GroupCommit",
    "Problem",
    "VerifyReport",
    "checkpoint_is_valid",
    "checkpoint_path",
    "read_checkpoints",
    "sign_checkpoint",
    "verify_log",
]
