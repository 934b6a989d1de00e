"""``MeshAgentRuntime``: AutoGen's ``AgentRuntime`` protocol over the mesh.

Each process runs one runtime; each agent type it hosts is a mesh agent with its
own DID (:mod:`.hosting`). ``send_message`` is a signed request to the
recipient type's host (found in the directory, :mod:`.routing`) and its signed
reply; ``publish_message`` is a signed broadcast on the runtime channel, which
every runtime of the team receives and delivers to its own subscribed agents.
Every delivery passes the receiving node's interceptors (:mod:`.guards`), and a
refusal reaches the caller as AutoGen's ``UndeliverableException`` carrying the
refusal code (:mod:`.errors`)::

    async with MeshAgentRuntime(transport, guards=guards) as runtime:
        await MyAgent.register(runtime, "worker", lambda: MyAgent())
        reply = await runtime.send_message(Task("..."), AgentId("worker", "default"))
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar, overload

from autogen_core import (
    Agent,
    AgentId,
    AgentMetadata,
    AgentType,
    CancellationToken,
    MessageSerializer,
    Subscription,
    TopicId,
)
from autogen_core.exceptions import NotAccessibleError

from agentmesh.audit import AuditSink, MemoryAuditSink
from agentmesh.directory.directory import Directory
from agentmesh.errors import InterceptorDenied, NoResponders, RemoteError, RequestTimeout
from agentmesh.integrations.autogen.codec import MessageCodec
from agentmesh.integrations.autogen.config import MeshRuntimeConfig
from agentmesh.integrations.autogen.delivery import Delivery, Judgement
from agentmesh.integrations.autogen.errors import (
    AgentUnreachable,
    AutogenIntegrationError,
    DeliveryRefused,
    OutboundRefused,
    RemoteCantHandle,
    RemoteHandlerError,
    RuntimeNotRunning,
    SenderNotHosted,
)
from agentmesh.integrations.autogen.guards import Guards
from agentmesh.integrations.autogen.handoff import Handoff, PendingPublish, PendingWork
from agentmesh.integrations.autogen.hosting import AgentHost, Factory
from agentmesh.integrations.autogen.layout import TeamLayout
from agentmesh.integrations.autogen.routing import (
    EvidenceFilter,
    HostResolver,
    SenderBinding,
    channel_recipient,
)
from agentmesh.integrations.autogen.team_binding import TeamBinding
from agentmesh.integrations.autogen.wire import (
    DONE_TYPE,
    Routing,
    capability_for,
    envelope_type,
)
from agentmesh.lifecycle import Lifecycle
from agentmesh.node.interceptors import Stage
from agentmesh.node.node import MeshNode
from agentmesh.policy.interceptor import PolicyInterceptor
from agentmesh.policy.killswitch import QuarantineInterceptor
from agentmesh.transport.base import Transport
from iatp.clock import Clock, SystemClock
from iatp.identity import AgentIdentity
from registry.card import Capability
from registry.revocation import RevocationEntry

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=Agent)
IdentityFor = Callable[[str], AgentIdentity]


class RuntimeState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


def _generate(agent_type: str) -> AgentIdentity:
    return AgentIdentity.generate()


def _remote_text(error: RemoteError) -> str:
    """The reason part of ``"<did> answered <code>: <reason>"``."""
    return str(error).rsplit(": ", 1)[-1]


class MeshAgentRuntime(Lifecycle):
    """AutoGen's ``AgentRuntime`` over the mesh (see the module docstring).

    Args:
        transport: the process's transport (in-memory bus or NATS); connected here if
            it is not yet, and then closed here too. All nodes of the runtime share it.
        identity: the runtime's own identity (signs what is sent from outside any
            agent, receives the channel); default: a fresh one.
        config: see :class:`MeshRuntimeConfig`.
        guards: what every node enforces (:class:`~.guards.Guards`).
        identities: ``agent_type -> AgentIdentity`` for the hosted types (default:
            a fresh identity per type and run).
        clock: wall clock of the nodes.
        audit: one audit sink for every node of the runtime (default: in memory).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        identity: AgentIdentity | None = None,
        config: MeshRuntimeConfig | None = None,
        guards: Guards | None = None,
        identities: IdentityFor | None = None,
        clock: Clock | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.transport = transport
        self.identity = identity or AgentIdentity.generate()
        self.config = config or MeshRuntimeConfig()
        self.guards = guards or Guards()
        self.clock: Clock = clock or SystemClock()
        self.audit: AuditSink = audit if audit is not None else MemoryAuditSink()
        self.counters: Counter[str] = Counter()
        self.handoffs: list[Handoff] = []
        self._identities = identities or _generate
        self._codec = MessageCodec()
        self._state = RuntimeState.NEW
        self._owns_transport = False
        self._hosts: dict[str, AgentHost] = {}
        self._local: dict[str, str] = {}  # hosted agent type -> its DID
        self._nodes: dict[str, MeshNode] = {}  # DID -> node, the runtime's own included
        self._remote: set[str] = set()
        self._subscriptions: list[Subscription] = []
        self._pending = PendingWork(self.config.max_pending)
        self._teams = TeamBinding()
        self._directory: Directory | None = None
        self._resolver: HostResolver | None = None
        self._node: MeshNode | None = None
        self._delivery = Delivery(self, self._codec)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def state(self) -> RuntimeState:
        return self._state

    @property
    def did(self) -> str:
        return self.identity.did

    @property
    def node(self) -> MeshNode:
        """The runtime's own node (raises :class:`RuntimeNotRunning` before start)."""
        if self._node is None:
            raise RuntimeNotRunning("the runtime is not started")
        return self._node

    @property
    def directory(self) -> Directory:
        if self._directory is None:
            raise RuntimeNotRunning("the runtime is not started")
        return self._directory

    @property
    def resolver(self) -> HostResolver:
        if self._resolver is None:
            raise RuntimeNotRunning("the runtime is not started")
        return self._resolver

    @property
    def nodes(self) -> Mapping[str, MeshNode]:
        """DID -> node, for every node of this runtime (its own and one per hosted type)."""
        return dict(self._nodes)

    @property
    def codec(self) -> MessageCodec:
        return self._codec

    async def start(self) -> None:
        """Join the mesh: the directory, the runtime's node and its channel.

        Raises:
            RuntimeNotRunning: started twice or after close.
            TransportError: the transport, the directory store or a subscription failed.
        """
        if self._state is not RuntimeState.NEW:
            raise RuntimeNotRunning(f"a runtime starts once; this one is {self._state.value}")
        try:
            if not self.transport.is_connected:
                await self.transport.connect(timeout=self.config.node.timeouts.connect)
                self._owns_transport = True
            kill_switch = self.guards.kill_switch
            self._directory = Directory(
                self.transport,
                mesh=self.config.mesh,
                revocations=kill_switch.revocations if kill_switch is not None else None,
                audit=self.audit,
                node=self.did,
                clock=self.clock,
            )
            await self._directory.start()
            trust = self.guards.trust
            self._resolver = HostResolver(
                self._directory,
                self._local,
                blocked=kill_switch.is_blocked if kill_switch is not None else None,
                trust=trust.engine if trust is not None else None,
                max_ring=self.guards.max_ring,
            )
            self._node = await self._start_node(self.identity, hosted=None)
            self._node.handle(DONE_TYPE, self._delivery.on_done)
            await self._node.subscribe_topic(self.config.channel, self._delivery.on_broadcast)
            if kill_switch is not None:
                kill_switch.on_quarantine(self._on_quarantine)
        except BaseException:
            await self._teardown()
            self._state = RuntimeState.CLOSED
            raise
        self._state = RuntimeState.RUNNING

    async def aclose(self) -> None:
        """Leave the mesh: withdraw cards, close agents and nodes. Idempotent."""
        if self._state in (RuntimeState.CLOSING, RuntimeState.CLOSED):
            return
        if self._state is RuntimeState.NEW:
            self._state = RuntimeState.CLOSED
            return
        self._state = RuntimeState.CLOSING
        await self._teardown()
        self._state = RuntimeState.CLOSED

    async def close(self) -> None:
        """AutoGen's name for :meth:`aclose`."""
        await self.aclose()

    async def _teardown(self) -> None:
        await self._delivery.cancel_all()
        for host in self._hosts.values():
            for agent in list(host.instances.values()):
                with contextlib.suppress(Exception):
                    await agent.close()
        directory = self._directory
        if directory is not None:
            for host in self._hosts.values():
                with contextlib.suppress(Exception):  # best effort: the card expires anyway
                    await directory.deregister(host.node.identity, timeout=1.0)
        for node in reversed(list(self._nodes.values())):
            await node.aclose()
        if directory is not None:
            await directory.aclose()
        if self._owns_transport:
            with contextlib.suppress(Exception):
                await self.transport.aclose()

    def _require_running(self) -> None:
        if self._state is not RuntimeState.RUNNING:
            raise RuntimeNotRunning(
                f"the runtime is {self._state.value}: use `async with MeshAgentRuntime(...)`"
            )

    async def idle(self, *, timeout: float = 30.0) -> None:
        """Wait until every delivery this runtime started has finished.

        Raises:
            TimeoutError: deliveries still run after ``timeout``.
        """
        await self._delivery.idle(timeout=timeout)

    # -- nodes -------------------------------------------------------------------------------

    async def _start_node(self, identity: AgentIdentity, *, hosted: str | None) -> MeshNode:
        node = MeshNode(
            identity,
            self.transport,
            config=replace(self.config.node, mesh=self.config.mesh),
            clock=self.clock,
            audit=self.audit,
        )
        guards = self.guards
        if guards.kill_switch is not None:
            node.add_interceptor(
                QuarantineInterceptor(guards.kill_switch, identity.did), stage=Stage.REVOCATION
            )
        assert self._resolver is not None
        node.add_interceptor(
            SenderBinding(
                self._resolver,
                hosted=hosted,
                channel_recipient=channel_recipient(self.config.channel),
                bind_timeout=self.config.bind_timeout,
                teams=self._teams,
                local=self._nodes.keys(),
            ),
            stage=Stage.POLICY,
        )
        if guards.governor is not None:
            node.add_interceptor(PolicyInterceptor(guards.governor), stage=Stage.POLICY)
        if guards.trust is not None:
            node.add_interceptor(
                EvidenceFilter(
                    guards.trust.interceptor,
                    types=guards.evidence_types,
                    local=self._nodes.keys(),
                ),
                stage=Stage.TRUST,
            )
        await node.start()
        self._nodes[identity.did] = node
        return node

    async def _host(
        self, agent_type: str, factory: Factory | None, expected: type[Agent] | None
    ) -> AgentHost:
        """Start the node of ``agent_type``, publish its card, route its messages here."""
        identity = self._identities(agent_type)
        node = await self._start_node(identity, hosted=agent_type)
        host = AgentHost(agent_type, node, factory, expected)
        node.handle(DONE_TYPE, self._delivery.on_done)
        for type_name in self._codec.type_names:
            node.handle(envelope_type(type_name), self._delivery.direct_handler(host))
        self._hosts[agent_type] = host
        self._local[agent_type] = node.did
        capability = Capability(
            name=capability_for(agent_type), version="1", description=agent_type[:2000]
        )
        await self.directory.register(
            identity,
            display_name=agent_type[:128],
            capabilities=(capability,),
            ttl_ms=self.config.card_ttl_ms,
        )
        self.directory.start_heartbeat(identity)
        return host

    def _signer(self, sender: AgentId | None) -> MeshNode:
        if sender is None:
            return self.node
        host = self._hosts.get(sender.type)
        if host is None:
            raise SenderNotHosted(
                f"{sender} is not hosted by this runtime: it cannot sign for it",
                sender=str(sender),
            )
        return host.node

    def node_of(self, did: str) -> MeshNode | None:
        return self._nodes.get(did)

    def did_of(self, agent_type: str) -> str | None:
        """The DID of a type hosted here (``None`` when it is hosted elsewhere)."""
        return self._local.get(agent_type)

    def host_of(self, agent_type: str) -> AgentHost | None:
        """The local host of ``agent_type`` (``None`` when it is hosted elsewhere)."""
        return self._hosts.get(agent_type)

    @property
    def local_dids(self) -> frozenset[str]:
        return frozenset(self._nodes)

    # -- placement ---------------------------------------------------------------------------

    def mark_remote(self, agent_types: Iterable[str]) -> None:
        """Declare types hosted by other runtimes: registering them here hosts nothing.

        An AgentChat team registers every participant on the runtime it runs on; the
        members that run elsewhere are marked remote first (see :mod:`.team`).

        Raises:
            ValueError: a type is already hosted here.
        """
        for agent_type in agent_types:
            if agent_type in self._hosts:
                raise ValueError(f"{agent_type!r} is hosted by this runtime")
            self._remote.add(agent_type)

    def pin_hosts(self, agent_type: str, dids: Iterable[str]) -> None:
        """Accept only ``dids`` as hosts of ``agent_type``, whatever other cards claim."""
        self.resolver.pin(agent_type, list(dids))

    def hosts(self, agent_type: str) -> list[str]:
        """Admissible hosts of ``agent_type``, best (the primary) first."""
        return self.resolver.hosts(agent_type)

    async def wait_for_hosts(self, agent_types: Iterable[str], *, timeout: float) -> dict[str, str]:
        """Wait until each type has an admissible host; returns type -> primary DID.

        Raises:
            AgentUnreachable: a type has no host within ``timeout``.
        """
        self._require_running()
        return {
            t: await self.resolver.wait_primary(t, timeout=timeout, recipient=t)
            for t in agent_types
        }

    # -- AgentRuntime: messages --------------------------------------------------------------

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> Any:
        """Signed request to ``recipient``'s host; returns the agent's decoded response.

        Cancelling the token stops waiting here; the remote handler runs on.

        Raises:
            DeliveryRefused: the recipient's node refused (``refusal_code``).
            OutboundRefused: this runtime's hooks refused to send it.
            AgentUnreachable: no host, no responders, or no reply in time.
            RemoteCantHandle: the recipient cannot handle this message type.
            RemoteHandlerError: the recipient's handler raised.
            SenderNotHosted: ``sender`` is not an agent of this runtime.
            WireError: the message or the response cannot be (de)serialized.
        """
        self._require_running()
        node = self._signer(sender)
        type_name, body = self._codec.encode(message)
        routing = Routing("send", message_id or str(uuid.uuid4()), sender, recipient=recipient)
        target = str(recipient)
        did = self._local.get(recipient.type)
        if did is None:
            did = await self.resolver.wait_primary(
                recipient.type, timeout=self.config.resolve_timeout, recipient=target
            )
        request = asyncio.ensure_future(
            node.request(
                did,
                envelope_type(type_name),
                body,
                headers=routing.headers(),
                timeout=self.config.request_timeout,
            )
        )
        if cancellation_token is not None:
            cancellation_token.link_future(request)
        try:
            reply = await request
        except InterceptorDenied as exc:
            self.counters[f"outbound_refused:{exc.denial_code}"] += 1
            raise OutboundRefused(
                f"send to {target} refused here: {exc}",
                refusal_code=exc.denial_code,
                recipient=target,
            ) from None
        except RemoteError as exc:
            raise self._remote_error(exc, target, did) from None
        except (NoResponders, RequestTimeout) as exc:
            raise AgentUnreachable(
                f"{target} at {did} did not answer: {exc.code}", cause=exc.code, recipient=target
            ) from None
        return self._codec.decode(reply.body)

    def _remote_error(self, exc: RemoteError, target: str, did: str) -> AutogenIntegrationError:
        code = exc.remote_code
        self.counters[f"refused:{code}"] += 1
        if code == "no_handler":
            return RemoteCantHandle(f"{target} has no handler for this message type")
        if code == "handler_error":
            remote_type = _remote_text(exc)
            if remote_type in ("CantHandleException", "RemoteCantHandle"):
                return RemoteCantHandle(f"{target} cannot handle the message ({remote_type})")
            return RemoteHandlerError(
                f"{target} raised {remote_type}", remote_type=remote_type, recipient=target
            )
        return DeliveryRefused(
            f"{target} at {did} refused the message: {code}: {_remote_text(exc)}",
            refusal_code=code,
            recipient=target,
            did=did,
        )

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> None:
        """Signed broadcast of ``message`` to ``topic_id`` on the runtime channel.

        A publish to an agent type's own topic names that type's primary host
        (``ag_primary``): only it acts, standbys keep the context, and the work is
        handed to a standby if the kill switch stops the primary before it is done.

        Raises:
            AgentUnreachable: the topic is the own topic of a type hosted elsewhere
                (:meth:`mark_remote`, e.g. a team member's "your turn") and no host of
                it is admissible (``cause="no_host"``): nobody would act, and the
                publisher (a team's manager) would wait for an answer forever.
            OutboundRefused: this runtime's hooks refused to send it.
            SenderNotHosted, WireError.
        """
        self._require_running()
        node = self._signer(sender)
        type_name, body = self._codec.encode(message)
        message_id = message_id or str(uuid.uuid4())
        primary = self.resolver.primary(topic_id.type)
        if primary is None and topic_id.type in self._remote:
            self.counters["unserved"] += 1
            raise AgentUnreachable(
                f"no live, admissible host of {topic_id.type!r} would act on this publish",
                cause="no_host",
                recipient=str(topic_id),
            )
        headers = Routing("publish", message_id, sender, topic=topic_id, primary=primary).headers()
        message_type = envelope_type(type_name)
        try:
            await node.publish(self.config.channel, message_type, body, headers=headers)
        except InterceptorDenied as exc:
            self.counters[f"outbound_refused:{exc.denial_code}"] += 1
            raise OutboundRefused(
                f"publish to {topic_id} refused here: {exc}",
                refusal_code=exc.denial_code,
                recipient=str(topic_id),
            ) from None
        if primary is not None and primary not in self._nodes:
            self._pending.track(
                PendingPublish(
                    message_id,
                    topic_id.type,
                    primary,
                    node.did,
                    message_type,
                    body,
                    tuple(headers.items()),
                )
            )

    def finished(self, message_id: str, did: str) -> None:
        """``did`` says it finished ``message_id`` (called by the delivery layer)."""
        if self._pending.done(message_id, did):
            self.counters["done"] += 1

    async def _on_quarantine(self, did: str, order: RevocationEntry) -> None:
        if self._state is not RuntimeState.RUNNING:
            return
        for item in self._pending.of_host(did):
            await self._hand_off(item, f"{did} quarantined: {order.reason}")

    async def _hand_off(self, item: PendingPublish, reason: str) -> None:
        substitute = self.resolver.primary(item.agent_type)
        if substitute is None or substitute == item.primary:
            self._pending.drop(item.message_id)
            self.counters["handoff_failed"] += 1
            self.handoffs.append(
                Handoff(item.message_id, item.agent_type, item.primary, None, reason)
            )
            logger.warning("no standby host of %s for %s", item.agent_type, item.message_id)
            return
        node = self._nodes.get(item.signer)
        if node is None:
            return
        headers = dict(item.headers) | {"ag_primary": substitute}
        try:
            await node.publish(self.config.channel, item.message_type, item.body, headers=headers)
        except InterceptorDenied as exc:
            self.counters[f"outbound_refused:{exc.denial_code}"] += 1
            return
        self._pending.reassign(replace(item, headers=tuple(headers.items())), substitute)
        self.counters["handoffs"] += 1
        self.handoffs.append(
            Handoff(item.message_id, item.agent_type, item.primary, substitute, reason)
        )

    def add_team(self, layout: TeamLayout) -> None:
        """Enforce the rules of ``layout``'s topics on every node of this runtime.

        :func:`~.team.coordinate` and :func:`~.team.host_member` call it: a publish to
        the team's topics that names no team agent as sender, a manager's message
        from a member, or a turn in another member's name is refused with
        ``autogen_team_forged`` (see :mod:`.team_binding`).

        Raises:
            TeamLayoutError: another layout already uses one of its topics.
        """
        self._teams.add(layout)

    @property
    def judged(self) -> Sequence[Judgement]:
        """The delivered messages the judge found bad, oldest first."""
        return tuple(self._delivery.judged)

    # -- AgentRuntime: registration ----------------------------------------------------------

    async def register_factory(
        self,
        type: str | AgentType,
        agent_factory: Callable[[], T | Awaitable[T]],
        *,
        expected_class: type[T] | None = None,
    ) -> AgentType:
        """Host ``type`` here (its own DID and card), or record it as remote (:meth:`mark_remote`).

        Raises:
            ValueError: the type is already registered here.
            RuntimeNotRunning: register after ``start`` (``async with``).
        """
        self._require_running()
        agent_type = type if isinstance(type, AgentType) else AgentType(type)
        name = agent_type.type
        if name in self._hosts:
            raise ValueError(f"Agent with type {name} already exists.")
        if name not in self._remote:
            await self._host(name, agent_factory, expected_class)
        return agent_type

    async def register_agent_instance(self, agent_instance: Agent, agent_id: AgentId) -> AgentId:
        """Host one ready instance under ``agent_id`` (its type gets a DID if it has none).

        Raises:
            ValueError: the id exists, or the type is hosted by a factory or elsewhere.
        """
        self._require_running()
        if agent_id.type in self._remote:
            raise ValueError(f"{agent_id.type!r} is marked as hosted elsewhere")
        host = self._hosts.get(agent_id.type)
        if host is None:
            host = await self._host(agent_id.type, None, None)
        elif host.factory is not None:
            raise ValueError(
                "Agent factories and agent instances cannot be registered to the same type."
            )
        host.add_instance(agent_id.key, agent_instance)
        await agent_instance.bind_id_and_runtime(id=agent_id, runtime=self)
        return agent_id

    async def try_get_underlying_agent_instance(self, id: AgentId, type: type[T] = Agent) -> T:  # type: ignore[assignment]
        """The local instance (created if needed).

        Raises:
            LookupError: the type is not registered here.
            NotAccessibleError: the type is hosted by another runtime.
            TypeError: the instance is not a ``type``.
        """
        agent = await self._local_instance(id)
        if not isinstance(agent, type):
            raise TypeError(f"{id} is a {agent.__class__.__name__}, not a {type.__name__}")
        return agent

    async def _local_instance(self, agent_id: AgentId) -> Agent:
        host = self._hosts.get(agent_id.type)
        if host is None:
            if agent_id.type in self._remote or (
                self._resolver and self._resolver.primary(agent_id.type)
            ):
                raise NotAccessibleError(f"{agent_id} is hosted by another runtime")
            raise LookupError(f"Agent with name {agent_id.type} not found.")
        return await host.instance(self, agent_id.key)

    @overload
    async def get(self, id: AgentId, /, *, lazy: bool = ...) -> AgentId: ...

    @overload
    async def get(
        self, type: AgentType | str, /, key: str = ..., *, lazy: bool = ...
    ) -> AgentId: ...

    async def get(
        self, id_or_type: AgentId | AgentType | str, /, key: str = "default", *, lazy: bool = True
    ) -> AgentId:
        """The AgentId; with ``lazy=False`` the local instance is created, a remote host awaited.

        Raises:
            LookupError: ``lazy=False`` and no host of the type, here or on the mesh.
        """
        if isinstance(id_or_type, AgentId):
            agent_id = id_or_type
        else:
            name = id_or_type if isinstance(id_or_type, str) else id_or_type.type
            agent_id = AgentId(name, key)
        if not lazy:
            self._require_running()
            if agent_id.type in self._hosts:
                await self._local_instance(agent_id)
            else:
                try:
                    await self.resolver.wait_primary(
                        agent_id.type, timeout=self.config.resolve_timeout, recipient=str(agent_id)
                    )
                except AgentUnreachable as exc:
                    raise LookupError(str(exc)) from None
        return agent_id

    # -- AgentRuntime: state and metadata ----------------------------------------------------

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        """Metadata of a local instance; for a remote type, its key and hosting DID.

        Raises:
            LookupError: the type is unknown here and on the mesh.
        """
        if agent.type in self._hosts:
            return (await self._local_instance(agent)).metadata
        did = self.resolver.primary(agent.type)
        if did is None:
            raise LookupError(f"Agent with name {agent.type} not found.")
        return AgentMetadata(type=agent.type, key=agent.key, description=f"hosted by {did}")

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        """Raises: LookupError; NotAccessibleError for a remote agent."""
        return await (await self._local_instance(agent)).save_state()

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        """Raises: LookupError; NotAccessibleError for a remote agent."""
        await (await self._local_instance(agent)).load_state(state)

    async def save_state(self) -> Mapping[str, Any]:
        """State of every local instance, by ``"type/key"`` (remote agents keep their own)."""
        state: dict[str, dict[str, Any]] = {}
        for host in self._hosts.values():
            for key, agent in host.instances.items():
                state[str(AgentId(host.agent_type, key))] = dict(await agent.save_state())
        return state

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Load the states of local agents; entries of types not hosted here are skipped."""
        for text, agent_state in state.items():
            agent_id = AgentId.from_str(text)
            if agent_id.type in self._hosts:
                await (await self._local_instance(agent_id)).load_state(agent_state)

    # -- AgentRuntime: subscriptions and serializers -----------------------------------------

    async def add_subscription(self, subscription: Subscription) -> None:
        """Deliver matching publishes to this runtime's agents (remote types: ignored here).

        Raises:
            ValueError: the subscription exists.
        """
        if any(existing == subscription for existing in self._subscriptions):
            raise ValueError("Subscription already exists")
        self._subscriptions.append(subscription)

    async def remove_subscription(self, id: str) -> None:
        """Raises: LookupError: no subscription with this id."""
        kept = [s for s in self._subscriptions if s.id != id]
        if len(kept) == len(self._subscriptions):
            raise LookupError(f"no subscription {id!r}")
        self._subscriptions = kept

    @property
    def subscriptions(self) -> Sequence[Subscription]:
        return tuple(self._subscriptions)

    def add_message_serializer(
        self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]
    ) -> None:
        """Register serializers; hosted agents then accept direct messages of those types."""
        before = self._codec.type_names
        self._codec.add(serializer)
        for type_name in self._codec.type_names - before:
            for host in self._hosts.values():
                host.node.handle(envelope_type(type_name), self._delivery.direct_handler(host))

    # -- reporting ---------------------------------------------------------------------------

    def rejected(self) -> Counter[str]:
        """Refusals counted by every node of this runtime, by code."""
        total: Counter[str] = Counter()
        for node in self._nodes.values():
            total.update(node.counters.rejected)
        return total


__all__ = ["IdentityFor", "MeshAgentRuntime", "RuntimeState"]
