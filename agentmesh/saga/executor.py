"""The agent side of a saga step: run each action once, whatever the deliveries.

:class:`StepExecutor` answers ``saga.step`` requests on a :class:`MeshNode`. Every
(kind, idempotency key) runs its action at most once per agent: the first outcome
is kept in a transport KV bucket (JetStream on NATS, so it survives the agent's
own restart) and replayed to every duplicate delivery, from any coordinator
replica. The stored request digest must match: the same key with other
parameters is refused (``idempotency_conflict``), never executed.

Crash semantics: the executor writes ``running`` before the action and ``done``
with the reply after it. Each executor draws a random *incarnation* id when it is
created (once per process start of the agent) and stores it in every record. A
delivery that finds ``running``:

* from this incarnation, for a run that is still live here (a retry that arrives
  while the action runs, or while its ``done`` write waits out a broker restart; or
  the compensation of that very action): waits for the run and answers its real
  outcome, and writes the ``done`` record the run could not write yet;
* from another incarnation (an earlier process of this agent, which died
  mid-action), or from a record without an incarnation (written before it was
  recorded), or from a run of this incarnation that was abandoned (cancelled):
  answers ``in_doubt`` (the action may or may not have happened); the coordinator
  then compensates it.

Store writes are retried while the store is briefly unavailable (a broker restart,
a cluster electing a leader), for at most ``store_retry_s`` seconds; past that the
executor raises :class:`~agentmesh.saga.errors.IdempotencyStoreUnavailable`. Before
the action that refuses the step (nothing ran); after it, the reply is still the
action's real outcome and the run stays in memory, so the next delivery of the key
answers the same outcome and writes ``done`` again.

A compensation for a forward action that never ran here answers ``ok`` (nothing to
undo) and fences the forward key, so a late forward delivery can never run after
its compensation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
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
from agentmesh.saga.errors import (
    IdempotencyStoreUnavailable,
    StepActionFailed,
    StepMessageError,
)
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
    """What the executor did.

    Attributes:
        joined: deliveries that found a ``running`` record of a run still live in
            this incarnation and answered its real outcome.
        unsettled: ``done`` records not written within the retry bound (the run's
            outcome was kept in memory for the next delivery).
        store_unavailable: deliveries refused because the store stayed unavailable
            before the action ran.
    """

    executed: int = 0
    duplicates: int = 0
    conflicts: int = 0
    in_doubt: int = 0
    noop_compensations: int = 0
    tampered: int = 0
    failures: int = 0
    store_retries: int = 0
    joined: int = 0
    unsettled: int = 0
    store_unavailable: int = 0
    per_action: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _LiveRun:
    """An action this incarnation started, kept until its "done" record is stored."""

    digest: str
    revision: int  # of its "running" record
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    reply: StepReplyBody | None = None  # still None once finished: abandoned (cancelled)


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
        store_retry_s: how long a store operation is retried while the store is
            unavailable before :class:`IdempotencyStoreUnavailable`.

    Attributes:
        incarnation: random id of this executor (one per process start of the
            agent), stored in its records to tell its own live runs from the
            leftovers of a dead process.
    """

    def __init__(
        self,
        node: MeshNode,
        store: KeyValue,
        *,
        actions: Mapping[str, Action] | None = None,
        store_retry_s: float = STORE_RETRY_SECONDS,
    ) -> None:
        if store_retry_s <= 0:
            raise ValueError("store_retry_s must be positive")
        self.node = node
        self.store = store
        self.actions: dict[str, Action] = dict(actions or {})
        self.counters = ExecutorCounters()
        self.store_retry_s = store_retry_s
        self.incarnation = os.urandom(8).hex()
        # Records live under the agent's own key: a secured broker lets each agent
        # write only there (docs/broker.md).
        self._tag = MeshAddressing.agent_key(node.did)
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._runs: dict[str, _LiveRun] = {}

    @classmethod
    async def attach(
        cls,
        node: MeshNode,
        *,
        actions: Mapping[str, Action] | None = None,
        mesh: str | None = None,
        store_retry_s: float = STORE_RETRY_SECONDS,
    ) -> StepExecutor:
        """Open the idempotency bucket of ``mesh`` and handle ``saga.step`` on ``node``.

        Raises:
            TransportError: the bucket could not be opened.
            ValueError: ``store_retry_s`` is not positive.
        """
        store = await node.transport.key_value(idempotency_bucket(mesh or node.config.mesh))
        executor = cls(node, store, actions=actions, store_retry_s=store_retry_s)
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
                except IdempotencyStoreUnavailable as exc:  # before the action: nothing ran
                    self.counters.store_unavailable += 1
                    self._audit(exc.code, message.sender, f"{store_key}: {exc}")
                    reply = StepReplyBody(ReplyStatus.REJECTED, code=exc.code, detail=str(exc))
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._locks.pop(store_key, None)
        return encode_reply(reply)

    async def _durably(self, key: str, operation: Callable[[], Awaitable[_T]]) -> _T:
        """``operation`` on the store, retried while the store is briefly unavailable.

        Raises:
            IdempotencyStoreUnavailable: still unavailable after ``store_retry_s``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.store_retry_s
        pause = 0.1
        while True:
            try:
                return await operation()
            except _TRANSIENT as exc:
                if loop.time() + pause > deadline:
                    raise IdempotencyStoreUnavailable(
                        f"the idempotency store did not answer for {self.store_retry_s:g}s "
                        f"({type(exc).__name__})",
                        key=key,
                        seconds=self.store_retry_s,
                    ) from exc
                self.counters.store_retries += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    async def _get(self, key: str) -> tuple[dict[str, Any], int] | None:
        """The record at ``key`` if this agent signed it.

        Raises:
            _TamperedRecord: the stored value is not a record this agent signed.
        """
        try:
            entry = await self._durably(key, lambda: self.store.get(key))
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
        running = self._record(key, request.digest(), "running")
        try:
            revision = await self._create(key, running)
        except KeyExists:
            found = await self._get(key)
            assert found is not None
            return await self._replay(request, key, *found)
        run = _LiveRun(request.digest(), revision)
        self._runs[key] = run
        try:
            run.reply = await self._execute(request, sender, forward_state)
        finally:
            run.finished.set()
            if run.reply is None and self._runs.get(key) is run:
                del self._runs[key]  # cancelled mid-action: its outcome is unknown
        await self._store_done(key, run)
        return run.reply

    async def _store_done(self, key: str, run: _LiveRun) -> None:
        """Write ``run``'s "done" record; while the store refuses, keep the run in memory.

        A run whose record could not be written within the retry bound stays in
        ``_runs``: the next delivery of its key answers its outcome and writes again.
        """
        assert run.reply is not None
        done = self._record(key, run.digest, "done", run.reply)
        try:
            await self._durably(
                key, lambda: self.store.update(key, done, last_revision=run.revision)
            )
        except RevisionMismatch:
            pass  # written by an earlier try whose answer was lost (or marked by another process)
        except IdempotencyStoreUnavailable as exc:
            self.counters.unsettled += 1
            self._audit("idempotency_record_unsettled", None, f"{key}: {exc}")
            logger.warning("saga idempotency record %s not stored: %s", key, exc)
            return
        if self._runs.get(key) is run:
            del self._runs[key]

    def _live_run(self, key: str, record: dict[str, Any], revision: int) -> _LiveRun | None:
        """The run of this incarnation that wrote ``record`` ("running"), if it is known here."""
        run = self._runs.get(key)
        if (
            run is None
            or record.get("incarnation") != self.incarnation
            or record["digest"] != run.digest
            or revision != run.revision
        ):
            return None
        return run

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

        return await self._durably(key, attempt)

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
                    self._record(forward_key, _ANY_DIGEST, "done", fence),
                )
            except KeyExists:
                found = await self._get(forward_key)
            if found is None:
                self.counters.noop_compensations += 1
                self._audit("compensation_noop", sender, f"{request.saga_id}/{request.step}")
                return StepReplyBody(ReplyStatus.OK, result={"noop": True})
        record, revision = found
        if record["state"] == "done":
            status = record["reply"]["status"]
        else:
            # "running": still running here (wait for its outcome), or interrupted
            # in an earlier process (or running in another one): in doubt.
            run = self._live_run(forward_key, record, revision)
            if run is None:
                return "in_doubt"
            await run.finished.wait()
            if run.reply is None:
                return "in_doubt"
            self.counters.joined += 1
            status = run.reply.status.value
        if status == ReplyStatus.OK.value:
            return "done"
        if status == ReplyStatus.IN_DOUBT.value:
            return "in_doubt"
        self.counters.noop_compensations += 1  # it failed cleanly: nothing to undo
        return StepReplyBody(ReplyStatus.OK, result={"noop": True})

    async def _remember_new(self, key: str, request: StepRequestBody, reply: StepReplyBody) -> None:
        with contextlib.suppress(KeyExists):
            await self.store.create(key, self._record(key, request.digest(), "done", reply))

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
        run = self._live_run(key, record, revision)
        if run is not None:  # still running here (or its "done" write failed): join it
            await run.finished.wait()
            if run.reply is not None:
                self.counters.joined += 1
                await self._store_done(key, run)
                return replace(run.reply, duplicate=True)
        # "running" from an earlier process of this agent (it died mid-action), or a
        # run of this one that was abandoned: the action may or may not have happened.
        self.counters.in_doubt += 1
        reply = StepReplyBody(
            ReplyStatus.IN_DOUBT,
            code="interrupted",
            detail="the agent restarted while running this action; it may have happened",
        )
        self._audit("step_in_doubt", None, f"{request.saga_id}/{request.step}")
        with contextlib.suppress(RevisionMismatch, *_TRANSIENT):  # marked by a later delivery
            await self.store.update(
                key, self._record(key, request.digest(), "done", reply), last_revision=revision
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
        self, key: str, digest: str, state: str, reply: StepReplyBody | None = None
    ) -> bytes:
        return self._seal(
            key,
            {
                "state": state,
                "digest": digest,
                "incarnation": self.incarnation,
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
