"""Saga coordinator and agent processes, for chaos tests, benchmarks and examples.

    python -m agentmesh.saga.process agent --nats URL --mesh M --name bank \\
        --actions charge,refund [--delay 0.02] [--effects FILE]
    python -m agentmesh.saga.process coordinator --nats URL --mesh M \\
        --directory '{"payment": ["did:key:..."]}' [--submit 10 --prefix t1 --fail-every 3] \\
        [--crash-after-appends K] [--lease-ttl 1.0] [--exit-when-idle]

The identity seed comes from ``$SAGA_SEED`` (64 hex chars), never from the command
line. Both print one JSON object per line on stdout (``ready``, ``action``,
``idle``). An agent appends each action it really runs to ``--effects`` (fsynced
before it replies), so a test can prove that nothing ran twice even when
processes are killed with SIGKILL. ``--crash-after-appends K`` makes the
coordinator SIGKILL itself right after its K-th durable record.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import signal
import sys
from typing import Any

from agentmesh.directory.revocations import RevocationList
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.saga.adapters import RevocationAlarm
from agentmesh.saga.coordinator import CoordinatorConfig, SagaCoordinator
from agentmesh.saga.definition import SagaDefinition
from agentmesh.saga.errors import StepActionFailed
from agentmesh.saga.executor import Action, StepCall, StepExecutor
from agentmesh.saga.guard import EligibilityGuard, InFlightAlarm, StaticDirectory
from agentmesh.saga.log import SagaLog
from agentmesh.saga.records import SagaRecord
from agentmesh.saga.wire import ReplyStatus, StepKind, StepReplyBody, encode_reply
from agentmesh.transport.factory import make_transport
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities

PLAIN_TYPE = "saga.bench.plain"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def order_definition(index: int, *, fail_every: int, timeout_s: float = 1.0) -> SagaDefinition:
    """reserve -> charge -> ship; every ``fail_every``-th saga's shipping fails."""
    fails = fail_every > 0 and index % fail_every == 0

    def step(name: str, capability: str, action: str, undo: str | None) -> dict[str, Any]:
        return {
            "name": name,
            "capability": capability,
            "request": {"action": action, "params": {"order": index}},
            "compensation": {"action": undo} if undo else None,
            "timeout_s": timeout_s,
            "retry": {"max_attempts": 2, "backoff_s": 0.05},
        }

    return SagaDefinition.load(
        {
            "name": "order",
            "steps": [
                step("reserve", "inventory", "reserve", "release"),
                step("charge", "payment", "charge", "refund"),
                step("ship", "shipping", "ship_fail" if fails else "ship", None),
            ],
        }
    )


def _identity() -> AgentIdentity:
    seed = os.environ.get("SAGA_SEED")
    return AgentIdentity.from_seed(bytes.fromhex(seed)) if seed else AgentIdentity.generate()


def _dump_tasks() -> None:
    """SIGUSR1: print every task's stack to stderr (diagnosing a stuck replica)."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


def _forward_happened(path: str | None, agent: str, call: StepCall) -> bool:
    """Whether this agent's effects file shows the forward action of ``call``'s step."""
    if not path or not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            effect = json.loads(raw)
            if (effect.get("agent"), effect.get("saga"), effect.get("step")) == (
                agent,
                call.saga_id,
                call.step,
            ) and effect.get("kind") == StepKind.FORWARD.value:
                return True
    return False


def _open_effects(path: str | None) -> Any:
    return open(path, "a", encoding="utf-8") if path else None


async def run_agent(args: argparse.Namespace) -> None:
    node = MeshNode(
        _identity(), make_transport(args.nats, name=args.name), config=NodeConfig(mesh=args.mesh)
    )
    await node.start()
    effects = _open_effects(args.effects)

    def make(action: str) -> Action:
        async def run(call: StepCall) -> dict[str, Any]:
            if not args.quiet:
                emit("action", action=action, saga=call.saga_id, kind=call.kind.value)
            if args.delay:
                await asyncio.sleep(args.delay)
            if action.endswith("_fail"):
                raise StepActionFailed(f"{action} always fails", reason_code="declined")
            if (
                call.kind is StepKind.COMPENSATE
                and call.forward_state == "in_doubt"
                and not _forward_happened(args.effects, args.name, call)
            ):
                # The forward action was interrupted by a crash: undo only what happened.
                return {"by": args.name, "action": action, "noop": True}
            if effects is not None:
                line = {
                    "agent": args.name,
                    "action": action,
                    "saga": call.saga_id,
                    "step": call.step,
                    "kind": call.kind.value,
                }
                effects.write(json.dumps(line) + "\n")
                effects.flush()
                os.fsync(effects.fileno())
            return {"by": args.name, "action": action}

        return run

    await StepExecutor.attach(node, actions={a: make(a) for a in args.actions.split(",")})
    if args.plain:  # the benchmark's floor: the same action as a plain signed request

        async def plain(message: InboundMessage) -> bytes:
            return encode_reply(StepReplyBody(ReplyStatus.OK, {"by": args.name, "action": "plain"}))

        node.handle(PLAIN_TYPE, plain)
    emit("ready", did=node.did, name=args.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    await stop.wait()
    await node.aclose()


async def run_coordinator(args: argparse.Namespace) -> None:
    transport = make_transport(args.nats, name="coordinator")
    node = MeshNode(_identity(), transport, config=NodeConfig(mesh=args.mesh))
    await node.start()
    log = await SagaLog.open(node.transport, mesh=args.mesh)
    guard = None
    alarms: list[InFlightAlarm] = []
    revocations = None
    if args.revocation_authority:
        revocations = RevocationList(
            node.transport,
            mesh=args.mesh,
            authorities=RevocationAuthorities(mesh=frozenset({args.revocation_authority})),
        )
        await revocations.start()
        guard = EligibilityGuard(blocked=[revocations])
        alarms.append(RevocationAlarm(revocations))
    coordinator = SagaCoordinator(
        node,
        log,
        finder=StaticDirectory(json.loads(args.directory)),
        guard=guard,
        alarms=alarms,
        config=CoordinatorConfig(lease_ttl=args.lease_ttl, recovery_interval=0.2),
    )
    appended = 0

    def maybe_crash(record: SagaRecord) -> None:
        nonlocal appended
        appended += 1
        if args.crash_after_appends and appended >= args.crash_after_appends:
            os.kill(os.getpid(), signal.SIGKILL)

    coordinator.after_append = maybe_crash
    for index in range(args.submit):
        await coordinator.submit(
            order_definition(index, fail_every=args.fail_every, timeout_s=args.step_timeout),
            saga_id=f"{args.prefix}-{index}",
        )
    emit("ready", did=node.did)
    coordinator.serve()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    while not stop.is_set():
        await asyncio.sleep(0.2)
        if args.exit_when_idle and not coordinator.busy and not await log.unfinished():
            break
    emit("idle", counters=coordinator.counters.__dict__)
    await coordinator.aclose()
    if revocations is not None:
        await revocations.aclose()
    await node.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agentmesh.saga.process")
    parser.add_argument("role", choices=["agent", "coordinator"])
    parser.add_argument("--nats", required=True)
    parser.add_argument("--mesh", required=True)
    parser.add_argument("--name", default="agent")
    parser.add_argument("--actions", default="")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--effects")
    parser.add_argument("--plain", action="store_true", help="also answer plain requests")
    parser.add_argument("--quiet", action="store_true", help="no per-action events on stdout")
    parser.add_argument("--directory", default="{}")
    parser.add_argument("--submit", type=int, default=0)
    parser.add_argument("--prefix", default="saga")
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--step-timeout", type=float, default=1.0)
    parser.add_argument("--crash-after-appends", type=int, default=0)
    parser.add_argument("--lease-ttl", type=float, default=1.0)
    parser.add_argument("--exit-when-idle", action="store_true")
    parser.add_argument("--revocation-authority")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("SAGA_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    faulthandler.register(signal.SIGUSR2, all_threads=True)  # thread stacks, even if blocked
    runner = run_agent if args.role == "agent" else run_coordinator
    try:
        asyncio.run(runner(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
