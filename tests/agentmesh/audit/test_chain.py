"""The audit chain: every field of every record is covered; tampering is found and located."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmesh.audit import (
    AuditEvent,
    ChainedAuditLog,
    CheckpointSigner,
    checkpoint_path,
    read_checkpoints,
    verify_log,
)
from agentmesh.audit.chain import EVENT_FIELDS
from agentmesh.audit.checkpoint import Checkpoint
from iatp.clock import ManualClock
from iatp.identity import AgentIdentity

NODE = AgentIdentity.from_seed(bytes(range(32)))


def event(i: int) -> AuditEvent:
    return AuditEvent(
        at_ms=1_700_000_000_000 + i,
        node=NODE.did,
        kind="policy_denied" if i % 2 else "rejected",
        code="policy_denied" if i % 2 else "ring_denied",
        peer=f"did:key:z6Mkpeer{i}",
        envelope_id=f"{i:032x}",
        subject="payments.transfer",
        detail=f"rule=big-pay ring=2 amount={i}",
    )


def write_log(tmp_path: Path, records: int = 10, every: int = 4) -> Path:
    path = tmp_path / "audit.jsonl"
    signer = CheckpointSigner(NODE, checkpoint_path(path), clock=ManualClock())
    with ChainedAuditLog(path, on_head=signer, checkpoint_every=every) as log:
        for i in range(records):
            log.append(event(i))
    signer.close()
    return path


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def save(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def verify(path: Path) -> Any:
    return verify_log(path, read_checkpoints(checkpoint_path(path)), node=NODE.did)


def test_an_untouched_log_verifies_and_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    with ChainedAuditLog(path) as log:
        assert log.head.seq == 10
        log.append(event(10))
    report = verify(path)
    assert report.ok, report.problems
    assert (report.records, report.last_seq, report.checkpoints) == (11, 11, 2)


@pytest.mark.parametrize("field", [*EVENT_FIELDS, "seq", "prev", "hash"])
def test_editing_any_field_of_any_record_is_found_at_its_line(tmp_path: Path, field: str) -> None:
    path = write_log(tmp_path)
    records = lines(path)
    target = records[5]
    if field in EVENT_FIELDS:
        old = target["event"][field]
        target["event"][field] = (old + 1) if isinstance(old, int) else f"{old}x"
    elif field == "seq":
        target["seq"] += 100
    else:
        target[field] = "f" * 64
    save(path, records)
    report = verify(path)
    assert not report.ok
    first = report.problems[0]
    assert first.line == 6, report.problems


def test_edit_and_rehash_is_caught_by_the_next_link(tmp_path: Path) -> None:
    from agentmesh.audit.chain import record_hash

    path = write_log(tmp_path)
    records = lines(path)
    records[2]["event"]["code"] = "allowed"  # turn a denial into an allow
    records[2]["hash"] = record_hash(records[2]["seq"], records[2]["prev"], records[2]["event"])
    save(path, records)
    report = verify(path)
    assert [(p.kind, p.line) for p in report.problems] == [("unlinked", 4)]


def test_rewriting_the_whole_chain_is_caught_by_signed_checkpoints(tmp_path: Path) -> None:
    from agentmesh.audit.chain import GENESIS, record_hash

    path = write_log(tmp_path)
    records = lines(path)
    del records[1]
    prev = GENESIS
    for seq, record in enumerate(records, start=1):  # renumber and re-hash everything
        record["seq"], record["prev"] = seq, prev
        record["hash"] = prev = record_hash(seq, prev, record["event"])
    save(path, records)
    report = verify(path)
    assert [p.kind for p in report.problems] == ["checkpoint_mismatch", "checkpoint_mismatch"]
    assert verify_log(path).ok  # without checkpoints the rewrite is invisible: keep them


@pytest.mark.parametrize(
    ("tamper", "kind", "line"),
    [
        ("remove", "removed", 5),
        ("insert", "duplicated", 7),
        ("swap", "reordered", 4),
        ("truncate", "truncated", 2),
        ("garbage", "malformed", 3),
    ],
)
def test_removed_inserted_reordered_truncated_malformed(
    tmp_path: Path, tamper: str, kind: str, line: int
) -> None:
    path = write_log(tmp_path)
    records = lines(path)
    if tamper == "remove":
        del records[4]
    elif tamper == "insert":
        records.insert(5, dict(records[5]))
    elif tamper == "swap":
        records[3], records[4] = records[4], records[3]
    elif tamper == "truncate":
        del records[7:]
    save(path, records)
    if tamper == "garbage":
        text = path.read_text().splitlines()
        text[2] = "{not json"
        path.write_text("\n".join(text) + "\n")
    report = verify(path)
    assert (kind, line) in {(p.kind, p.line) for p in report.problems}, report.problems


def test_forged_or_foreign_checkpoints_do_not_count(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    cp_path = checkpoint_path(path)
    original = [c for _, c in read_checkpoints(cp_path)]
    assert all(c is not None for c in original)
    first = original[0]
    assert first is not None
    forged = Checkpoint(first.node, first.seq, "0" * 64, first.at_ms, first.signature)
    mallory = AgentIdentity.generate()
    from agentmesh.audit.chain import ChainHead
    from agentmesh.audit.checkpoint import sign_checkpoint

    foreign = sign_checkpoint(mallory, ChainHead(first.seq, first.head), first.at_ms)
    cp_path.write_text("\n".join([forged.to_json(), foreign.to_json(), "{}"]) + "\n")
    report = verify(path)
    assert [p.kind for p in report.problems] == ["bad_checkpoint"] * 3
    assert "bad signature" in report.problems[0].message
    assert "not from" in report.problems[1].message


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    index=st.integers(0, 9),
    field=st.sampled_from(EVENT_FIELDS),
    noise=st.text(min_size=1, max_size=5),
)
def test_any_single_edit_is_detected(tmp_path: Path, index: int, field: str, noise: str) -> None:
    path = write_log(tmp_path)
    records = lines(path)
    old = records[index]["event"][field]
    new: Any = (old + len(noise)) if isinstance(old, int) else f"{old}{noise}"
    records[index]["event"][field] = new
    save(path, records)
    report = verify(path)
    assert not report.ok
    assert report.problems[0].line == index + 1
    path.unlink()
    checkpoint_path(path).unlink()


@given(i=st.integers(0, 10**6), detail=st.text(max_size=40), peer=st.none() | st.text(max_size=10))
def test_fast_encoding_is_the_canonical_one(i: int, detail: str, peer: str | None) -> None:
    from dataclasses import replace

    from agentmesh.audit.chain import ChainedRecord, encode_record

    ev = replace(event(i), detail=detail, peer=peer)
    record = ChainedRecord.create(i + 1, "ab" * 32, ev)
    assert encode_record(i + 1, "ab" * 32, ev) == (record.hash, record.to_line())
