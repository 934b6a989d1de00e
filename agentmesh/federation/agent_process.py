"""A federated agent as a process, for the federation example and the cross-process tests.

    FED_SEED=<64 hex> python -m agentmesh.federation.agent_process \\
        --nats URL --mesh acme --jwt alice.jwt --organization DID [--membership FILE] \\
        [--capability quote] [--serve quote.request] [--actions payment.charge,payment.refund] \\
        [--fail payment.charge] [--slow payment.charge=1.5] [--coordinator]

It joins its organization's secured mesh (card in the directory, admission,
revocations), installs :class:`~agentmesh.federation.runtime.NodeFederation`
(guard, routes to partner agents, ring cap, discounted trust), answers the
``--serve`` message types (``{org}:{body}``) and the ``--actions`` saga steps,
and follows commands, one JSON object per stdin line, answering one per stdout
line (events too: ``ready``, ``action``)::

    {"cmd": "request", "to": DID, "type": T, "body": "...", "timeout": 3}
    {"cmd": "find", "capability": C}          {"cmd": "explain", "did": DID}
    {"cmd": "blocked", "did": DID}            {"cmd": "stats"}
    {"cmd": "wait_card", "did": DID, "within": 10}
    {"cmd": "saga", "definition": {...}, "saga_id": ID}    (with --coordinator)
    {"cmd": "quit"}
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agentmesh.broker.authority import read_jwt
from agentmesh.broker.credentials import BrokerCredentials
from agentmesh.directory.membership import DirectoryMembership
from agentmesh.federation.runtime import NodeFederation
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.node.runner import AnyOf
from agentmesh.saga.adapters import RevocationAlarm
from agentmesh.saga.coordinator import SagaCoordinator
from agentmesh.saga.definition import SagaDefinition
from agentmesh.saga.errors import StepActionFailed
from agentmesh.saga.executor import Action, StepCall, StepExecutor
from agentmesh.saga.guard import EligibilityGuard
from agentmesh.saga.log import SagaLog
from agentmesh.transport.nats import NatsTransport
from iatp.errors import AgentMeshError
from iatp.identity import AgentIdentity
from registry.card import parse_capability

Command = Callable[..., Awaitable[dict[str, Any]]]


def say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


class FederatedAgent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.identity = AgentIdentity.from_seed(bytes.fromhex(os.environ["FED_SEED"]))
        credentials = BrokerCredentials(self.identity, read_jwt(args.jwt))
        self.transport = NatsTransport(
            args.nats, name=f"{args.mesh}-agent", config=credentials.nats_config()
        )
        self.node = MeshNode(self.identity, self.transport, config=NodeConfig(mesh=args.mesh))
        self.membership = DirectoryMembership(
            self.identity,
            self.transport,
            mesh=args.mesh,
            capabilities=tuple(parse_capability(c) for c in args.capability),
            authorities=(args.organization,),
        )
        token = Path(args.membership).read_text().strip() if args.membership else None
        self.federation = NodeFederation(
            self.transport,
            self.identity,
            mesh=args.mesh,
            organization=args.organization,
            membership=token,
            org_trust=dict(_pair(p) for p in args.org_trust),
        )
        self.coordinator: SagaCoordinator | None = None
        self.slow = dict(_pair(s) for s in args.slow)

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        await self.transport.connect(timeout=5.0)
        stack.push_async_callback(self.transport.aclose)
        await stack.enter_async_context(self.membership)
        self.federation.directory = self.membership.directory
        await stack.enter_async_context(self.federation)
        self.federation.install(self.node)
        self.membership.install(
            self.node, admitted=AnyOf(frozenset({self.args.organization}), self.federation.view)
        )
        for message_type in self.args.serve:
            self.node.handle(message_type, self._serve)
        if self.args.actions:
            actions = {a: self._action(a) for a in self.args.actions.split(",")}
            await StepExecutor.attach(self.node, actions=actions)
        await stack.enter_async_context(self.node)
        if self.args.coordinator:
            self.coordinator = SagaCoordinator(
                self.node,
                await SagaLog.open(self.transport, mesh=self.args.mesh),
                finder=self.federation,
                guard=EligibilityGuard(
                    blocked=[self.membership.revocations, self.federation],
                    rings=self.federation.rings,
                ),
                alarms=[self.federation, RevocationAlarm(self.membership.revocations)],
            )

    async def _serve(self, message: InboundMessage) -> bytes:
        return f"{self.args.mesh}:".encode() + message.body

    def _action(self, name: str) -> Action:
        async def run(call: StepCall) -> dict[str, Any]:
            say(event="action", action=name, saga=call.saga_id, kind=call.kind.value)
            await asyncio.sleep(self.slow.get(name, 0.0))
            if name in self.args.fail:
                raise StepActionFailed(f"{name} declined", reason_code="declined")
            return {"by": self.args.mesh, "agent": self.node.did, "action": name}

        return run

    # -- commands -------------------------------------------------------------------

    async def cmd_request(
        self, to: str, type: str, body: str = "", timeout: float = 3.0, sealed: bool = False
    ) -> dict[str, Any]:
        try:
            reply = await self.node.request(to, type, body.encode(), timeout=timeout, sealed=sealed)
        except AgentMeshError as exc:
            code = getattr(exc, "remote_code", None) or getattr(exc, "denial_code", None)
            return {"ok": False, "error": code or exc.code, "detail": str(exc)}
        return {"ok": True, "body": reply.body.decode(errors="replace")}

    async def cmd_find(self, capability: str) -> dict[str, Any]:
        return {"dids": [card.did for card in self.federation.find(capability)]}

    async def cmd_explain(self, did: str) -> dict[str, Any]:
        explained = self.federation.explain(did)
        if explained is None:
            return {"explain": None}
        return {
            "explain": {
                "organization": explained.organization,
                "local": explained.local,
                "org_trust": explained.org_trust,
                "score": explained.score,
            }
        }

    async def cmd_blocked(self, did: str) -> dict[str, Any]:
        return {"blocked": self.federation.view.is_blocked(did)}

    async def cmd_wait_card(self, did: str, within: float = 10.0) -> dict[str, Any]:
        seen = asyncio.Event()

        def check() -> None:
            if self.federation.view.partner_agent(did) is not None:
                seen.set()

        self.federation.view.add_listener(check)
        check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.wait(), within)
        return {"seen": seen.is_set()}

    async def cmd_stats(self) -> dict[str, Any]:
        return {
            "counters": self.node.counters.snapshot(),
            "refused": dict(self.federation.view.refused),
            "partners": [p.theirs.org for p in self.federation.view.partnerships()],
        }

    async def cmd_saga(self, definition: dict[str, Any], saga_id: str) -> dict[str, Any]:
        if self.coordinator is None:
            raise ValueError("start with --coordinator to run sagas")
        state = await self.coordinator.run(SagaDefinition.load(definition), saga_id=saga_id)
        undone = {e.step: e.compensation.value for e in state.executions}
        return {
            "status": state.status.value,
            "steps": {
                name: {
                    "status": view.status.value,
                    "agent": view.agent,
                    "tried": view.tried,
                    "compensation": undone.get(name, "-"),
                }
                for name, view in state.steps.items()
            },
        }


def _pair(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    return name, float(value)


async def serve(args: argparse.Namespace) -> None:
    agent = FederatedAgent(args)
    async with contextlib.AsyncExitStack() as stack:
        await agent.start(stack)
        say(event="ready", did=agent.node.did, mesh=args.mesh)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            request = json.loads(line)
            name = request.pop("cmd")
            if name == "quit":
                break
            command: Command | None = getattr(agent, f"cmd_{name}", None)
            try:
                if command is None:
                    raise ValueError(f"unknown command {name!r}")
                say(event="answer", **await command(**request))
            except (AgentMeshError, ValueError, TypeError) as exc:
                say(event="answer", error=type(exc).__name__, detail=str(exc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentmesh.federation.agent_process")
    parser.add_argument("--nats", required=True)
    parser.add_argument("--mesh", required=True)
    parser.add_argument("--jwt", required=True)
    parser.add_argument("--organization", required=True)
    parser.add_argument("--membership")
    parser.add_argument("--capability", action="append", default=[])
    parser.add_argument("--serve", action="append", default=[])
    parser.add_argument("--actions", default="")
    parser.add_argument("--fail", action="append", default=[])
    parser.add_argument("--slow", action="append", default=[], metavar="ACTION=SECONDS")
    parser.add_argument("--org-trust", action="append", default=[], metavar="ORG=TRUST")
    parser.add_argument("--coordinator", action="store_true")
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
