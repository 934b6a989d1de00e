"""Group commit: deferred records wait in memory, refusals do not, nothing is lost on close,
a crash loses at most the stated bound, and what is on disk always verifies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmesh.audit import (
    AuditEvent,
    ChainedAuditLog,
    CheckpointSigner,
    GroupCommit,
    checkpoint_path,
    read_checkpoints,
    read_jsonl_audit,
    verify_log,
)
from agentmesh.audit.chain import GENESIS, record_hash
from agentmesh.policy import (
    CompiledPolicy,
    Governor,
    PolicyDenied,
    PolicyEngine,
    acting_as,
    governed,
)
from iatp.clock import ManualClock
from iatp.identity import AgentIdentity

NODE = AgentIdentity.from_seed(bytes(range(32)))
ROOT = Path(__file__).resolve().parents[3]


def event(i: int, kind: str = "policy_allowed") -> AuditEvent:
    return AuditEvent(
        at_ms=1_700_000_000_000 + i,
        node=NODE.did,
        kind=kind,
        code="allowed" if kind == "policy_allowed" else "policy_denied",
        peer=f"did:key:z6Mkpeer{i}",
        subject="tool.search",
        detail=f"tool outbound ring=2 rule=r: call {i} — ünïcode",
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def verify(path: Path) -> Any:
    return verify_log(path, read_checkpoints(checkpoint_path(path)), node=NODE.did)


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


@pytest.mark.parametrize(
    "options",
    [{"max_records": 0}, {"max_records": -3}, {"max_records": 2.5}, {"max_delay": 0.0}],
)
def test_a_bad_group_commit_is_a_clear_error(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"max_records|max_delay"):
        GroupCommit(**options)


def test_deferred_records_wait_and_an_orderly_close_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = ChainedAuditLog(path, group_commit=GroupCommit(max_records=100, max_delay=3600))
    for i in range(10):
        log.append(event(i))
    assert (log.pending, log.head.seq, path.read_text()) == (10, 0, "")
    log.close()
    log.close()  # idempotent
    assert [e.at_ms for e in read_jsonl_audit(path)] == [event(i).at_ms for i in range(10)]
    assert verify(path).ok
    with pytest.raises(ValueError, match="closed"):
        log.append(event(10))


def test_a_refusal_commits_at_once_with_the_pending_records_before_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with ChainedAuditLog(path, group_commit=GroupCommit(max_records=100, max_delay=3600)) as log:
        for i in range(3):
            log.append(event(i))
        log.append(event(3, kind="policy_denied"))
        assert (log.pending, log.head.seq) == (0, 4)
        assert [r["event"]["kind"] for r in lines(path)] == ["policy_allowed"] * 3 + [
            "policy_denied"
        ]


def test_a_full_batch_commits_before_append_returns(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with ChainedAuditLog(path, group_commit=GroupCommit(max_records=4, max_delay=3600)) as log:
        for i in range(9):
            log.append(event(i))
            assert log.pending == (i + 1) % 4
        assert (log.head.seq, log.commits, len(lines(path))) == (8, 2, 8)


def test_a_quiet_batch_is_committed_by_the_background_thread(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with ChainedAuditLog(path, group_commit=GroupCommit(max_records=100, max_delay=0.02)) as log:
        log.append(event(0))
        wait_for(lambda: log.head.seq == 1)
        log.append(event(1))  # the committer went idle and is woken again
        wait_for(lambda: log.head.seq == 2)
        assert log.pending == 0
    assert verify(path).ok


def test_flush_on_demand_and_signed_checkpoints_cover_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    signer = CheckpointSigner(NODE, checkpoint_path(path), clock=ManualClock())
    log = ChainedAuditLog(
        path,
        on_head=signer,
        checkpoint_every=2,
        group_commit=GroupCommit(max_records=5, max_delay=3600),
    )
    for i in range(7):
        log.append(event(i))
    assert log.head.seq == 5
    log.flush()
    log.flush()  # nothing pending: no empty commit
    assert (log.head.seq, log.commits) == (7, 2)
    log.close()
    signer.close()
    heads = [c.seq for _, c in read_checkpoints(checkpoint_path(path)) if c is not None]
    assert heads == [5, 7]
    report = verify(path)
    assert report.ok, report.problems
    assert (report.records, report.checkpoints) == (7, 2)


@pytest.mark.parametrize("tamper", ["edit", "edit-and-rehash", "remove", "swap", "truncate"])
def test_tampering_with_a_record_of_a_flushed_batch_is_detected(
    tmp_path: Path, tamper: str
) -> None:
    path = tmp_path / "audit.jsonl"
    signer = CheckpointSigner(NODE, checkpoint_path(path), clock=ManualClock())
    with ChainedAuditLog(
        path,
        on_head=signer,
        checkpoint_every=8,
        group_commit=GroupCommit(max_records=8, max_delay=3600),
    ) as log:
        for i in range(16):
            log.append(event(i))
    signer.close()
    assert verify(path).ok
    records = lines(path)
    target = records[10]  # in the middle of the second batch
    if tamper == "edit":
        target["event"]["code"] = "policy_denied"
    elif tamper == "edit-and-rehash":
        target["event"]["peer"] = "did:key:z6MkSomeoneElse"
        target["hash"] = record_hash(target["seq"], target["prev"], target["event"])
    elif tamper == "remove":
        del records[10]
    elif tamper == "swap":
        records[10], records[11] = records[11], records[10]
    else:
        del records[12:]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    report = verify(path)
    assert not report.ok
    assert min(p.seq or 0 for p in report.problems) >= 11 or tamper == "swap", report.problems


def test_reopening_after_a_torn_write_cuts_the_fragment_and_continues(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with ChainedAuditLog(path, group_commit=GroupCommit(max_records=3, max_delay=3600)) as log:
        for i in range(6):
            log.append(event(i))
    whole = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(b'{"event":{"at_ms":17000')  # what a crash mid-write leaves
    assert not verify(path).ok
    with ChainedAuditLog(path) as log:
        assert log.head.seq == 6
        assert path.read_bytes() == whole
        log.append(event(6, kind="policy_denied"))
    report = verify(path)
    assert report.ok, report.problems
    assert report.last_seq == 7


def test_threads_calling_governed_tools_at_once_keep_one_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = ChainedAuditLog(path, group_commit=GroupCommit(max_records=16, max_delay=0.001))
    policy = CompiledPolicy.from_data(
        {
            "version": 1,
            "name": "threads",
            "rules": [
                {
                    "id": "small",
                    "effect": "allow",
                    "match": {"actions": ["tool.search"]},
                    "when": {"args.n": {"lt": 10_000}},
                },
            ],
        }
    )
    governor = Governor(PolicyEngine(policy), audit=log, node=NODE.did)

    @governed(governor, "tool.search")
    def search(n: int) -> int:
        return n

    threads_count, calls = 6, 300
    errors: list[BaseException] = []
    start = threading.Barrier(threads_count)

    def worker(t: int) -> None:
        try:
            start.wait()
            with acting_as(f"did:key:z6MkThread{t}"):
                for n in range(calls):
                    search(n)
                    if n % 50 == 0:
                        log.flush()
                with pytest.raises(PolicyDenied):
                    search(10_000 + t)  # a refusal, committed synchronously mid-stream
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads_count)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    log.close()
    assert not errors
    report = verify(path)
    assert report.ok, report.problems[:3]
    events = read_jsonl_audit(path)
    assert report.records == len(events) == threads_count * (calls + 1)
    for t in range(threads_count):
        mine = [e.kind for e in events if e.peer == f"did:key:z6MkThread{t}"]
        assert mine == ["policy_allowed"] * calls + ["policy_denied"]


Step = tuple[str, int]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("allowed"), st.integers(0, 10**6)),
            st.tuples(st.just("denied"), st.integers(0, 10**6)),
            st.tuples(st.just("flush"), st.just(0)),
        ),
        max_size=40,
    ),
    max_records=st.integers(1, 5),
    reopen_at=st.integers(0, 40),
)
def test_any_interleaving_of_appends_and_flushes_yields_every_record_in_order(
    tmp_path: Path, steps: list[Step], max_records: int, reopen_at: int
) -> None:
    path = tmp_path / f"audit-{time.monotonic_ns()}.jsonl"
    group = GroupCommit(max_records=max_records, max_delay=3600)
    log = ChainedAuditLog(path, group_commit=group)
    appended: list[AuditEvent] = []
    for index, (op, value) in enumerate(steps):
        if index == reopen_at:  # a close and a reopen in the middle changes nothing
            log.close()
            log = ChainedAuditLog(path, group_commit=group)
        if op == "flush":
            log.flush()
            assert log.pending == 0
            continue
        item = event(value, kind=f"policy_{op}")
        log.append(item)
        appended.append(item)
        assert log.pending < max_records
        assert log.head.seq + log.pending == len(appended)
    log.close()
    report = verify_log(path)
    assert report.ok, report.problems
    assert read_jsonl_audit(path) == appended
    assert report.head == (lines(path)[-1]["hash"] if appended else GENESIS)


CHILD = textwrap.dedent(
    """
    import sys, time
    from agentmesh.audit import AuditEvent
    from agentmesh.audit import ChainedAuditLog, CheckpointSigner, GroupCommit, checkpoint_path
    from iatp.identity import AgentIdentity

    path, mode = sys.argv[1], sys.argv[2]
    max_records, max_delay = int(sys.argv[3]), float(sys.argv[4])
    node = AgentIdentity.from_seed(bytes(range(32)))
    signer = CheckpointSigner(node, checkpoint_path(path))
    log = ChainedAuditLog(path, on_head=signer, checkpoint_every=7,
                          group_commit=GroupCommit(max_records=max_records, max_delay=max_delay))

    def event(i, kind="policy_allowed"):
        return AuditEvent(i, node.did, kind, "c", subject="tool", detail=str(i))

    if mode == "script":  # 13 allowed, 1 denied, 20 allowed, then stop and wait to be killed
        for i in range(13):
            log.append(event(i))
        log.append(event(13, "policy_denied"))
        for i in range(14, 34):
            log.append(event(i))
        print("ready", flush=True)
    elif mode == "quiet":  # a few records, then quiet: the time bound commits them
        for i in range(5):
            log.append(event(i))
        time.sleep(40 * max_delay)
        print("ready", flush=True)
    else:  # append as fast as possible, reporting how many appends returned
        i = 0
        while True:
            log.append(event(i))
            i += 1
            if i % 97 == 0:
                print(i, flush=True)
    time.sleep(3600)
    """
)


def run_child(path: Path, mode: str, max_records: int, max_delay: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), mode, str(max_records), str(max_delay)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert child.stdout is not None
    child.stdout.close()


def test_sigkill_loses_only_the_uncommitted_deferred_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    child = run_child(path, "script", max_records=8, max_delay=3600)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    kill(child)
    report = verify(path)
    assert report.ok, report.problems
    at = [e.at_ms for e in read_jsonl_audit(path)]
    # 0..12 and the refusal 13 committed together; then 14..21 and 22..29 as full batches.
    assert at == list(range(30))
    lost = 34 - len(at)
    assert 0 < lost < 8  # at most max_records - 1 deferred records, never the refusal
    assert report.checkpoints >= 1


def test_sigkill_after_a_quiet_max_delay_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    child = run_child(path, "quiet", max_records=100, max_delay=0.05)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    kill(child)
    assert [e.at_ms for e in read_jsonl_audit(path)] == list(range(5))
    assert verify(path).ok


def test_sigkill_mid_stream_loses_at_most_the_bound_and_the_rest_verifies(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    max_records = 64
    child = run_child(path, "stream", max_records=max_records, max_delay=0.005)
    assert child.stdout is not None
    returned = 0
    while returned < 5000:
        returned = int(child.stdout.readline())
    kill(child)
    with ChainedAuditLog(path):  # reopening cuts off a write torn by the kill, if any
        pass
    report = verify(path)
    assert report.ok, report.problems[:3]
    at = [e.at_ms for e in read_jsonl_audit(path)]
    assert at == list(range(len(at)))  # a prefix of what was appended, in order
    assert len(at) >= returned - (max_records - 1)


def test_a_failed_write_keeps_the_records_pending_and_raises(tmp_path: Path) -> None:
    full = Path("/dev/full")  # every write fails with ENOSPC
    if not full.exists():  # pragma: no cover - Linux has it
        pytest.skip("no /dev/full")
    log = ChainedAuditLog(full, group_commit=GroupCommit(max_records=100, max_delay=3600))
    for i in range(3):
        log.append(event(i))
    with pytest.raises(OSError, match="No space"):
        log.flush()
    assert (log.pending, log.head.seq) == (3, 0)
    with pytest.raises(OSError, match="No space"):
        log.append(event(3, kind="policy_denied"))  # a refusal reports the failure at once
    assert (log.pending, log.head.seq) == (4, 0)
    with pytest.raises(OSError, match="No space"):
        log.close()
    with pytest.raises(ValueError, match="closed"):  # the file is closed all the same
        log.append(event(4))
