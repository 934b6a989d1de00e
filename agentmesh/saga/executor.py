"""The agent side of a saga step: run each action once, whatever the deliveries.

:class:`StepExecutor` answers ``saga.step`` requests on a :class:`MeshNode`. Every
(kind, idempotency key) runs its action at most once per agent: the first outcome
is kept in a transport KV bucket (JetStream on NATS, so it survives the agent's
own restart) and replayed to every duplicate delivery, from any coordinator
replica. The stored request digest must match: the same key with other
parameters is refused (``idempotency_conflict``), never executed.

Crash semantics: the executor writes ``running`` before the action and ``done``
with the reply after it. A delivery that finds ``running`` from an earlier process
of this agent answers ``in_doubt`` (the action may or may not have happened);
the coordinator then compensates it. A compensation for a forward action that
never ran here answers ``ok`` (nothing to undo) and fences the forward key, so a
late forward delivery can never run after its compensation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agentmesh.audit import AuditEvent
from agentmesh.errors import (
    KeyExists,
    KeyNotFound,
    NoResponders,
    RequestTimeout,
    RevisionMismatch,
    StreamError,
)
from agentmesh.node.addressing import MeshAddressing
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.saga.errors import StepActionFailed, StepMessageError
from agentmesh.saga.records import pack, unpack
from agentmesh.saga.wire import (
    STEP_TYPE,
    ReplyStatus,
    StepKind,
    StepReplyBody,
    StepRequestBody,
    decode_request,
    encode_reply,
)
from agentmesh.transport.base import KeyValue

logger = logging.getLogger(__name__)

_ANY_DIGEST = "*"
IDEMPOTENCY_DOMAIN = b"agentmesh/1/saga-idempotency\x00"


def idempotency_bucket(mesh: str) -> str:
    """The KV bucket of the agents' idempotency records (keys start with the agent key)."""
    return f"saga-idem-{mesh}"


class _TamperedRecord(Exception):
    """A stored idempotency record that this agent did not sign (never trusted)."""


def _signed_bytes(key: str, body: bytes) -> bytes:
    return IDEMPOTENCY_DOMAIN + key.encode() + b"\x00" + body


@dataclass(frozen=True, slots=True)
class StepCall:
    """What an action receives.

    Attributes:
        forward_state: for compensations, how the forward action ended on this
            agent: ``"done"`` or ``"in_doubt"`` (it was interrupted by a crash).
    """

    saga_id: str
    step: str
    kind: StepKind
    action: str
    params: dict[str, Any]
    key: str
    sender: str
    forward_result: dict[str, Any] | None = None
    forward_state: str = "done"


Action = Callable[[StepCall], Awaitable[Mapping[str, Any] | None]]


@dataclass
class ExecutorCounters:
    executed: int = 0
    duplicates: int = 0
    conflicts: int = 0
    in_doubt: int = 0
    noop_compensations: int = 0
    tampered: int = 0
    failures: int = 0
    store_retries: int = 0
    per_action: dict[str, int] = field(default_factory=dict)


_T = TypeVar("_T")
# Errors of a store that is briefly unavailable (a cluster electing a leader):
# the write may or may not have happened, so it is retried, never reported as done.
_TRANSIENT = (RequestTimeout, NoResponders, StreamError)
STORE_RETRY_SECONDS = 20.0


class StepExecutor:
    """Runs saga actions once per idempotency key on one agent.

    Args:
        node: the agent's node (its DID scopes the idempotency records).
        store: the KV bucket holding idempotency records.
        actions: handler per action name; raise :class:`StepActionFailed` to fail.
    """

    def __init__(
        self, node: MeshNode, store: KeyValue, *, actions: Mapping[str, Action] | None = None
    ) -> None:
        self.node = node
        self.store = store
        self.actions: dict[str, Action] = dict(actions or {})
        self.counters = ExecutorCounters()
        self._boot = os.urandom(8).hex()
        # Records live under the agent's own key: a secured broker lets each agent
        # write only there (docs/broker.md).
        self._tag = MeshAddressing.agent_key(node.did)
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @classmethod
    async def attach(
        cls, node: MeshNode, *, actions: Mapping[str, Action] | None = None, mesh: str | None = None
    ) -> StepExecutor:
        """Open the idempotency bucket of ``mesh`` and handle ``saga.step`` on ``node``.

        Raises:
            TransportError: the bucket could not be opened.
        """
        store = await node.transport.key_value(idempotency_bucket(mesh or node.config.mesh))
        executor = cls(node, store, actions=actions)
        node.handle(STEP_TYPE, executor.handle)
        return executor

    def action(self, name: str) -> Callable[[Action], Action]:
        """Decorator: register ``name``'s handler."""

        def register(handler: Action) -> Action:
            self.actions[name] = handler
            return handler

        return register

    def _key(self, kind: StepKind, key: str) -> str:
        return f"{self._tag}.{kind.value}.{hashlib.sha256(key.encode()).hexdigest()[:40]}"

    async def handle(self, message: InboundMessage) -> bytes:
        """The ``saga.step`` handler: decode, de-duplicate, run, remember, reply."""
        try:
            request = decode_request(message.body)
        except StepMessageError as exc:
            self._audit("bad_step_message", message.sender, str(exc))
            return encode_reply(StepReplyBody(ReplyStatus.REJECTED, code=exc.code, detail=str(exc)))
        store_key = self._key(request.kind, request.key)
        lock, users = self._locks.setdefault(store_key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:  # one delivery of a key at a time in this process
                try:
                    reply = await self._once(request, store_key, message.sender)
                except _TamperedRecord:
                    self.counters.tampered += 1
                    self._audit("idempotency_record_invalid", message.sender, store_key)
                    reply = StepReplyBody(
                        ReplyStatus.REJECTED,
                        code="idempotency_record_invalid",
                        detail="the stored idempotency record is not signed by this agent",
                    )
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._locks.pop(store_key, None)
        return encode_reply(reply)

    async def _durably(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        """``operation`` on the store, retried while the store is briefly unavailable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STORE_RETRY_SECONDS
        pause = 0.1
        while True:
            try:
                return await operation()
            except _TRANSIENT:
                if loop.time() + pause > deadline:
                    raise
                self.counters.store_retries += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    async def _get(self, key: str) -> tuple[dict[str, Any], int] | None:
        """The record at ``key`` if this agent signed it.

        Raises:
            _TamperedRecord: the stored value is not a record this agent signed.
        """
        try:
            entry = await self._durably(lambda: self.store.get(key))
        except KeyNotFound:
            return None
        try:
            body, signature = unpack(entry.value)
            self.node.identity.verify_key.verify(_signed_bytes(key, body), signature)
            record = unpack(body)
            if not isinstance(record, dict) or not {"state", "digest", "reply"} <= set(record):
                raise ValueError("not an idempotency record")
        except Exception as exc:  # a bad signature or an undecodable value: refused
            raise _TamperedRecord(key) from exc
        return record, entry.revision

    def _seal(self, key: str, record: dict[str, Any]) -> bytes:
        body = pack(record)
        return pack([body, self.node.identity.sign(_signed_bytes(key, body))])

    async def _once(self, request: StepRequestBody, key: str, sender: str) -> StepReplyBody:
        # Forward steps go straight for the create (one KV round trip on the common
        # path); a duplicate finds the key taken and replays what is stored.
        found = None if request.kind is StepKind.FORWARD else await self._get(key)
        if found is not None:
            return await self._replay(request, key, *found)
        forward_state = "done"
        if request.kind is StepKind.COMPENSATE:
            forward = await self._settle_forward(request, sender)
            if isinstance(forward, StepReplyBody):
                await self._remember_new(key, request, forward)
                return forward
            forward_state = forward
        running = self._record(key, request, "running")
        try:
            revision = await self._create(key, running)
        except KeyExists:
            found = await self._get(key)
            assert found is not None
            return await self._replay(request, key, *found)
        reply = await self._execute(request, sender, forward_state)
        done = self._record(key, request, "done", reply)
        with contextlib.suppress(RevisionMismatch):
            await self._durably(lambda: self.store.update(key, done, last_revision=revision))
        return reply

    async def _create(self, key: str, running: bytes) -> int:
        """Store the "running" record; its revision.

        A create whose answer was lost (the store was electing a leader) is retried;
        when the retry finds the key holding exactly these bytes, the lost create
        was this one (the caller holds the key's lock), not an earlier run.

        Raises:
            KeyExists: another record holds the key.
        """
        uncertain = False

        async def attempt() -> int:
            nonlocal uncertain
            try:
                return await self.store.create(key, running)
            except KeyExists:
                if uncertain:
                    with contextlib.suppress(KeyNotFound):
                        stored = await self.store.get(key)
                        if stored.value == running:
                            return stored.revision
                raise
            except _TRANSIENT:
                uncertain = True
                raise

        return await self._durably(attempt)

    async def _settle_forward(self, request: StepRequestBody, sender: str) -> StepReplyBody | str:
        """For a compensation: a no-op reply when the forward never ran, else its state."""
        forward_key = self._key(StepKind.FORWARD, request.key)
        found = await self._get(forward_key)
        if found is None:
            fence = StepReplyBody(
                ReplyStatus.FAILED,
                code="compensated_before_execution",
                detail="a compensation arrived first; this step will not run here",
            )
            try:
                await self.store.create(
                    forward_key,
                    self._seal(
                        forward_key,
                        {
                            "state": "done",
                            "digest": _ANY_DIGEST,
                            "boot": self._boot,
                            "reply": _reply_map(fence),
                        },
                    ),
                )
            except KeyExists:
                found = await self._get(forward_key)
            if found is None:
                self.counters.noop_compensations += 1
                self._audit("compensation_noop", sender, f"{request.saga_id}/{request.step}")
                return StepReplyBody(ReplyStatus.OK, result={"noop": True})
        record = found[0]
        if record["state"] != "done":
            return "in_doubt"  # running: interrupted, or still running in another process
        status = record["reply"]["status"]
        if status == ReplyStatus.OK.value:
            return "done"
        if status == ReplyStatus.IN_DOUBT.value:
            return "in_doubt"
        self.counters.noop_compensations += 1  # it failed cleanly: nothing to undo
        return StepReplyBody(ReplyStatus.OK, result={"noop": True})

    async def _remember_new(self, key: str, request: StepRequestBody, reply: StepReplyBody) -> None:
        with contextlib.suppress(KeyExists):
            await self.store.create(key, self._record(key, request, "done", reply))

    async def _replay(
        self, request: StepRequestBody, key: str, record: dict[str, Any], revision: int
    ) -> StepReplyBody:
        if record["digest"] not in (request.digest(), _ANY_DIGEST):
            self.counters.conflicts += 1
            self._audit("idempotency_conflict", None, f"{request.saga_id}/{request.step}")
            return StepReplyBody(
                ReplyStatus.REJECTED,
                code="idempotency_conflict",
                detail="this idempotency key was used with other parameters",
            )
        if record["state"] == "done":
            self.counters.duplicates += 1
            stored = record["reply"]
            return StepReplyBody(
                ReplyStatus(stored["status"]),
                stored["result"],
                stored["code"],
                stored["detail"],
                duplicate=True,
            )
        # "running" from an earlier process of this agent: it died mid-action.
        self.counters.in_doubt += 1
        reply = StepReplyBody(
            ReplyStatus.IN_DOUBT,
            code="interrupted",
            detail="the agent restarted while running this action; it may have happened",
        )
        self._audit("step_in_doubt", None, f"{request.saga_id}/{request.step}")
        with contextlib.suppress(RevisionMismatch):
            await self.store.update(
                key, self._record(key, request, "done", reply), last_revision=revision
            )
        return reply

    async def _execute(
        self, request: StepRequestBody, sender: str, forward_state: str
    ) -> StepReplyBody:
        handler = self.actions.get(request.action)
        if handler is None:
            self.counters.failures += 1
            return StepReplyBody(
                ReplyStatus.FAILED, code="unknown_action", detail=f"no action {request.action!r}"
            )
        call = StepCall(
            request.saga_id,
            request.step,
            request.kind,
            request.action,
            request.params,
            request.key,
            sender,
            request.forward_result,
            forward_state,
        )
        self.counters.executed += 1
        self.counters.per_action[request.action] = (
            self.counters.per_action.get(request.action, 0) + 1
        )
        try:
            result = await handler(call)
        except StepActionFailed as exc:
            self.counters.failures += 1
            return StepReplyBody(ReplyStatus.FAILED, code=exc.reason_code, detail=str(exc))
        except Exception as exc:
            self.counters.failures += 1
            logger.warning("saga action %s raised %s", request.action, type(exc).__name__)
            return StepReplyBody(ReplyStatus.FAILED, code="action_error", detail=type(exc).__name__)
        return StepReplyBody(ReplyStatus.OK, result=dict(result or {}))

    def _record(
        self, key: str, request: StepRequestBody, state: str, reply: StepReplyBody | None = None
    ) -> bytes:
        return self._seal(
            key,
            {
                "state": state,
                "digest": request.digest(),
                "boot": self._boot,
                "reply": _reply_map(reply) if reply is not None else None,
            },
        )

    def _audit(self, code: str, peer: str | None, detail: str) -> None:
        self.node.audit.append(
            AuditEvent(
                at_ms=self.node.clock.now_ms(),
                node=self.node.did,
                kind="saga_step",
                code=code,
                peer=peer,
                detail=detail[:300],
            )
        )


def _reply_map(reply: StepReplyBody) -> dict[str, Any]:
    return {
        "status": reply.status.value,
        "result": reply.result,
        "code": reply.code,
        "detail": reply.detail,
    }


__all__ = ["Action", "ExecutorCounters", "StepCall", "StepExecutor"]
