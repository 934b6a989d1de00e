"""Scale-out: one identity served by k member processes (docs/scaleout.md), vs k x one.

The case starts its own ``nats-server`` (loopback, no JetStream) and four processes
(``python -m benchmarks.scaleout_peer ROLE``): a raw nats-py sender, two members
of identity A (``--partition 0/2`` and ``1/2``) and the single process of identity
B. Every node verifies signatures on its event loop (one thread per process:
the question is how throughput grows with processes, not threads).

* **subject**: the sender publishes distinct pre-sealed envelopes (256 B body) to
  A, each to the member that owns its id (the sender knows the count: no
  forwarding); messages/s from the first handled (on any member) to the last.
* **floor**: k = 2 times the throughput of B's single process, measured in the
  same run with the same sender and envelope sizes (the runner reports half of
  B's elapsed time), so the ratio is ``throughput(2) / (2 x throughput(1))``.

On a 2-core machine the sender and the server share the cores with the members,
so the ratio is a lower bound of what k members on k free cores give.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from agentmesh.node.addressing import MeshAddressing
from benchmarks.bench_mesh import ROOT, PeerProcess, _server
from benchmarks.harness import Benchmark, Pair, RunConfig, at_least

BENCHMARK = Benchmark(
    name="scaleout",
    title="One identity served by k member processes vs k x one process",
    description=(
        "One `nats-server` (loopback, no JetStream) and four processes started by the case: "
        "a raw nats-py sender, two members of identity A (`--partition 0/2`, `1/2`) and one "
        "process of identity B; every node verifies signatures on its event loop (one thread "
        "per process). "
        "Distinct pre-sealed envelopes (256 B body) go from the sender to A, each to the "
        "member that owns its id, or to B; messages/s from the first to the last handled. "
        "The floor is 2 x B's single-process throughput in the same run, so the ratio is "
        "throughput(k=2) ÷ (2 x throughput(k=1)). The sender and the server share the "
        "machine's cores with the members."
    ),
)

MESH = "scaleout"
K = 2


class MemberProcess(PeerProcess):
    """A ``python -m benchmarks.scaleout_peer ROLE`` child (PeerProcess's protocol)."""

    def __init__(self, role: str, url: str, *extra: str) -> None:  # replaces PeerProcess's
        self.role = role
        self.info: dict[str, Any] = {}
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.scaleout_peer",
                role,
                "--url",
                url,
                "--mesh",
                MESH,
                *extra,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._pump, name=f"scaleout-{role}", daemon=True).start()


def _start(stack: contextlib.ExitStack, url: str, *extra: str, role: str) -> MemberProcess:
    peer = MemberProcess(role, url, *extra)
    stack.callback(peer.close)
    return peer


@BENCHMARK.throughput(
    "k=2 members of one identity",
    subject="a raw nats-py sender process publishes distinct pre-sealed envelopes (256 B body) "
    "to identity A, each to its owner among 2 member processes (one thread each); "
    "messages/s from the first to the last handled",
    floor="2 x the throughput of identity B's single process (one thread), same "
    "sender, same sizes, same run",
    goal=at_least(0.8),
    ops=12_000,
    quick_ops=2_000,
)
def two_members(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        url = _server(stack)
        seed_a, seed_b = os.urandom(32), os.urandom(32)
        peers = [
            *(
                _start(stack, url, "--seed", seed_a.hex(), f"--partition={i}/{K}", role="member")
                for i in range(K)
            ),
            _start(stack, url, "--seed", seed_b.hex(), role="member"),
            _start(stack, url, role="sender"),
        ]
        for peer in peers:
            peer.wait_ready()
        *members, single, sender = peers
        did_a, did_b = members[0].info["did"], single.info["did"]
        inbox_a, inbox_b = MeshAddressing(MESH).inbox(did_a), MeshAddressing(MESH).inbox(did_b)

        def deliver(targets: list[MemberProcess], to: str, inbox: str, n: int) -> float:
            sealed = sender.call("seal", n=n, to=to, count=len(targets), timeout=60 + n / 100)
            for target, share in zip(targets, sealed["per_partition"], strict=True):
                target.call("expect", n=share)
            sender.call("blast", inbox=inbox, timeout=60 + n / 1000)
            got = [target.call("wait", timeout=30 + n / 500) for target in targets]
            handled = sum(int(g["count"]) for g in got)
            if handled != n:
                raise RuntimeError(f"{handled} of {n} messages handled: {got}")
            firsts = [float(g["first"]) for g in got if g["count"]]
            return max(float(g["last"]) for g in got) - min(firsts)

        def subject(n: int) -> float:
            return deliver(members, did_a, inbox_a, n)

        def floor(n: int) -> float:
            return deliver([single], did_b, inbox_b, n) / K  # K processes' worth

        yield Pair(subject, floor)
