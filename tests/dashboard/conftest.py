"""A small running mesh for the dashboard tests, on either transport.

:class:`SmallMesh` starts three agents (alice, bob, carol), each on its own
connection with a signed card and a status reporter; bob refuses carol's requests
with a rule-bearing policy verdict, so refusals show up in the reports. A mesh
authority (not a node) signs operations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.dashboard.app import create_app
from agentmesh.dashboard.monitor import MeshMonitor
from agentmesh.dashboard.operations import OperationGate
from agentmesh.directory.directory import Directory
from agentmesh.errors import AgentMeshError
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import ALLOW, InboundMessage, Outcome, Stage, Verdict
from agentmesh.node.node import MeshNode
from agentmesh.observability.status import RecentRefusals, StatusReporter
from agentmesh.transport.base import Transport
from agentmesh.transport.memory import InMemoryBus, InMemoryTransport
from iatp.envelope import Envelope
from iatp.handshake import PeerOffer
from iatp.identity import AgentIdentity
from registry.card import Capability

NAMES = ("alice", "bob", "carol")


class RefuseSender:
    """An interceptor that refuses one sender, naming a rule (like the policy does)."""

    def __init__(self, did: str) -> None:
        self.did = did

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        if message.sender == self.did:
            return Verdict.deny("policy_denied", "echo: deny [rule=no-carol ring=3]")
        return ALLOW

    async def check_outbound(self, envelope: Envelope) -> Verdict:
        return ALLOW

    async def check_handshake(self, offer: PeerOffer) -> Verdict:
        return ALLOW

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        return None


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class SmallMesh:
    def __init__(
        self, transport: Callable[[str], Transport], mesh: str, bus: InMemoryBus | None = None
    ) -> None:
        self.transport = transport
        self.bus = bus
        self.mesh = mesh
        self.authority = AgentIdentity.generate()
        self.identities = {name: AgentIdentity.generate() for name in NAMES}
        self.nodes: dict[str, MeshNode] = {}
        self._stack = contextlib.AsyncExitStack()

    def did(self, name: str) -> str:
        return self.identities[name].did

    async def start(self) -> None:
        stack = self._stack
        for name, identity in self.identities.items():
            refusals = RecentRefusals()
            node = MeshNode(
                identity,
                self.transport(name),
                config=NodeConfig(mesh=self.mesh),
                audit=refusals.tap(MemoryAuditSink()),
            )
            node.handle("echo", self._echo)
            if name == "bob":
                node.add_interceptor(RefuseSender(self.did("carol")), stage=Stage.POLICY)
            await stack.enter_async_context(node)
            self.nodes[name] = node
            await stack.enter_async_context(
                StatusReporter(node, interval=0.2, refusals=refusals, name=name)
            )
        connection = self.transport("registrar")
        await connection.connect(timeout=5.0)
        stack.push_async_callback(connection.aclose)
        registrar = Directory(connection, mesh=self.mesh, node="registrar")
        await registrar.start()
        stack.push_async_callback(registrar.aclose)
        for name, identity in self.identities.items():
            await registrar.register(
                identity, display_name=name, capabilities=(Capability(name="echo"),)
            )

    async def _echo(self, message: InboundMessage) -> bytes:
        return message.body

    async def ask(self, sender: str, receiver: str) -> None:
        with contextlib.suppress(AgentMeshError):
            await self.nodes[sender].request(self.did(receiver), "echo", b"hi", timeout=2.0)

    async def aclose(self) -> None:
        await self._stack.aclose()


def monitor_of(mesh: SmallMesh, transport: Transport, *, actions: bool = True) -> MeshMonitor:
    return MeshMonitor(
        transport,
        mesh=mesh.mesh,
        authorities=(mesh.authority.did,),
        pre_trusted=(mesh.did("alice"),),
        actions=actions,
        refresh_interval=0.1,
        saga_interval=0.2,
    )


@pytest.fixture
async def memory_mesh(uid: str) -> AsyncIterator[SmallMesh]:
    bus = InMemoryBus()
    mesh = SmallMesh(lambda name: InMemoryTransport(bus, name=name), uid, bus)
    await mesh.start()
    try:
        yield mesh
    finally:
        await mesh.aclose()


@pytest.fixture
async def monitor(memory_mesh: SmallMesh) -> AsyncIterator[MeshMonitor]:
    transport = InMemoryTransport(memory_mesh.bus, name="dashboard")
    async with monitor_of(memory_mesh, transport) as watching:
        yield watching


@pytest.fixture
def gate(monitor: MeshMonitor) -> OperationGate:
    return OperationGate(monitor.apply, monitor.authorities, known=monitor.knows)


@pytest.fixture
async def client(monitor: MeshMonitor, gate: OperationGate) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(monitor, operations=gate)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http
