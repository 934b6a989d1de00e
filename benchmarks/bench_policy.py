"""Governance: policy decision latency vs an empty call, audit appends per second.

From the policy issue: decision latency p50 / p99 with 10, 100 and 1,000 rules,
side by side with an empty function call in the same run (goal: p99 <= 10 us
with 100 rules); the full governor path (ring + policy + rate limit); a
``governed()`` tool call against the plain call; and audit appends per second,
hash-chained with and without checkpoint signing, against a plain JSON-lines sink.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from time import perf_counter, perf_counter_ns
from typing import Any

from agentmesh.audit import AuditEvent, JsonlAuditSink
from agentmesh.auditlog import ChainedAuditLog, CheckpointSigner, checkpoint_path
from agentmesh.policy import (
    CompiledPolicy,
    DecisionRequest,
    Governor,
    PolicyEngine,
    RateLimit,
    RateLimiter,
    RingEnforcer,
    StaticRings,
    acting_as,
    governed,
)
from benchmarks.harness import Benchmark, Pair, RunConfig, within
from iatp.identity import AgentIdentity

BENCHMARK = Benchmark(
    name="policy",
    title="Governance: policy decisions vs an empty call; audit appends",
    description=(
        "Single thread. Policies are generated: one rule per tool action (`tool.{i}`) with "
        "a condition on `args.amount` and a ring list, plus one glob rule (`tool.{k}*`, "
        "deny when `args.flag` is true) per ten rules; requests cycle over 64 actions "
        "that exist in the policy. The floor is a Python call of an empty function with "
        "the same argument, timed the same way (`perf_counter_ns` around each call), so "
        "the ratio is how many empty calls one decision costs. Goal from the issue: "
        "p99 <= 10 us with 100 rules (absolute)."
    ),
)

AGENT = "did:key:z6MkBenchAgent"
ACTIONS = 64


def make_policy(rules: int) -> CompiledPolicy:
    body: list[dict[str, Any]] = []
    for i in range(rules):
        body.append(
            {
                "id": f"allow-{i}",
                "effect": "allow",
                "match": {"actions": [f"tool.{i}"], "rings": [1, 2]},
                "when": {"args.amount": {"lt": 1000}},
            }
        )
        if i % 10 == 0:
            body.append(
                {
                    "id": f"deny-flag-{i}",
                    "effect": "deny",
                    "match": {"actions": [f"tool.{i // 10}*"]},
                    "when": {"args.flag": {"eq": True}},
                }
            )
    return CompiledPolicy.from_data({"version": 1, "name": f"bench-{rules}", "rules": body})


def _requests(rules: int) -> list[DecisionRequest]:
    rng = random.Random(rules)
    return [
        DecisionRequest(
            f"tool.{rng.randrange(rules)}",
            kind="tool",
            direction="outbound",
            peer=AGENT,
            ring=2,
            args={"amount": rng.randrange(2000), "flag": rng.random() < 0.1},
        )
        for _ in range(ACTIONS)
    ]


def _empty(request: object) -> None:
    return None


def _timed(call: Callable[[Any], object], inputs: Sequence[Any]) -> Callable[[int], list[float]]:
    def run(n: int) -> list[float]:
        samples = []
        count = len(inputs)
        for i in range(n):
            item = inputs[i % count]
            start = perf_counter_ns()
            call(item)
            samples.append((perf_counter_ns() - start) * 1e-9)
        return samples

    return run


def _decision_case(rules: int) -> Callable[[RunConfig], Pair]:
    def factory(config: RunConfig) -> Pair:
        engine = PolicyEngine(make_policy(rules))
        requests = _requests(rules)
        assert any(engine.decide(r).allowed for r in requests)
        return Pair(_timed(engine.decide, requests), _timed(_empty, requests))

    return factory


for _rules in (10, 100, 1000):
    BENCHMARK.latency(
        f"decision, {_rules} rules",
        subject=f"`PolicyEngine.decide(request)`, {_rules} rules (+{_rules // 10} glob rules)",
        floor="an empty Python function call with the request",
        goal=within(10e-6, metric="p99") if _rules == 100 else None,
    )(_decision_case(_rules))


def _governor(rules: int) -> Governor:
    return Governor(
        PolicyEngine(make_policy(rules)),
        rings=RingEnforcer([StaticRings({AGENT: 2})], {2: ["tool.*"]}),
        limiter=RateLimiter([RateLimit(("tool.*",), rate=1e12, burst=10**9)]),
        audit=None,
        audit_allows=False,
    )


@BENCHMARK.latency(
    "governor, 100 rules",
    subject="`Governor.authorize(request)`: quarantine + ring capability + policy + rate limit",
    floor="an empty Python function call with the request",
)
def governor_case(config: RunConfig) -> Pair:
    governor = _governor(100)
    requests = [r for r in _requests(100) if r.args["amount"] < 1000 and not r.args["flag"]]
    return Pair(_timed(governor.authorize, requests), _timed(_empty, requests))


@BENCHMARK.latency(
    "governed tool call, 100 rules",
    subject="a `@governed(...)` function called inside `acting_as(did)` (bind args + governor)",
    floor="the same undecorated function",
)
def governed_case(config: RunConfig) -> Iterator[Pair]:
    governor = _governor(100)

    def tool(amount: int, flag: bool = False) -> int:
        return amount

    wrapped = governed(governor, "tool.7")(tool)
    amounts = list(range(0, 900, 7))
    with acting_as(AGENT):
        yield Pair(_timed(wrapped, amounts), _timed(tool, amounts))


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        at_ms=1_700_000_000_000 + i,
        node=AGENT,
        kind="policy_denied",
        code="policy_denied",
        peer="did:key:z6MkPeer",
        envelope_id=f"{i:032x}",
        subject="payments.transfer",
        detail="payments.transfer: rule 'big-pay': deny [ring=2]",
    )


def _audit_case(checkpoint_every: int) -> Callable[[RunConfig], Iterator[Pair]]:
    def factory(config: RunConfig) -> Iterator[Pair]:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "chain.jsonl")
            signer = CheckpointSigner(AgentIdentity.from_seed(bytes(32)), checkpoint_path(path))
            chain = ChainedAuditLog(
                path,
                on_head=signer if checkpoint_every else None,
                checkpoint_every=checkpoint_every,
            )
            plain = JsonlAuditSink(os.path.join(tmp, "plain.jsonl"))
            events = [_event(i) for i in range(1024)]

            def appender(sink: Any) -> Callable[[int], float]:
                def run(n: int) -> float:
                    start = perf_counter()
                    for i in range(n):
                        sink.append(events[i & 1023])
                    return perf_counter() - start

                return run

            try:
                yield Pair(appender(chain), appender(plain))
            finally:
                chain.close()
                plain.close()
                signer.close()

    return factory


BENCHMARK.throughput(
    "audit append, chained",
    subject="`ChainedAuditLog.append(event)` (SHA-256 chain over every field, file append)",
    floor="`JsonlAuditSink.append(event)` (plain JSON line, same file I/O)",
)(_audit_case(0))
BENCHMARK.throughput(
    "audit append, chained + checkpoint every 100",
    subject="the same, plus an Ed25519-signed checkpoint every 100 records",
    floor="`JsonlAuditSink.append(event)` (plain JSON line, same file I/O)",
)(_audit_case(100))
