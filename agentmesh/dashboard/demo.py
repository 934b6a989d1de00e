"""``agentmesh dashboard --demo``: a small live mesh in this process, for the page to show.

Seven agents on the embedded transport (no server), each with its own connection,
signed card, status reporter and the kill switch's quarantine check:

* the **planner** (trust anchor) judges research deliveries and coordinates sagas;
* the **treasury** answers ``payments.refund`` under a policy whose rules use the
  trust engine's rings (ring 3, the sandbox, never touches payments);
* **researcher** and **analyst** deliver findings; the researcher turns bad for a
  while, the drift detector flags it and its rings drop;
* **warehouse** and **cashier** run saga steps (reserve, charge, ship); the cashier
  declines expired cards, so every other order is compensated;
* **mallory** keeps asking the treasury for refunds, is refused by the policy rule,
  and is then quarantined by a signed order of the demo's mesh authority, which
  goes through :attr:`DemoMesh.submit` (the dashboard's own operation gate), after
  which the treasury refuses it as ``quarantined``. Mallory ignores the quarantine
  on its own side, as a rogue agent would.

The planner, treasury, warehouse and cashier turn the messages they handle into
signed trust receipts, so the trust graph fills as the demo runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agentmesh.audit import MemoryAuditSink
from agentmesh.dashboard.operations import operation_document, sign_operation
from agentmesh.directory.directory import Directory
from agentmesh.directory.revocations import RevocationList
from agentmesh.lifecycle import Lifecycle
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage, Stage
from agentmesh.node.node import MeshNode
from agentmesh.observability.status import RecentRefusals, SloSnapshot, StatusReporter
from agentmesh.policy.engine import CompiledPolicy
from agentmesh.policy.governance import Governance
from agentmesh.policy.interceptor import PolicyInterceptor
from agentmesh.policy.killswitch import KillSwitch, QuarantineInterceptor
from agentmesh.saga.adapters import KillSwitchAlarm
from agentmesh.saga.coordinator import SagaCoordinator
from agentmesh.saga.definition import SagaDefinition
from agentmesh.saga.errors import StepActionFailed
from agentmesh.saga.executor import Action, StepCall, StepExecutor
from agentmesh.saga.guard import EligibilityGuard, StaticDirectory
from agentmesh.saga.log import SagaLog
from agentmesh.transport.memory import InMemoryBus, InMemoryTransport
from agentmesh.trustnet.service import MeshTrust
from iatp.errors import AgentMeshError
from iatp.identity import AgentIdentity
from registry.card import Capability
from registry.revocation import RevocationAuthorities, RevocationKind

logger = logging.getLogger(__name__)

DEMO_MESH = "dashboard-demo"
ROSTER: dict[str, tuple[str, ...]] = {
    "planner": ("planning",),
    "treasury": ("payments",),
    "researcher": ("research",),
    "analyst": ("research",),
    "warehouse": ("inventory", "shipping"),
    "cashier": ("payment",),
    "mallory": ("research",),
}
RECEIPT_OBSERVERS = ("planner", "treasury", "warehouse", "cashier")
CARD_TTL_MS = 30_000

TREASURY_POLICY: dict[str, object] = {
    "version": 1,
    "name": "treasury",
    "revision": 1,
    "default": "deny",
    "rules": [
        {
            "id": "status-reports",
            "effect": "allow",
            "description": "the node's own signed status reports for the dashboard",
            "match": {"actions": ["ops.status"]},
        },
        {
            "id": "sandbox-no-payments",
            "effect": "deny",
            "description": "agents in ring 3 (sandbox) never touch payments",
            "match": {"actions": ["payments.*"], "rings": [3]},
        },
        {
            "id": "refunds-for-trusted-agents",
            "effect": "allow",
            "match": {"actions": ["payments.refund"], "kinds": ["message"], "rings": [1, 2]},
        },
    ],
    "rings": {
        "capabilities": {ring: ["payments.*", "ops.status"] for ring in (1, 2, 3)},
        "default": 1,  # no cap from the policy: the trust engine's ring decides
    },
}

Submit = Callable[[bytes], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class DemoScript:
    """The demo's pace (rounds of traffic) and when things happen, in rounds."""

    tick: float = 1.0
    status_interval: float = 1.0
    honest_rounds: int = 8
    bad_rounds: int = 14
    rogue_quarantined_at: int = 6
    refunds_every: int = 3
    first_sagas: tuple[int, ...] = (1, 3)
    saga_every: int = 15


@dataclass(frozen=True, slots=True)
class DeliverySlo:
    """The planner's research intake SLO (the shape of ``agentmesh.resilience`` SLOs)."""

    capability: str
    objective: float
    success_rate: float
    latency_ok_rate: float
    error_budget_remaining: float
    burn_rate: float


@dataclass
class _SloWindow:
    objective: float = 0.9
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=40))

    def snapshot(self) -> list[DeliverySlo]:
        total = len(self.outcomes)
        rate = sum(self.outcomes) / total if total else 1.0
        burn = (1.0 - rate) / (1.0 - self.objective)
        return [
            DeliverySlo(
                capability="research.deliver",
                objective=self.objective,
                success_rate=round(rate, 4),
                latency_ok_rate=1.0,
                error_budget_remaining=round(max(0.0, 1.0 - burn), 4),
                burn_rate=round(burn, 4),
            )
        ]


def order_saga(card: str) -> SagaDefinition:
    """reserve → charge → ship; ``card="expired"`` makes the cashier decline the charge."""
    return SagaDefinition.load(
        {
            "name": "order",
            "steps": [
                {
                    "name": "reserve",
                    "capability": "inventory",
                    "request": {"action": "inventory.reserve", "params": {"sku": "A-17"}},
                    "compensation": {"action": "inventory.release"},
                },
                {
                    "name": "charge",
                    "capability": "payment",
                    "request": {
                        "action": "payment.charge",
                        "params": {"amount_cents": 4200, "card": card},
                    },
                    "compensation": {"action": "payment.refund"},
                    "timeout_s": 5.0,
                },
                {
                    "name": "ship",
                    "capability": "shipping",
                    "request": {"action": "shipping.dispatch"},
                },
            ],
        }
    )


async def _step(call: StepCall) -> dict[str, Any]:
    if call.action == "payment.charge" and call.params.get("card") == "expired":
        raise StepActionFailed("card declined", reason_code="card_declined")
    return {"ref": f"{call.action}:{call.saga_id}"}


class DemoMesh(Lifecycle):
    """The demo's agents and traffic (see the module docstring).

    ``async with DemoMesh(bus) as demo:`` starts everything and runs the traffic in
    the background until the context closes.

    Attributes:
        authority: the demo's mesh authority (signs the quarantine order).
        authorities: DIDs the demo's nodes obey (the authority and ``extra_authorities``).
        anchor: the pre-trusted DID (the planner).
        submit: where the authority's signed operation documents go; by default
            straight to the mesh (the demo's kill switch). The dashboard sets its
            operation gate here, so the order is checked like any posted one.
        round: traffic rounds done so far.
    """

    def __init__(
        self,
        bus: InMemoryBus,
        *,
        mesh: str = DEMO_MESH,
        script: DemoScript | None = None,
        extra_authorities: tuple[str, ...] = (),
        submit: Submit | None = None,
    ) -> None:
        self.bus = bus
        self.mesh = mesh
        self.script = script or DemoScript()
        self.authority = AgentIdentity.generate()
        self.authorities = (self.authority.did, *extra_authorities)
        self.identities = {name: AgentIdentity.generate() for name in ROSTER}
        self.anchor = self.identities["planner"].did
        self.submit: Submit | None = submit
        self.round = 0
        self.sagas_started = 0
        self.nodes: dict[str, MeshNode] = {}
        self.refusals: dict[str, RecentRefusals] = {}
        self.trust: dict[str, MeshTrust] = {}
        self.quarantined = False
        self._slo = _SloWindow()
        self._stack: contextlib.AsyncExitStack | None = None
        self._switch: KillSwitch | None = None
        self._coordinator: SagaCoordinator | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def did(self, name: str) -> str:
        return self.identities[name].did

    def _transport(self, name: str) -> InMemoryTransport:
        return InMemoryTransport(self.bus, name=f"demo-{name}")

    async def start(self) -> None:
        """Start every agent, publish the cards, then the traffic (in the background)."""
        stack = self._stack = contextlib.AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await self.aclose()
            raise

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        enforcer = self._transport("enforcer")
        await enforcer.connect(timeout=5.0)
        stack.push_async_callback(enforcer.aclose)
        revocations = RevocationList(
            enforcer,
            mesh=self.mesh,
            authorities=RevocationAuthorities(mesh=frozenset(self.authorities)),
        )
        await revocations.start()
        stack.push_async_callback(revocations.aclose)
        switch = self._switch = KillSwitch(enforcer, revocations, mesh=self.mesh)
        await switch.start()
        stack.push_async_callback(switch.aclose)

        for name, identity in self.identities.items():
            refusals = self.refusals[name] = RecentRefusals()
            node = MeshNode(
                identity,
                self._transport(name),
                config=NodeConfig(mesh=self.mesh),
                audit=refusals.tap(MemoryAuditSink(capacity=10_000)),
            )
            if name != "mallory":  # a rogue agent ignores its own quarantine
                node.add_interceptor(
                    QuarantineInterceptor(switch, identity.did), stage=Stage.REVOCATION
                )
            self.nodes[name] = node
            await node.start()
            stack.push_async_callback(node.aclose)

        registrar = Directory(enforcer, mesh=self.mesh, node="demo-registrar")
        await registrar.start()
        stack.push_async_callback(registrar.aclose)
        for name, identity in self.identities.items():
            await registrar.register(
                identity,
                display_name=name,
                capabilities=tuple(Capability(name=c) for c in ROSTER[name]),
                ttl_ms=CARD_TTL_MS,
            )
            registrar.start_heartbeat(identity)

        for name in RECEIPT_OBSERVERS:
            node = self.nodes[name]
            service = MeshTrust(
                node.transport,
                node.identity,
                mesh=self.mesh,
                pre_trusted=(self.anchor,),
                recompute_interval=1.0,
                audit=node.audit,
            )
            await service.start()
            stack.push_async_callback(service.aclose)
            self.trust[name] = service
            node.add_interceptor(service.interceptor, stage=Stage.TRUST)

        treasury = self.nodes["treasury"]
        governance = Governance(
            CompiledPolicy.from_data(TREASURY_POLICY, file="<demo treasury policy>"),
            ring_sources=[self.trust["treasury"].engine],
            blocked=switch.is_blocked,
            audit=treasury.audit,
            node=treasury.did,
        )
        treasury.add_interceptor(PolicyInterceptor(governance.governor), stage=Stage.POLICY)
        self.nodes["planner"].handle("research.deliver", self._judge)
        treasury.handle("payments.refund", self._refund)
        actions: dict[str, tuple[str, ...]] = {
            "warehouse": ("inventory.reserve", "inventory.release", "shipping.dispatch"),
            "cashier": ("payment.charge", "payment.refund"),
        }
        for name, names in actions.items():
            step_actions: dict[str, Action] = dict.fromkeys(names, _step)
            await StepExecutor.attach(self.nodes[name], actions=step_actions)
        planner = self.nodes["planner"]
        self._coordinator = SagaCoordinator(
            planner,
            await SagaLog.open(planner.transport, mesh=self.mesh),
            finder=StaticDirectory(
                {
                    "inventory": [self.did("warehouse")],
                    "shipping": [self.did("warehouse")],
                    "payment": [self.did("cashier")],
                }
            ),
            guard=EligibilityGuard(blocked=[switch]),
            alarms=[KillSwitchAlarm(switch)],
        )

        for name, node in self.nodes.items():
            slo: SloSnapshot | None = self._slo.snapshot if name == "planner" else None
            reporter = StatusReporter(
                node,
                interval=self.script.status_interval,
                refusals=self.refusals[name],
                slo_snapshot=slo,
                name=name,
            )
            await stack.enter_async_context(reporter)
        stack.push_async_callback(self._stop_tasks)
        self._spawn(self._traffic(), "demo-traffic")

    async def aclose(self) -> None:
        """Stop the traffic and every agent (idempotent)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def _spawn(self, work: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- handlers ----------------------------------------------------------------------------

    async def _judge(self, message: InboundMessage) -> bytes:
        good = json.loads(message.body).get("quality") == "good"
        self._slo.outcomes.append(good)
        if not good:
            raise ValueError("the finding does not hold up")
        return b'{"accepted": true}'

    async def _refund(self, message: InboundMessage) -> bytes:
        return b'{"refund": "queued"}'

    # -- traffic -----------------------------------------------------------------------------

    async def _ask(self, sender: str, receiver: str, kind: str, body: dict[str, object]) -> None:
        with contextlib.suppress(AgentMeshError, TimeoutError):
            await self.nodes[sender].request(
                self.did(receiver), kind, json.dumps(body).encode(), timeout=2.0
            )

    async def _traffic(self) -> None:
        script = self.script
        run = uuid.uuid4().hex[:6]
        while True:
            r = self.round
            drifting = script.honest_rounds <= r < script.honest_rounds + script.bad_rounds
            quality = "bad" if drifting else "good"
            await asyncio.gather(
                self._ask("researcher", "planner", "research.deliver", {"quality": quality}),
                self._ask("analyst", "planner", "research.deliver", {"quality": "good"}),
                self._ask("mallory", "treasury", "payments.refund", {"amount": 990}),
            )
            if r % script.refunds_every == script.refunds_every - 1:
                await asyncio.gather(
                    self._ask("researcher", "treasury", "payments.refund", {"amount": 12}),
                    self._ask("analyst", "treasury", "payments.refund", {"amount": 15}),
                )
            if r == script.rogue_quarantined_at:
                await self.quarantine("mallory", "keeps asking for refunds it is not owed")
            if r in script.first_sagas or (r > 0 and r % script.saga_every == 0):
                card = "expired" if self.sagas_started % 2 == 0 else "valid"
                self.sagas_started += 1
                self._spawn(self._saga(f"order-{run}-{self.sagas_started}", card), "demo-saga")
            self.round += 1
            await asyncio.sleep(script.tick)

    async def _saga(self, saga_id: str, card: str) -> None:
        assert self._coordinator is not None
        try:
            await self._coordinator.run(order_saga(card), saga_id=saga_id)
        except AgentMeshError as exc:
            logger.warning("demo saga %s failed: %s", saga_id, exc)

    async def quarantine(self, name: str, reason: str) -> None:
        """The authority signs a quarantine order about ``name`` and submits it."""
        entry = sign_operation(self.authority, self.did(name), RevocationKind.QUARANTINED, reason)
        try:
            if self.submit is not None:
                await self.submit(json.dumps(operation_document(entry)).encode())
            else:
                assert self._switch is not None
                await self._switch.send(entry, signer=self.authority)
        except AgentMeshError as exc:
            logger.warning("demo quarantine of %s refused: %s", name, exc)
            return
        self.quarantined = True


__all__ = ["DEMO_MESH", "ROSTER", "DeliverySlo", "DemoMesh", "DemoScript", "order_saga"]
