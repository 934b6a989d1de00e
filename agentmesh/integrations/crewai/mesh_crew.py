"""An existing CrewAI crew on the mesh: ``async with MeshCrew(crew, config) as mesh:``.

What joining does, in order (and undoes in reverse on exit):

1. the crew gets an identity of its own (the observer that signs receipts about
   its members) and follows the mesh's revocation list and kill switch;
2. the directory and the trust service (receipt stream folded into a
   :class:`trust.TrustEngine`, pre-trusting the crew itself and ``anchors``);
3. a :class:`~agentmesh.policy.governance.Governance` from the crew's policy, with
   the trust engine as ring source and the kill switch as quarantine check;
4. every CrewAI agent becomes a :class:`~.member.CrewMember`: an identity, a node
   (quarantine, admission, policy and trust interceptors; a ``crewai.task``
   handler) and a signed card offering its capabilities;
5. the :class:`~.hooks.ToolGovernor` hook pair is registered with CrewAI, and the
   ``delegate_to_mesh`` tool is given to the ``delegates`` roles.

CrewAI runs in a worker thread (:meth:`MeshCrew.kickoff`); the mesh stays on the
event loop. The hooks refuse everything once the crew starts leaving, and are
unregistered only when no member can still be running a tool.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from crewai import Crew
from crewai.crews.crew_output import CrewOutput

from agentmesh.audit import AuditSink, MemoryAuditSink
from agentmesh.directory.admission import AdmissionInterceptor
from agentmesh.directory.directory import Directory
from agentmesh.directory.revocations import RevocationList
from agentmesh.errors import TransportError
from agentmesh.integrations.crewai.config import CrewMeshConfig
from agentmesh.integrations.crewai.delegation import Delegation, Delegator, MeshDelegationTool
from agentmesh.integrations.crewai.errors import CrewConfigError, MeshCrewStateError
from agentmesh.integrations.crewai.hooks import ToolDecision, ToolGovernor
from agentmesh.integrations.crewai.member import CrewMember, Roster, capability_cards
from agentmesh.integrations.crewai.outcomes import OutcomeReporter
from agentmesh.integrations.crewai.tasks import TaskService
from agentmesh.lifecycle import Lifecycle
from agentmesh.node.interceptors import Stage
from agentmesh.node.node import MeshNode
from agentmesh.policy.governance import Governance
from agentmesh.policy.interceptor import PolicyInterceptor
from agentmesh.policy.killswitch import KillSwitch, QuarantineInterceptor
from agentmesh.transport.base import Transport
from agentmesh.transport.factory import make_transport
from agentmesh.transport.memory import InMemoryBus
from agentmesh.trustnet.service import MeshTrust
from iatp.clock import Clock, SystemClock
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities
from trust.evidence import Outcome

logger = logging.getLogger(__name__)

TransportFactory = Callable[[str], Transport]
T = TypeVar("T")
#: How long leaving waits for members still running a delegated task.
DRAIN_SECONDS = 10.0


class MeshCrewState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class MeshCrewReport:
    """What the mesh did for a crew: governed tool calls, delegations, rejections."""

    crew: str
    did: str
    members: dict[str, str]
    decisions: list[ToolDecision]
    refused: dict[str, int]
    delegations: list[Delegation]
    served: dict[str, int]
    rejected: dict[str, dict[str, int]]
    receipts: dict[str, int] = field(default_factory=dict)


class MeshCrew(Lifecycle):
    """One CrewAI crew on the mesh (see the module docstring).

    Args:
        crew: the CrewAI crew (its agents get identities; roles must be unique).
        config: see :class:`~.config.CrewMeshConfig`.
        nats_url: a NATS server (``nats://...``); ``None`` is the embedded mesh.
        bus: the embedded mesh to join (crews sharing a bus see each other).
        transports: ``name -> Transport`` for custom connections (credentials on a
            secured mesh); overrides ``nats_url`` and ``bus``.
        identity: the crew's identity (default: a new one).
        identities: role -> identity for members (default: new ones).
        audit: the crew's audit sink (default: in memory); every member node uses it.
        clock: wall clock.
    """

    def __init__(
        self,
        crew: Crew,
        config: CrewMeshConfig,
        *,
        nats_url: str | None = None,
        bus: InMemoryBus | None = None,
        transports: TransportFactory | None = None,
        identity: AgentIdentity | None = None,
        identities: Mapping[str, AgentIdentity] | None = None,
        audit: AuditSink | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.crew = crew
        self.config = config
        self.identity = identity or AgentIdentity.generate()
        self.clock: Clock = clock or SystemClock()
        self.audit: AuditSink = audit if audit is not None else MemoryAuditSink()
        if transports is None:
            shared = bus if bus is not None or nats_url is not None else InMemoryBus()
            transports = lambda name: make_transport(nats_url, name=name, bus=shared)  # noqa: E731
        self._transports = transports
        self.roster = Roster(self._members(identities or {}))
        self.delegation_tool = MeshDelegationTool()
        self._state = MeshCrewState.NEW
        self._stack = contextlib.AsyncExitStack()
        self._services: list[TaskService] = []
        self._added_tools: list[CrewMember] = []
        self._transport: Transport | None = None
        self._kill_switch: KillSwitch | None = None
        self._directory: Directory | None = None
        self._trust: MeshTrust | None = None
        self._governance: Governance | None = None
        self._reporter: OutcomeReporter | None = None
        self._hooks: ToolGovernor | None = None
        self._delegator: Delegator | None = None

    def _members(self, identities: Mapping[str, AgentIdentity]) -> list[CrewMember]:
        agents = list(self.crew.agents)
        roles = [str(agent.role) for agent in agents]
        unknown = (self.config.roles | set(identities)) - set(roles)
        if unknown:
            raise CrewConfigError(f"no agent has the role(s) {sorted(unknown)}")
        members = []
        for agent, role in zip(agents, roles, strict=True):
            names = self.config.capabilities.get(role, ())
            capability_cards(role, names)
            members.append(
                CrewMember(role, agent, identities.get(role) or AgentIdentity.generate(), names)
            )
        return members

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def state(self) -> MeshCrewState:
        return self._state

    @property
    def did(self) -> str:
        return self.identity.did

    async def start(self) -> None:
        """Join the mesh (see the module docstring).

        Raises:
            MeshCrewStateError: started before.
            TransportError: a connection, subscription or store failed.
        """
        if self._state is not MeshCrewState.NEW:
            raise MeshCrewStateError(f"a MeshCrew starts once; this one is {self._state.value}")
        self._state = MeshCrewState.STARTING
        try:
            await self._start_services()
            for member in list(self.roster):
                await self._join(member)
            self._install()
        except BaseException:
            await self.aclose()
            raise
        self._state = MeshCrewState.RUNNING

    async def _start_services(self) -> None:
        config, stack = self.config, self._stack
        transport = self._transports(f"{config.name}-crew")
        await transport.connect(timeout=config.node.timeouts.connect)
        stack.push_async_callback(transport.aclose)
        self._transport = transport
        revocations = RevocationList(
            transport,
            mesh=config.mesh,
            authorities=RevocationAuthorities(mesh=frozenset(config.authorities)),
            audit=self.audit,
            node=self.did,
            clock=self.clock,
        )
        await revocations.start()
        stack.push_async_callback(revocations.aclose)
        kill_switch = KillSwitch(
            transport,
            revocations,
            mesh=config.mesh,
            node=self.did,
            audit=self.audit,
            clock=self.clock,
        )
        await kill_switch.start()
        stack.push_async_callback(kill_switch.aclose)
        directory = Directory(
            transport,
            mesh=config.mesh,
            revocations=revocations,
            audit=self.audit,
            node=self.did,
            clock=self.clock,
        )
        await directory.start()
        stack.push_async_callback(directory.aclose)
        trust = MeshTrust(
            transport,
            self.identity,
            mesh=config.mesh,
            pre_trusted=(self.did, *config.anchors),
            config=config.trust,
            clock=self.clock,
            audit=self.audit,
            recompute_interval=None if config.recompute_every else config.recompute_interval,
            recompute_every=config.recompute_every,
        )
        await trust.start()
        stack.push_async_callback(trust.aclose)
        governance = Governance(
            config.policy,
            ring_sources=[trust.engine],
            blocked=kill_switch.is_blocked,
            egress=config.egress,
            audit=self.audit,
            node=self.did,
            clock=self.clock,
        )
        governance.governor.trust = trust.engine.score
        reporter = OutcomeReporter(
            self.identity, trust.ledger, loop=asyncio.get_running_loop(), clock=self.clock
        )
        reporter.start()
        stack.push_async_callback(reporter.aclose)
        self._kill_switch, self._directory, self._trust = kill_switch, directory, trust
        self._governance, self._reporter = governance, reporter

    async def _join(self, member: CrewMember) -> None:
        """The member's node, interceptors, task handler and card."""
        config, directory = self.config, self._require(self._directory)
        node = MeshNode(
            member.identity,
            self._transports(f"{config.name}-{member.role}"[:120]),
            config=replace(config.node, mesh=config.mesh, capabilities=member.capabilities),
            clock=self.clock,
            audit=self.audit,
        )
        await node.start()
        self._stack.push_async_callback(node.aclose)
        node.add_interceptor(
            QuarantineInterceptor(self._require(self._kill_switch), member.did),
            stage=Stage.REVOCATION,
        )
        if config.admission:
            node.add_interceptor(AdmissionInterceptor(directory), stage=Stage.REVOCATION)
        governance = self._require(self._governance)
        node.add_interceptor(PolicyInterceptor(governance.governor), stage=Stage.POLICY)
        node.add_interceptor(self._require(self._trust).interceptor, stage=Stage.TRUST)
        joined = replace(member, node=node)
        self.roster.replace(joined)
        service = TaskService(joined)
        service.install()
        self._services.append(service)
        await directory.register(
            member.identity,
            display_name=member.role[:128],
            capabilities=capability_cards(member.role, member.capabilities),
            ttl_ms=config.card_ttl_ms,
        )
        directory.start_heartbeat(member.identity)

        async def leave() -> None:
            with contextlib.suppress(TransportError):
                await directory.deregister(member.identity, timeout=1.0)

        self._stack.push_async_callback(leave)

    def _install(self) -> None:
        config = self.config
        governance = self._require(self._governance)
        hooks = ToolGovernor(
            governance.governor,
            self.roster,
            crew=self.crew,
            tools=config.tools,
            outcomes=self._reporter,
            report_successes=config.report_tool_successes,
        )
        delegator = Delegator(
            self._require(self._directory),
            self._require(self._trust).engine,
            self.roster,
            self._reporter,
            config.delegation,
            kill_switch=self._kill_switch,
            audit=self.audit,
            node=self.did,
            clock=self.clock,
        )
        self.delegation_tool.bind(delegator, hooks, asyncio.get_running_loop())
        for role in config.delegates:
            member = self.roster.by_role(role)
            assert member is not None
            self._give_tool(member)
        hooks.install()
        self._hooks, self._delegator = hooks, delegator

    def _give_tool(self, member: CrewMember) -> None:
        """Add ``delegate_to_mesh`` to the agent's tools, in place.

        In place, because CrewAI tasks keep the very list their agent had when they
        were made; a task given its own tool list keeps it as it is.
        """
        tools = member.agent.tools
        if tools is None:
            member.agent.tools = tools = []
        if not any(tool is self.delegation_tool for tool in tools):
            tools.append(self.delegation_tool)
            self._added_tools.append(member)

    async def aclose(self) -> None:
        """Leave the mesh (idempotent): refuse new tool calls, drain, close, unhook."""
        if self._state in (MeshCrewState.CLOSING, MeshCrewState.CLOSED):
            return
        self._state = MeshCrewState.CLOSING
        hooks = self._hooks
        if hooks is not None:
            hooks.closed = True
        for member in self._added_tools:
            tools = member.agent.tools or []
            while any(tool is self.delegation_tool for tool in tools):
                tools.remove(self.delegation_tool)
        try:
            await self._stack.aclose()
        finally:
            drained = await self._drain()
            if hooks is not None and drained:
                hooks.uninstall()
            elif hooks is not None:
                logger.warning("members still running: the crew's hooks stay (refusing all)")
            self._state = MeshCrewState.CLOSED

    async def _drain(self) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while any(service.active for service in self._services):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    # -- use ---------------------------------------------------------------------------------

    def _require(self, value: T | None) -> T:
        if value is None:
            raise MeshCrewStateError(f"the crew is {self._state.value}, not on the mesh")
        return value

    def _running(self) -> None:
        if self._state is not MeshCrewState.RUNNING:
            raise MeshCrewStateError(f"the crew is {self._state.value}, not running")

    async def kickoff(self, inputs: dict[str, Any] | None = None) -> CrewOutput:
        """Run the crew in a worker thread; its members take no mesh task meanwhile.

        Each task the crew completes is a success receipt about the member that did it.

        Raises:
            MeshCrewStateError: the crew is not on the mesh.
            Exception: whatever ``Crew.kickoff`` raises.
        """
        self._running()
        async with contextlib.AsyncExitStack() as held:
            for member in sorted(self.roster, key=lambda m: m.role):
                await held.enter_async_context(member.busy)
            output = await asyncio.to_thread(self.crew.kickoff, inputs)
        if not isinstance(output, CrewOutput):
            raise MeshCrewStateError("streaming crews are not supported on the mesh")
        reporter = self._reporter
        for task in self.crew.tasks:
            doer = self.roster.for_agent(task.agent) if task.agent is not None else None
            if reporter is not None and doer is not None and task.output is not None:
                reporter.report(doer.did, Outcome.SUCCESS, f"crew-task:{doer.role}")
        return output

    async def settle(self, *, timeout: float = 5.0) -> None:
        """Wait until every receipt reported so far is published and folded here.

        Raises:
            TimeoutError: not within ``timeout``.
        """
        await self._require(self._reporter).flush(timeout=timeout)
        await self._require(self._trust).ledger.catch_up(timeout=timeout)

    # -- views -------------------------------------------------------------------------------

    @property
    def kill_switch(self) -> KillSwitch:
        return self._require(self._kill_switch)

    @property
    def directory(self) -> Directory:
        return self._require(self._directory)

    @property
    def trust(self) -> MeshTrust:
        return self._require(self._trust)

    @property
    def governance(self) -> Governance:
        return self._require(self._governance)

    @property
    def hooks(self) -> ToolGovernor:
        return self._require(self._hooks)

    @property
    def delegator(self) -> Delegator:
        return self._require(self._delegator)

    @property
    def reporter(self) -> OutcomeReporter:
        return self._require(self._reporter)

    def member(self, role: str) -> CrewMember:
        """Raises: CrewConfigError: no member has ``role``."""
        member = self.roster.by_role(role)
        if member is None:
            raise CrewConfigError(f"no member has the role {role!r}", role=role)
        return member

    def node(self, role: str) -> MeshNode:
        """The member's node. Raises: CrewConfigError, MeshCrewStateError."""
        return self._require(self.member(role).node)

    def report(self) -> MeshCrewReport:
        """A snapshot of what the mesh governed, refused and delegated for this crew."""
        hooks, delegator, reporter = self._hooks, self._delegator, self._reporter
        return MeshCrewReport(
            crew=self.config.name,
            did=self.did,
            members={m.role: m.did for m in self.roster},
            decisions=list(hooks.decisions) if hooks else [],
            refused=dict(hooks.refused) if hooks else {},
            delegations=list(delegator.history) if delegator else [],
            served={s.member.role: s.served for s in self._services},
            rejected={
                m.role: dict(m.node.counters.rejected) for m in self.roster if m.node is not None
            },
            receipts=dict(reporter.outcomes) if reporter else {},
        )


__all__ = ["DRAIN_SECONDS", "MeshCrew", "MeshCrewReport", "MeshCrewState", "TransportFactory"]
