"""Verify an audit chain and its checkpoints, and say where it was tampered with.

Problems found (each with the file line and the sequence number):

- ``malformed``: a line is not a well-formed record;
- ``edited``: a record's contents do not match its hash;
- ``unlinked``: a record does not link to the previous record's hash
  (a record was edited and re-hashed, inserted, or removed and renumbered);
- ``removed``: sequence numbers are missing;
- ``reordered``: a record appears before records that precede it;
- ``duplicated``: a sequence number appears twice (an inserted record);
- ``checkpoint_mismatch``: a signed checkpoint's head differs from the log's
  record at that sequence (the log was rewritten with recomputed hashes);
- ``truncated``: a checkpoint covers records the log no longer has;
- ``bad_checkpoint``: a checkpoint is malformed, forged, or from another node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from agentmesh.audit.chain import EVENT_FIELDS, GENESIS, iter_lines, record_hash
from agentmesh.audit.checkpoint import Checkpoint, checkpoint_is_valid

_RECORD_KEYS = {"seq", "prev", "event", "hash"}


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    line: int | None
    seq: int | None
    message: str


@dataclass(slots=True)
class VerifyReport:
    """The outcome of :func:`verify_log`; ``ok`` when no problem was found."""

    records: int = 0
    last_seq: int = 0
    head: str = GENESIS
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, line: int | None, seq: int | None, message: str) -> None:
        self.problems.append(Problem(kind, line, seq, message))


@dataclass(frozen=True, slots=True)
class _Parsed:
    line: int
    seq: int
    prev: str
    event: dict[str, object]
    hash: str


def _parse(line: int, text: str) -> _Parsed | str:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg})"
    if not isinstance(data, dict) or set(data) != _RECORD_KEYS:
        return "a record has exactly seq, prev, event and hash"
    seq, prev, event, digest = data["seq"], data["prev"], data["event"], data["hash"]
    if type(seq) is not int or not isinstance(prev, str) or not isinstance(digest, str):
        return "seq must be an integer, prev and hash strings"
    if not isinstance(event, dict) or set(event) != set(EVENT_FIELDS):
        return f"event must have exactly the fields {', '.join(EVENT_FIELDS)}"
    return _Parsed(line, seq, prev, event, digest)


def verify_records(lines: Iterable[tuple[int, str]], report: VerifyReport) -> dict[int, str]:
    """Check the chain; returns seq -> stored hash of every well-formed record."""
    parsed: list[_Parsed] = []
    for line, text in lines:
        result = _parse(line, text)
        if isinstance(result, str):
            report.add("malformed", line, None, f"line {line}: {result}")
        else:
            parsed.append(result)
    report.records = len(parsed)
    first_line: dict[int, int] = {}
    for item in parsed:
        first_line.setdefault(item.seq, item.line)
    hashes: dict[int, str] = {}
    expected, previous = 1, GENESIS
    for item in parsed:
        where = f"line {item.line} (seq {item.seq})"
        if record_hash(item.seq, item.prev, item.event) != item.hash:
            report.add("edited", item.line, item.seq, f"{where}: contents do not match the hash")
        if item.seq in hashes:
            report.add(
                "duplicated",
                item.line,
                item.seq,
                f"{where}: seq {item.seq} already at line {first_line[item.seq]} (inserted?)",
            )
        elif item.seq < expected:
            report.add("reordered", item.line, item.seq, f"{where}: comes after seq {expected - 1}")
        elif item.seq > expected:
            missing = range(expected, item.seq)
            later = [s for s in missing if first_line.get(s, 0) > item.line]
            if later:
                report.add(
                    "reordered",
                    item.line,
                    item.seq,
                    f"{where}: comes before seq {later[0]} (line {first_line[later[0]]})",
                )
            else:
                report.add(
                    "removed",
                    item.line,
                    item.seq,
                    f"records seq {expected}..{item.seq - 1} are missing before {where}",
                )
        elif item.prev != previous:
            report.add(
                "unlinked",
                item.line,
                item.seq,
                f"{where}: does not link to the previous record's hash "
                "(edited and re-hashed, inserted or removed before it)",
            )
        hashes.setdefault(item.seq, item.hash)
        if item.seq >= expected:
            expected, previous = item.seq + 1, item.hash
        report.last_seq = max(report.last_seq, item.seq)
    if report.last_seq:
        report.head = hashes.get(report.last_seq, GENESIS)
    return hashes


def verify_checkpoints(
    checkpoints: Iterable[tuple[int | None, Checkpoint | None]],
    hashes: dict[int, str],
    report: VerifyReport,
    *,
    node: str | None,
) -> None:
    """Check each checkpoint's signature and that the log matches it."""
    for line, checkpoint in checkpoints:
        where = f"checkpoint line {line}" if line is not None else "witnessed checkpoint"
        if checkpoint is None:
            report.add("bad_checkpoint", line, None, f"{where}: malformed")
            continue
        if not checkpoint_is_valid(checkpoint, node):
            whose = f"not from {node}" if node and checkpoint.node != node else "bad signature"
            report.add("bad_checkpoint", line, checkpoint.seq, f"{where}: {whose}")
            continue
        report.checkpoints += 1
        stored = hashes.get(checkpoint.seq)
        if checkpoint.seq > report.last_seq:
            report.add(
                "truncated",
                line,
                checkpoint.seq,
                f"{where}: signed head at seq {checkpoint.seq}, but the log ends at seq "
                f"{report.last_seq} (records removed from the end)",
            )
        elif stored != checkpoint.head:
            report.add(
                "checkpoint_mismatch",
                line,
                checkpoint.seq,
                f"{where}: the log's record seq {checkpoint.seq} differs from the signed head "
                "(records at or before it were rewritten)",
            )


def verify_log(
    path: str | os.PathLike[str],
    checkpoints: Iterable[tuple[int | None, Checkpoint | None]] = (),
    *,
    node: str | None = None,
) -> VerifyReport:
    """Verify the chain in ``path`` against ``checkpoints`` (from the sidecar or the mesh).

    Args:
        path: the audit log (JSON lines).
        checkpoints: (line or ``None``, checkpoint or ``None`` if malformed).
        node: the DID whose key must have signed the checkpoints. Without it any
            validly signed checkpoint counts, so pass it when the log may be hostile.
    """
    report = VerifyReport()
    hashes = verify_records(iter_lines(path), report)
    verify_checkpoints(checkpoints, hashes, report, node=node)
    return report


__all__ = ["Problem", "VerifyReport", "verify_checkpoints", "verify_log", "verify_records"]
