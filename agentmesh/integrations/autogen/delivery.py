"""Inbound side of a mesh runtime: messages that passed a node's checks reach the agents.

A node calls these handlers only after size, signature, validity, replay and
every interceptor (quarantine, sender binding, policy, trust) accepted the
envelope. Then:

* a direct message is decoded and handed to the recipient instance; its return
  value is the signed reply (an exception becomes a signed ``handler_error``
  naming its class, and a failure receipt);
* a broadcast on the channel is decoded once and delivered to every local agent
  whose subscription matches its topic. Standbys skip a publish to their own
  topic that names another host as primary. A judge may find the message bad:
  it is still delivered, but the handler then fails (a failure receipt for the
  sender). The primary answers ``autogen.~done`` when its agent finished. A
  local agent whose host is quarantined or revoked gets nothing more.

Agents run inside ``acting_as(host DID)``, so governed tools know which mesh agent
calls them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autogen_core import (
    AgentId,
    CancellationToken,
    MessageContext,
    MessageHandlerContext,
    TopicId,
)
from autogen_core.exceptions import CantHandleException

from agentmesh.errors import AgentMeshError
from agentmesh.integrations.autogen.codec import MessageCodec, type_name_of
from agentmesh.integrations.autogen.errors import ResultRejected, WireError
from agentmesh.integrations.autogen.hosting import AgentHost
from agentmesh.integrations.autogen.wire import DONE_TYPE, Routing, parse_routing
from agentmesh.node.interceptors import InboundMessage
from agentmesh.policy.governed import acting_as

if TYPE_CHECKING:
    from agentmesh.integrations.autogen.runtime import MeshAgentRuntime

logger = logging.getLogger(__name__)

Handler = Callable[[InboundMessage], Awaitable[bytes | None]]
MAX_MESSAGE_ID = 256


@dataclass(frozen=True, slots=True)
class Judgement:
    """A delivered message a judge found bad: evidence against its sender."""

    sender: str
    did: str
    message_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class _Target:
    host: AgentHost
    agent_id: AgentId
    acts: bool  # the named primary of a publish to its own topic: answers done


class Delivery:
    """The handlers a runtime registers on its nodes (see the module docstring)."""

    def __init__(self, runtime: MeshAgentRuntime, codec: MessageCodec) -> None:
        self.runtime = runtime
        self.codec = codec
        self.judged: list[Judgement] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # -- direct messages ---------------------------------------------------------------------

    def direct_handler(self, host: AgentHost) -> Handler:
        async def handle(inbound: InboundMessage) -> bytes:
            return await self._direct(host, inbound)

        return handle

    async def _direct(self, host: AgentHost, inbound: InboundMessage) -> bytes:
        routing = parse_routing(inbound.envelope.headers)
        assert routing.recipient is not None  # SenderBinding refused anything else
        message = self.codec.decode(inbound.body)
        agent = await host.instance(self.runtime, routing.recipient.key)
        context = MessageContext(
            sender=routing.sender,
            topic_id=None,
            is_rpc=True,
            cancellation_token=CancellationToken(),
            message_id=routing.message_id,
        )
        with (
            MessageHandlerContext.populate_context(agent.id),
            acting_as(host.did, context={"autogen_agent": str(agent.id)}),
        ):
            response = await agent.on_message(message, ctx=context)
        return self.codec.encode(response)[1]

    # -- broadcasts --------------------------------------------------------------------------

    async def on_broadcast(self, inbound: InboundMessage) -> bytes | None:
        routing = parse_routing(inbound.envelope.headers)
        assert routing.topic is not None  # SenderBinding refused anything else
        own = inbound.sender in self.runtime.local_dids
        targets = self._targets(routing, routing.topic, own)
        if not targets:
            return None  # for other runtimes' agents: not decoded, not judged here
        message = self.codec.decode(inbound.body)
        for target in targets:
            self._spawn(self._deliver(target, message, routing, inbound.sender))
        judge = self.runtime.guards.judge
        reason = None if own or judge is None else judge(message, routing.sender)
        if reason is not None:
            sender = str(routing.sender) if routing.sender is not None else ""
            self.judged.append(Judgement(sender, inbound.sender, type_name_of(message), reason))
            self.runtime.counters["judged_bad"] += 1
            raise ResultRejected(
                f"{sender or inbound.sender}: {reason}", reason=reason, sender=sender
            )
        return None

    def _targets(self, routing: Routing, topic: TopicId, own: bool) -> list[_Target]:
        targets: list[_Target] = []
        seen: set[AgentId] = set()
        for subscription in self.runtime.subscriptions:
            if not subscription.is_match(topic):
                continue
            try:
                agent_id = subscription.map_to_agent(topic)
            except CantHandleException:
                continue
            host = self.runtime.host_of(agent_id.type)
            if host is None or agent_id in seen:
                continue
            seen.add(agent_id)
            if self.runtime.resolver.is_blocked(host.did):
                self.runtime.counters["quarantined_skipped"] += 1
                continue  # a quarantined agent hears nothing more (its own node refuses too)
            if own and agent_id == routing.sender:
                continue  # AutoGen never delivers a publish back to its sender
            own_topic = agent_id.type == topic.type and routing.primary is not None
            if own_topic and routing.primary != host.did:
                self.runtime.counters["standby_kept"] += 1
                continue
            targets.append(_Target(host, agent_id, own_topic))
        return targets

    async def _deliver(
        self, target: _Target, message: object, routing: Routing, publisher: str
    ) -> None:
        host, agent_id = target.host, target.agent_id
        try:
            agent = await host.instance(self.runtime, agent_id.key)
            context = MessageContext(
                sender=routing.sender,
                topic_id=routing.topic,
                is_rpc=False,
                cancellation_token=CancellationToken(),
                message_id=routing.message_id,
            )
            with (
                MessageHandlerContext.populate_context(agent.id),
                acting_as(host.did, context={"autogen_agent": str(agent.id)}),
            ):
                await agent.on_message(message, ctx=context)
            self.runtime.counters["delivered"] += 1
        except Exception as exc:  # AutoGen logs publish handler errors and carries on
            self.runtime.counters["handler_errors"] += 1
            logger.warning(
                "%s failed on %s: %s", agent_id, type(message).__name__, type(exc).__name__
            )
        finally:
            if target.acts:
                await self._answer_done(host, publisher, routing.message_id)

    async def _answer_done(self, host: AgentHost, publisher: str, message_id: str) -> None:
        if publisher in self.runtime.local_dids:
            self.runtime.finished(message_id, host.did)
            return
        try:
            await host.node.send(publisher, DONE_TYPE, message_id.encode())
        except AgentMeshError as exc:  # e.g. this host was quarantined meanwhile
            logger.info("done for %s not sent: %s", message_id, exc.code)

    async def on_done(self, inbound: InboundMessage) -> bytes | None:
        try:
            message_id = inbound.body.decode()
        except UnicodeDecodeError:
            raise WireError("done body must be a UTF-8 message id") from None
        if not message_id or len(message_id) > MAX_MESSAGE_ID:
            raise WireError("done body must be a message id")
        self.runtime.finished(message_id, inbound.sender)
        return None

    # -- tasks -------------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def idle(self, *, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["Delivery", "Judgement"]
