"""Mesh fidelity: every agent a real MeshNode, every interaction a signed envelope.

Each agent's node answers ``sim.serve`` by its behaviour, runs a real policy
interceptor (the scenario's policy: rate limits refuse floods, the governor
refuses quarantined senders) and sits behind a :class:`FaultyTransport`. The
requester judges the answer and publishes a **signed receipt** on the mesh's
receipt stream; fabricated endorsements are signed receipts too. One
:class:`ReceiptLedger` folds the stream (verifying every receipt) into the trust
engine all selections use (each node would fold the same stream into the same
engine state; one fold keeps 100 nodes cheap). When the engine's drift detector
flags an agent, the authority quarantines it with the real **kill switch** (a
signed order broadcast on the control subject; every node's governor refuses
it). Impersonators send envelopes forged under another DID and replay captured
ones; probes go through the acting agent's own governor. Crashes close a node
and start it again. Time is a virtual clock advanced per round (per-node skew).
Runs on the embedded bus by default, or on a real nats-server (``nats_url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter
from collections.abc import Collection
from typing import Self

from agentmesh.directory.revocations import RevocationList
from agentmesh.errors import (
    InterceptorDenied,
    NoResponders,
    RemoteError,
    RequestTimeout,
)
from agentmesh.node.config import NodeConfig, Timeouts
from agentmesh.node.interceptors import InboundMessage, Stage
from agentmesh.node.node import Handler, MeshNode
from agentmesh.policy.decision import DecisionRequest
from agentmesh.policy.egress import EgressGuard
from agentmesh.policy.errors import PolicyDenied
from agentmesh.policy.governance import Governance
from agentmesh.policy.governor import Usage
from agentmesh.policy.interceptor import PolicyInterceptor
from agentmesh.policy.killswitch import KillSwitch
from agentmesh.transport.base import Transport
from agentmesh.transport.factory import make_transport
from agentmesh.transport.memory import InMemoryBus
from agentmesh.trustnet.ledger import ReceiptLedger
from iatp.clock import Clock, ManualClock
from iatp.envelope import (
    SIGNING_DOMAIN,
    encode_frame,
    encode_payload,
    new_envelope,
    seal_envelope,
)
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities
from simulations.behaviours import Action, Context, Flood, Forge, Probe, Serve
from simulations.driver import Driver, Served, SimAgent
from simulations.faults import FaultPlan, FaultyTransport
from simulations.model import (
    ROUND_MS,
    START_MS,
    distrusted,
    load_policy,
    no_resolver,
    sheriff_quarantines,
)
from simulations.sagas import MeshSagas
from simulations.server import LocalNatsServer
from simulations.spec import ScenarioSpec
from trust import Outcome, Receipt, TrustEngine
from trust.evidence import sign_receipt

SERVE = "sim.serve"
GOOD, BAD = b"good", b"bad"


class SkewedClock:
    """A node's view of the shared virtual clock, ``offset_ms`` off."""

    def __init__(self, base: Clock, offset_ms: int) -> None:
        self.base = base
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return self.base.now_ms() + self.offset_ms


class MeshBackend:
    """Real nodes on the embedded bus or NATS (see the module docstring)."""

    def __init__(
        self,
        spec: ScenarioSpec,
        agents: list[SimAgent],
        *,
        nats_url: str | None = None,
        request_timeout: float | None = None,
        mesh: str | None = None,
        hosted: Collection[int] | None = None,
        hosts: int = 3,
        server: LocalNatsServer | None = None,
    ) -> None:
        self.spec = spec
        self.agents = agents
        self.nats_url = nats_url
        self.mesh = mesh or f"sim-{spec.name}-{os.getpid()}-{id(self) % 100_000}"
        # The agents whose nodes live in this process (all of them unless split).
        self.hosted = set(range(len(agents)) if hosted is None else hosted)
        self.server = server
        self.bus = InMemoryBus() if nats_url is None else None
        self.clock = ManualClock(START_MS)
        self.engine = TrustEngine(
            pre_trusted=[a.did for a in agents if a.pre_trusted], clock=self.clock
        )
        self.faults = FaultPlan(spec.faults, agents, spec.seed, hosts=hosts)
        self.policy = load_policy(spec)
        self.authority = AgentIdentity.from_seed(spec.seed.to_bytes(8, "big", signed=True) * 4)
        # A lost or unanswered request costs its timeout in wall time: short on the bus,
        # but not so short that a scheduling pause turns into a timeout (0.05 s did once
        # in CI, which broke a same-seed reproducibility test).
        self.timeout = request_timeout or (0.2 if nats_url is None else 0.5)
        self.nodes: dict[int, MeshNode] = {}
        self.governance: dict[int, Governance] = {}
        self.keys: dict[str, int] = {}
        self.fault_stats: dict[str, int] = {}
        self.round_no = 0
        self.driver: Driver | None = None
        self.use_trust = True
        self._captured: dict[int, bytes] = {}
        self._control: Transport | None = None
        self._ledger: ReceiptLedger | None = None
        self._revocations: RevocationList | None = None
        self.switch: KillSwitch | None = None
        self._receipts = 0
        self._team: list[SimAgent] = []
        self._doubles = 0
        self.skipped_faults: Counter[str] = Counter()
        self.saga_runner = (
            MeshSagas(lambda me: self._context(self.round_no, me), lambda: self._team)
            if spec.sagas_per_round
            else None
        )

    def bind(self, driver: Driver) -> None:
        self.driver = driver

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        control = make_transport(self.nats_url, name="sim-control", bus=self.bus)
        await control.connect()
        self._control = control
        self._revocations = RevocationList(
            control,
            mesh=self.mesh,
            authorities=RevocationAuthorities(mesh=frozenset({self.authority.did})),
        )
        await self._revocations.start()
        self.switch = KillSwitch(control, self._revocations, mesh=self.mesh, clock=self.clock)
        await self.switch.start()
        self._ledger = await ReceiptLedger.open(
            control, self.engine, mesh=self.mesh, node="sim", clock=self.clock
        )
        for agent in self.agents:
            if agent.index in self.hosted:
                await self._start_node(agent)
        if self.saga_runner is not None:
            await self.saga_runner.start(self.nodes[0])
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                await node.aclose()
        for closing in (self.switch, self._revocations, self._ledger):
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing.aclose()
        if self._control is not None:
            await self._control.aclose()

    async def _start_node(self, agent: SimAgent) -> None:
        inner = make_transport(self.nats_url, name=f"sim-{agent.index}", bus=self.bus)
        transport = FaultyTransport(
            inner,
            self.faults,
            agent.index,
            lambda: self.round_no,
            self._peer_of,
            self.fault_stats,
        )
        clock = SkewedClock(self.clock, self.faults.skew_ms(agent.index))
        node = MeshNode(
            agent.identity,
            transport,
            config=NodeConfig(mesh=self.mesh, timeouts=Timeouts(request=self.timeout)),
            clock=clock,
        )
        switch = self.switch
        assert switch is not None
        governance = Governance(
            self.policy,
            ring_sources=(self.engine,),
            blocked=switch.is_blocked,
            egress=EgressGuard(resolver=no_resolver),
            node=agent.did,
            clock=clock,
        )
        node.add_interceptor(PolicyInterceptor(governance.governor), stage=Stage.POLICY)
        node.handle(SERVE, self._server(agent))
        await node.start()
        if self.saga_runner is not None:  # its idempotency bucket needs the connection
            await self.saga_runner.attach(agent, node)
        self.nodes[agent.index] = node
        self.governance[agent.index] = governance
        self.keys[agent.did.removeprefix("did:key:")] = agent.index

    def _peer_of(self, subject: str) -> int | None:
        parts = subject.split(".")
        return self.keys.get(parts[-2]) if len(parts) >= 3 else None

    def _context(self, round_no: int, me: int) -> Context:
        assert self.driver is not None
        return self.driver._context(round_no, me)

    def _serve_context(self, agent: SimAgent, message: InboundMessage) -> Context:
        """The driver's context, or (a host process) one seeded by the request itself."""
        if self.driver is not None:
            return self._context(self.round_no, agent.index)
        rng = random.Random(f"{self.spec.seed}:{agent.index}:{message.body!r}")
        honest = [a.index for a in self.agents if a.kind == "honest"]
        groups: dict[str, list[int]] = {}
        for other in self.agents:
            groups.setdefault(other.kind, []).append(other.index)
        return Context(
            self.round_no,
            rng,
            agent.index,
            honest,
            groups,
            contained=lambda index: self.contained(self.agents[index]),
        )

    def _server(self, agent: SimAgent) -> Handler:
        async def serve(message: InboundMessage) -> bytes | None:
            served = agent.behaviour.serve(
                self._serve_context(agent, message), self.keys.get(message.sender[8:], -1)
            )
            if served is Serve.SILENT:  # no answer at all: the requester's request times out
                await asyncio.sleep(self.timeout * 2)
                return None
            return GOOD if served is Serve.GOOD else BAD

        return serve

    # -- the driver's questions ---------------------------------------------------------

    async def request(
        self, round_no: int, requester: SimAgent, provider: SimAgent, *, tag: bytes = b"task"
    ) -> Served:
        self.round_no = round_no
        node = self.nodes[requester.index]
        try:
            reply = await node.request(provider.did, SERVE, tag, timeout=self.timeout)
        except InterceptorDenied as exc:
            return Served(Serve.SILENT, exc.denial_code)
        except RemoteError as exc:
            code = exc.remote_code
            return Served(Serve.SILENT, None if code == "handler_error" else code)
        except (RequestTimeout, NoResponders):
            return Served(Serve.SILENT, "timeout")
        return Served(Serve.GOOD if reply.body == GOOD else Serve.BAD)

    async def report(
        self,
        observer: SimAgent,
        subject: SimAgent,
        outcome: Outcome,
        *,
        interaction_id: str | None = None,
    ) -> None:
        assert self._ledger is not None
        self._receipts += 1
        receipt = Receipt.create(
            observer=observer.did,
            subject=subject.did,
            interaction_id=interaction_id or f"sim-{self.round_no}-{self._receipts}",
            outcome=outcome,
            at_ms=self.clock.now_ms(),
        )
        await self._ledger.publish(sign_receipt(receipt, observer.identity))

    async def act(self, round_no: int, agent: SimAgent, action: Action) -> list[str]:
        self.round_no = round_no
        if isinstance(action, Probe):
            return [self._probe(agent, action)]
        if isinstance(action, Flood):
            return await self._flood(agent, action)
        if isinstance(action, Forge):
            return await self._forge(agent, action)
        return []

    def _probe(self, agent: SimAgent, probe: Probe) -> str:
        governor = self.governance[agent.index].governor
        usage = Usage(cost=probe.cost, urls=(probe.url,) if probe.url else ())
        try:
            governor.authorize(
                DecisionRequest(probe.tool, kind="tool", peer=agent.did), usage, record=False
            )
        except PolicyDenied as denied:
            return f"tool:{denied.code}"
        return "executed"

    async def _flood(self, agent: SimAgent, flood: Flood) -> list[str]:
        node, target = self.nodes[agent.index], self.agents[flood.target]

        async def one() -> str:
            try:
                await node.request(target.did, SERVE, b"flood", timeout=self.timeout)
            except RemoteError as exc:
                return exc.remote_code
            except (RequestTimeout, NoResponders, InterceptorDenied):
                return "timeout"
            return "flood_served"

        return list(await asyncio.gather(*(one() for _ in range(flood.count))))

    async def _forge(self, agent: SimAgent, forge: Forge) -> list[str]:
        target = self.nodes.get(forge.target)
        if target is None:
            return []
        before = Counter(target.counters.rejected)
        await self.send_forgery(agent, forge)
        for _ in range(100):  # the target verifies on its own schedule: wait for its verdict
            if sum(target.counters.rejected.values()) > sum(before.values()):
                break
            await asyncio.sleep(0.002)
        rejected = list((Counter(target.counters.rejected) - before).elements())
        return rejected or ["forgery_accepted"]

    async def send_forgery(self, agent: SimAgent, forge: Forge) -> None:
        """An envelope under ``victim``'s DID signed by the attacker, or a captured replay."""
        node = self.nodes[agent.index]
        target_did = self.agents[forge.target].did
        subject = node.addressing.inbox(target_did)
        if forge.replay and forge.target in self._captured:
            frame = self._captured[forge.target]
        else:
            envelope = new_envelope(
                sender=self.agents[forge.victim].did,
                type=SERVE,
                recipient=target_did,
                body=b"forged",
                now_ms=self.clock.now_ms(),
                lifetime_ms=30_000,
            )
            payload = encode_payload(envelope)  # signed with the attacker's key, not the victim's
            frame = encode_frame(
                envelope.sender, payload, agent.identity.sign(SIGNING_DOMAIN + payload)
            )
            if forge.replay:  # nothing captured yet: capture a genuine one of its own, send twice
                own = new_envelope(
                    sender=agent.did,
                    type="sim.ping",
                    recipient=target_did,
                    body=b"",
                    now_ms=self.clock.now_ms(),
                    lifetime_ms=30_000,
                )
                frame = seal_envelope(own, agent.identity)
                self._captured[forge.target] = frame
                await node.transport.publish(subject, frame)
        await node.transport.publish(subject, frame)

    async def sagas(
        self, round_no: int, coordinator: SimAgent, teams: list[list[SimAgent]]
    ) -> tuple[list[str], list[tuple[SimAgent, bool]]]:
        runner = self.saga_runner
        if runner is None:
            return [], []
        self.round_no = round_no
        statuses: list[str] = []
        steps: list[tuple[SimAgent, bool]] = []
        for team in teams:
            self._team = team
            before = Counter(runner.outcomes)
            steps += await runner.run(round_no, 1)
            after = Counter(runner.outcomes)
            statuses += [
                k for k, n in (after - before).items() if k != "double-executed" for _ in range(n)
            ]
        doubles = runner.outcomes.get("double-executed", 0)
        statuses += ["double-executed"] * (doubles - self._doubles)
        self._doubles = doubles
        return statuses, steps

    async def whitewash(self, agent: SimAgent) -> None:
        old = self.nodes.pop(agent.index)
        await old.aclose()
        await self._start_node(agent)

    @property
    def ledger_position(self) -> int:
        return self._ledger.position if self._ledger is not None else 0

    async def follow_round(self) -> None:
        """Fold the round's receipts and recompute (what the driver did at the round's end)."""
        assert self._ledger is not None
        await self._ledger.catch_up(timeout=30)
        self.engine.recompute()

    async def set_down(self, agent: SimAgent, down: bool) -> None:
        """Crash (close) or restart the node of ``agent`` (the same identity)."""
        agent.crashed = down
        if down:
            node = self.nodes.pop(agent.index, None)
            if node is not None:
                await node.aclose()
        elif agent.index not in self.nodes:
            await self._start_node(agent)

    async def end_round(self, round_no: int) -> None:
        await self.settle_round()
        await self.apply_crashes(round_no)
        await self.restart_server(round_no + 1)
        self.clock.advance(ROUND_MS)

    async def settle_round(self) -> None:
        """Fold the round's receipts, recompute, and quarantine whom the sheriff flags."""
        assert self.switch is not None
        await self.follow_round()
        for agent in self.agents:
            if (
                self.use_trust
                and sheriff_quarantines(self.engine, agent.did)
                and not self.switch.is_blocked(agent.did)
            ):
                await self.switch.quarantine(self.authority, agent.did, "drift detected")

    async def apply_crashes(self, round_no: int) -> None:
        """Crash and restart the nodes the fault plan says change for the next round."""
        for agent, down in self.faults.crash_round(round_no):
            await self.set_down(agent, down)

    async def restart_server(self, round_no: int) -> None:
        """The ``server_restart`` faults opening at ``round_no`` (see simulations.faults)."""
        for fault in self.faults.starting(round_no, "server_restart"):
            down_s = float(fault.params.get("down_ms", 1000)) / 1000
            if self.server is None:
                self.skipped_faults["server_restart"] += 1
                continue
            await asyncio.to_thread(self.server.restart, down_s=down_s)
            self.fault_stats["server_restarts"] = self.fault_stats.get("server_restarts", 0) + 1
            if self.driver is not None:
                self.driver.recorder.event(round_no, "server_restarted", down_ms=down_s * 1000)
            await self.reconnected()

    async def reconnected(self, timeout: float = 30.0) -> None:
        """Wait until every connection of this process is back after a server restart."""
        transports = [n.transport for n in self.nodes.values()]
        if self._control is not None:
            transports.append(self._control)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not all(t.is_connected for t in transports):
            if loop.time() > deadline:
                raise RequestTimeout("the mesh did not reconnect after the server restart")
            await asyncio.sleep(0.05)

    def contained(self, agent: SimAgent) -> bool:
        switch = self.switch
        blocked = switch is not None and switch.is_blocked(agent.did)
        return blocked or distrusted(self.engine, agent.did)

    def reachable(self, round_no: int, a: SimAgent, b: SimAgent) -> bool:
        return True  # partitions are real here: the faulty transport drops the messages

    def rejected(self) -> Counter[str]:
        """Every node's refusals by code (what the mesh itself rejected)."""
        total: Counter[str] = Counter()
        for node in self.nodes.values():
            total.update(node.counters.rejected)
        return total


__all__ = ["MeshBackend", "SkewedClock"]
