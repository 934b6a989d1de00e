"""A host process of a simulation run across processes.

``python -m simulations.host --nats URL --spec FILE --mesh NAME --host N --hosts K``
holds the nodes of the agents with ``index % K == N`` (rebuilt from the scenario's
seed: the same DIDs in every process), each with its real interceptors, its own
revocation list and kill switch following the mesh's control subject, and its
own receipt ledger folded into its own trust engine (the rings its policy uses).
Requests between agents of different hosts cross process boundaries over NATS.

The driver (:mod:`simulations.distributed`) tells it what to do with **signed
commands**: a request from the host's control node (a DID derived from the seed
and the host number) addressed by the driver's authority DID. Anything not from
the authority is refused (``not_authority``). A provider's behaviour decides its
service from a generator seeded by the request itself, so a run does not depend
on which process serves what.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.transport.factory import make_transport
from iatp.identity import AgentIdentity
from simulations.behaviours import Flood, Forge, Probe
from simulations.driver import SimAgent, identity_for, populate
from simulations.mesh import MeshBackend
from simulations.spec import ScenarioSpec
from trust import Outcome

COMMAND = "sim.cmd"
HOST_INDEX_BASE = 1_000_000  # host control identities sit far above any agent index


def host_identity(seed: int, host: int) -> AgentIdentity:
    """The control node of host ``host`` (derived: the driver knows every host's DID)."""
    return identity_for(seed, HOST_INDEX_BASE + host, 0)


def hosted_by(agents: Sequence[SimAgent], host: int, hosts: int) -> list[int]:
    return [a.index for a in agents if a.index % hosts == host]


class Host:
    """The agents of one host process and the commands it takes (module docstring)."""

    def __init__(
        self, spec: ScenarioSpec, *, nats_url: str, mesh: str, host: int, hosts: int
    ) -> None:
        self.spec = spec
        self.nats_url = nats_url
        self.host = host
        self.agents = populate(spec)
        self.backend = MeshBackend(
            spec,
            self.agents,
            nats_url=nats_url,
            mesh=mesh,
            hosted=hosted_by(self.agents, host, hosts),
            hosts=hosts,
        )
        self.identity = host_identity(spec.seed, host)
        self.stopping = asyncio.Event()
        self.refused: Counter[str] = Counter()

    async def run(self) -> None:
        async with self.backend:
            transport = make_transport(self.nats_url, name=f"sim-host-{self.host}")
            await transport.connect()
            node = MeshNode(self.identity, transport, config=NodeConfig(mesh=self.backend.mesh))
            node.handle(COMMAND, self.command)
            await node.start()
            try:
                await self.stopping.wait()
            finally:
                await node.aclose()

    async def command(self, message: InboundMessage) -> bytes:
        if message.sender != self.backend.authority.did:
            self.refused["not_authority"] += 1
            return json.dumps({"error": "not_authority"}).encode()
        order: dict[str, Any] = json.loads(message.body)
        if "round" in order:
            self.backend.round_no = int(order["round"])
            self.backend.clock.set(int(order["now"]))
        result = await self.dispatch(str(order["op"]), order)
        return json.dumps(result).encode()

    async def dispatch(self, op: str, order: dict[str, Any]) -> dict[str, Any]:
        backend, agents = self.backend, self.agents
        if op == "tick":  # the round and the clock were set above
            return {}
        if op == "ping":
            return {"agents": sorted(backend.nodes), "position": backend.ledger_position}
        if op == "request":
            served = await backend.request(
                backend.round_no,
                agents[order["from"]],
                agents[order["to"]],
                tag=str(order["tag"]).encode(),
            )
            return {"serve": served.serve.value, "code": served.code}
        if op == "report":
            await backend.report(
                agents[order["from"]],
                agents[order["to"]],
                Outcome(order["outcome"]),
                interaction_id=str(order["id"]),
            )
            return {}
        if op == "probe":
            probe = Probe(str(order["tool"]), order.get("url"), float(order["cost"]))
            return {"codes": await backend.act(backend.round_no, agents[order["agent"]], probe)}
        if op == "flood":
            flood = Flood(int(order["target"]), int(order["count"]))
            return {"codes": await backend.act(backend.round_no, agents[order["agent"]], flood)}
        if op == "forge":
            forge = Forge(int(order["target"]), int(order["victim"]), bool(order["replay"]))
            await backend.send_forgery(agents[order["agent"]], forge)
            return {}
        if op == "rejected":
            node = backend.nodes.get(int(order["agent"]))
            return {"rejected": dict(node.counters.rejected) if node is not None else {}}
        if op == "whitewash":
            await self.whitewash(int(order["agent"]), int(order["generation"]))
            return {}
        if op == "crash":
            await backend.set_down(agents[order["agent"]], bool(order["down"]))
            return {}
        if op == "end_round":
            await backend.follow_round()
            return {"position": backend.ledger_position}
        if op == "stop":
            self.stopping.set()
            return {}
        return {"error": f"unknown op {op!r}"}

    async def whitewash(self, index: int, generation: int) -> None:
        """Every host learns the new DID; the owner restarts the agent's node under it."""
        agent = self.agents[index]
        agent.past_dids.append(agent.did)
        agent.generation = generation
        agent.identity = identity_for(self.spec.seed, index, generation)
        if index in self.backend.nodes:
            await self.backend.whitewash(agent)
        else:
            self.backend.keys[agent.did.removeprefix("did:key:")] = index


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.host",
        description="Hold one share of a simulation's agents (started by the driver).",
    )
    parser.add_argument("--nats", required=True, metavar="URL", help="the mesh's nats-server")
    parser.add_argument("--spec", required=True, type=Path, help="the scenario as JSON")
    parser.add_argument("--mesh", required=True, help="the run's mesh name")
    parser.add_argument("--host", required=True, type=int, help="this host's number")
    parser.add_argument("--hosts", required=True, type=int, help="how many hosts")
    args = parser.parse_args(argv)
    spec = ScenarioSpec.model_validate_json(args.spec.read_text(encoding="utf-8"))
    host = Host(spec, nats_url=args.nats, mesh=args.mesh, host=args.host, hosts=args.hosts)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, host.stopping.set)
        await host.run()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
