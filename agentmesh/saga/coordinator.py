"""SagaCoordinator: drives sagas over the mesh from their durable log.

Any node can run one, and several replicas can run at once: each saga is driven by
the replica holding its lease. Every state change is appended to the log *before*
the coordinator acts on it (a ``step.started`` before the request goes out, a
``compensation.started`` before the compensation), so a replica that takes over
after a crash folds the log, re-sends the in-flight request with the *same*
idempotency key (the agent replays its first result) and carries on.

Steps are signed requests (``MeshNode.request``) checked by a :class:`StepGuard`
before every attempt. A step whose agent is blocked, demoted, refuses, or stops
answering is handed off to another eligible agent with the same capability; an
:class:`InFlightAlarm` (kill switch, revocation list) abandons an agent while its
request is still in flight. Every transition is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agentmesh.audit import AuditEvent, AuditSink
from agentmesh.errors import (
    InterceptorDenied,
    NoResponders,
    RemoteError,
    RequestTimeout,
    TransportError,
)
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.saga.definition import SagaDefinition, SagaStep, StepRequest, validate_token
from agentmesh.saga.errors import SagaError, SagaNotFound, SagaOwnershipLost
from agentmesh.saga.guard import (
    AllowAllGuard,
    InFlightAlarm,
    StaticDirectory,
    StepGuard,
    SubstituteFinder,
)
from agentmesh.saga.log import Lease, SagaLog
from agentmesh.saga.records import RecordKind, SagaRecord
from agentmesh.saga.state import (
    BeginCompensation,
    Compensate,
    Execution,
    Finish,
    RunSteps,
    SagaState,
)
from agentmesh.saga.wire import (
    STEP_TYPE,
    ReplyStatus,
    StepKind,
    StepReplyBody,
    StepRequestBody,
    decode_reply,
    encode_request,
)
from iatp.errors import EnvelopeError

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({"timeout", "no_responders", "transport"})
STATUS_KINDS = frozenset(  # index updates (a registered saga is "running" already)
    {
        RecordKind.SAGA_COMPENSATING,
        RecordKind.SAGA_COMPLETED,
        RecordKind.SAGA_COMPENSATED,
        RecordKind.SAGA_NEEDS_ATTENTION,
    }
)


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """Attributes:
    lease_ttl: seconds a replica owns a saga without renewing (renewed every third).
    recovery_interval: seconds between scans for sagas to take over (``serve``).
    log_timeout: timeout of each log append / read.
    """

    lease_ttl: float = 10.0
    recovery_interval: float = 1.0
    log_timeout: float = 5.0


@dataclass
class CoordinatorCounters:
    submitted: int = 0
    resumed: int = 0
    completed: int = 0
    compensated: int = 0
    needs_attention: int = 0
    handoffs: int = 0
    attempts: int = 0
    ownership_lost: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Outcome:
    reply: StepReplyBody | None = None
    code: str = ""
    detail: str = ""


class _Run:
    def __init__(self, state: SagaState, lease: Lease) -> None:
        self.state = state
        self.lease = lease
        self.lock = asyncio.Lock()


class SagaCoordinator:
    """Runs and recovers sagas. Use as ``async with SagaCoordinator(...) as c``.

    Args:
        node: a running node; steps are its signed requests, records its signatures.
        log: the saga log (see :meth:`SagaLog.open`).
        finder: capability → candidate DIDs (best first), for selection and handoff.
        guard: eligibility of an agent for a step (blocked, ring, trust, policy).
        alarms: sources of in-flight alarms (kill switch, revocations).
        audit: where transitions are audited (default: the node's audit sink).
    """

    def __init__(
        self,
        node: MeshNode,
        log: SagaLog,
        *,
        finder: SubstituteFinder | None = None,
        guard: StepGuard | None = None,
        alarms: Iterable[InFlightAlarm] = (),
        config: CoordinatorConfig | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.node = node
        self.log = log
        self.finder: SubstituteFinder = finder or StaticDirectory()
        self.guard: StepGuard = guard or AllowAllGuard()
        self.config = config or CoordinatorConfig()
        self.audit: AuditSink = audit if audit is not None else node.audit
        self.counters = CoordinatorCounters()
        self.after_append: Callable[[SagaRecord], None] | None = None
        self._inflight: dict[str, set[asyncio.Future[str]]] = {}
        self._active: dict[str, asyncio.Task[SagaState | None]] = {}
        self._serving: asyncio.Task[None] | None = None
        self._closing = False
        for alarm in alarms:
            alarm.add_listener(self.interrupt)

    @property
    def did(self) -> str:
        return self.node.did

    @property
    def busy(self) -> bool:
        """Whether this replica is driving any saga right now."""
        return bool(self._active)

    async def __aenter__(self) -> SagaCoordinator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop serving and cancel sagas this replica drives (their leases expire). Idempotent."""
        self._closing = True
        tasks = [t for t in (self._serving, *self._active.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._serving = None

    # -- public API --------------------------------------------------------------------------

    async def submit(self, definition: SagaDefinition, *, saga_id: str | None = None) -> str:
        """Register a saga (idempotent per ``saga_id``) without running it; returns its id.

        Raises:
            SagaDefinitionError: ``saga_id`` is not a name token.
            TransportError: the index could not be written.
        """
        saga_id = validate_token(saga_id or uuid.uuid4().hex[:20], what="saga id")
        if await self.log.register(saga_id, definition, self.did):
            self.counters.submitted += 1
        return saga_id

    async def run(self, definition: SagaDefinition, *, saga_id: str | None = None) -> SagaState:
        """Submit and drive a saga to its end; returns the final state.

        Raises:
            SagaOwnershipLost: another replica drives this saga id.
            SagaError, TransportError: the log failed.
        """
        saga_id = await self.submit(definition, saga_id=saga_id)
        state = await self._resume(saga_id, definition.model_dump(mode="json"), definition.name)
        if state is None:
            raise SagaOwnershipLost(f"another replica drives {saga_id}", saga_id=saga_id)
        return state

    def start(self, saga_id: str) -> asyncio.Task[SagaState | None]:
        """Drive an already submitted saga in the background (one task per saga)."""
        task = self._active.get(saga_id)
        if task is None or task.done():
            task = asyncio.create_task(self.resume(saga_id), name=f"saga:{saga_id}")
            self._active[saga_id] = task
            task.add_done_callback(lambda _: self._active.pop(saga_id, None))
        return task

    async def resume(self, saga_id: str) -> SagaState | None:
        """Take the saga's lease, fold its log and drive it to the end.

        Returns ``None`` when another replica holds the lease.

        Raises:
            SagaNotFound: no such saga in the index.
            SagaError, TransportError: the log failed (the lease then expires).
        """
        entry = await self.log.entry(saga_id)
        return await self._resume(saga_id, entry.definition, entry.name)

    async def _resume(
        self, saga_id: str, definition: dict[str, Any], name: str
    ) -> SagaState | None:
        lease = await self.log.acquire(saga_id, self.did, ttl=self.config.lease_ttl)
        if lease is None:
            logger.debug("saga %s: lease held elsewhere", saga_id)
            return None
        timeout = self.config.log_timeout
        records: list[SagaRecord] = []
        if not lease.fresh:  # someone drove it before: read everything they wrote
            barrier = await self.log.mark_resumed(saga_id, self.node.identity, timeout=timeout)
            logger.debug("saga %s: lease taken, reading up to seq %d", saga_id, barrier)
            records = await self.log.read(saga_id, until_seq=barrier, idle=0, timeout=timeout * 2)
            logger.debug("saga %s: %d records read", saga_id, len(records))
        run = _Run(SagaState.fold(saga_id, records), lease)
        self.counters.resumed += 1
        self._audit(saga_id, "resumed", None, f"{len(records)} records")
        try:
            async with asyncio.TaskGroup() as group:
                keeper = group.create_task(self._keep_lease(run))
                if not run.state.started:
                    await self._append(
                        run, RecordKind.SAGA_STARTED, definition=definition, name=name
                    )
                await self._drive(run)
                keeper.cancel()
        except BaseExceptionGroup as group_error:
            first = _first_error(group_error)
            if isinstance(first, SagaOwnershipLost):
                self.counters.ownership_lost += 1
                self._audit(saga_id, "ownership_lost", None, "another replica took over")
                return None
            raise first from group_error
        if not run.state.status.terminal:  # an ended saga needs no one to take it over
            await self.log.release(run.lease)
        return run.state

    async def recover_once(self) -> list[str]:
        """Start driving every unfinished saga whose lease is free; returns their ids."""
        started = []
        for saga_id in await self.log.unfinished():
            if saga_id in self._active:
                continue
            self.start(saga_id)
            started.append(saga_id)
        return started

    def serve(self) -> asyncio.Task[None]:
        """Scan for unfinished sagas every ``recovery_interval`` (until ``aclose``)."""

        async def loop() -> None:
            while not self._closing:
                try:
                    await self.recover_once()
                except (SagaError, TransportError) as exc:
                    _raise_if_cancelled()
                    logger.warning("saga recovery scan failed: %s", exc)
                await asyncio.sleep(self.config.recovery_interval)

        if self._serving is None:
            self._serving = asyncio.create_task(loop(), name="saga:recovery")
        return self._serving

    async def wait(self, saga_id: str) -> SagaState | None:
        """Wait for a saga this replica is driving (``None`` if it is not driving it)."""
        task = self._active.get(saga_id)
        return await task if task is not None else None

    async def load(self, saga_id: str) -> SagaState:
        """Read-only state of any saga. Raises: SagaNotFound."""
        return await self.log.load(saga_id)

    def interrupt(self, did: str, reason: str) -> None:
        """Abandon every in-flight request to ``did`` now (an :class:`InFlightAlarm` listener)."""
        for future in list(self._inflight.get(did, ())):
            if not future.done():
                future.set_result(reason)

    # -- driving -----------------------------------------------------------------------------

    async def _keep_lease(self, run: _Run) -> None:
        while True:
            await asyncio.sleep(self.config.lease_ttl / 3)
            run.lease = await self.log.renew(run.lease, ttl=self.config.lease_ttl)

    async def _drive(self, run: _Run) -> None:
        while (action := run.state.plan()) is not None:
            if isinstance(action, RunSteps):
                if len(action.steps) == 1:
                    await self._run_step(run, action.steps[0])
                else:
                    async with asyncio.TaskGroup() as group:
                        for name in action.steps:
                            group.create_task(self._run_step(run, name))
            elif isinstance(action, BeginCompensation):
                await self._append(
                    run, RecordKind.SAGA_COMPENSATING, step=action.step, code=action.code
                )
            elif isinstance(action, Compensate):
                execution = run.state.execution(action.step, action.agent)
                assert execution is not None
                await self._compensate(run, execution)
            elif isinstance(action, Finish):
                await self._finish(run, action.kind)

    async def _finish(self, run: _Run, kind: RecordKind) -> None:
        failed = [
            {"step": e.step, "agent": e.agent, "code": e.code}
            for e in run.state.executions
            if e.compensation.value == "failed"
        ]
        # A completed saga may leave attempts it abandoned on agents that were
        # quarantined or stopped answering mid-step: their outcome is unknown and
        # they are not undone automatically (the agent may be hostile or gone), so
        # they are named in the completion record and audited for reconciliation.
        abandoned = [
            {"step": e.step, "agent": e.agent}
            for e in run.state.executions
            if kind is RecordKind.SAGA_COMPLETED and e.in_doubt
        ]
        await self._append(run, kind, failed=failed, abandoned=abandoned)
        for item in abandoned:
            self._audit(run.state.saga_id, "abandoned_in_doubt", item["agent"], item["step"])
        if kind is RecordKind.SAGA_COMPLETED:
            self.counters.completed += 1
        elif kind is RecordKind.SAGA_COMPENSATED:
            self.counters.compensated += 1
        else:
            self.counters.needs_attention += 1
            logger.error(
                "saga %s needs attention: %d compensations failed", run.state.saga_id, len(failed)
            )

    async def _append(
        self,
        run: _Run,
        kind: RecordKind,
        *,
        step: str | None = None,
        agent: str | None = None,
        attempt: int = 0,
        **data: Any,
    ) -> SagaRecord:
        async with run.lock:
            state = run.state
            record = SagaRecord(
                state.saga_id,
                state.next_number,
                kind,
                self.node.clock.now_ms(),
                self.did,
                step,
                agent,
                attempt,
                data,
            )
            state.validate(record)
            seq = await self.log.append(record, self.node.identity, timeout=self.config.log_timeout)
            state.apply(record)
            self.counters.by_kind[kind.value] = self.counters.by_kind.get(kind.value, 0) + 1
            detail = f"step={step} attempt={attempt} {data.get('code', '')}".strip()
            self._audit(state.saga_id, kind.value, agent, detail)
            if kind in STATUS_KINDS:
                await self.log.record_status(state, seq, self.did)
        if self.after_append is not None:
            self.after_append(record)
        return record

    def _audit(self, saga_id: str, code: str, peer: str | None, detail: str) -> None:
        self.audit.append(
            AuditEvent(
                at_ms=self.node.clock.now_ms(),
                node=self.did,
                kind="saga",
                code=code,
                peer=peer,
                subject=saga_id,
                detail=detail[:300],
            )
        )

    # -- steps -------------------------------------------------------------------------------

    async def _choose(self, run: _Run, step: SagaStep, exclude: set[str]) -> tuple[str | None, str]:
        """The first eligible agent for ``step`` (pinned agent first), or None and why."""
        candidates = [step.agent] if step.agent else []
        if step.capability is not None:
            candidates += await self.finder.candidates(step.capability)
        why = "no_substitute"
        for did in dict.fromkeys(candidates):
            if did is None or did in exclude:
                continue
            verdict = await self.guard.check(did, step)
            if verdict.allowed:
                return did, ""
            self._audit(run.state.saga_id, "candidate_refused", did, f"{step.name}: {verdict.code}")
            why = "no_substitute" if step.capability else verdict.code
        return None, why

    async def _run_step(self, run: _Run, name: str) -> None:
        step = run.state.step_def(name)
        view = run.state.steps[name]
        agent = view.agent
        while True:
            if agent is None:
                agent, why = await self._choose(run, step, set(view.tried))
                if agent is None:
                    await self._append(
                        run, RecordKind.STEP_FAILED, step=name, code=why, in_doubt=False
                    )
                    return
            else:
                verdict = await self.guard.check(agent, step)
                if not verdict.allowed:
                    if not await self._hand_off(run, step, agent, verdict.code):
                        return
                    agent = None
                    continue
            attempt = view.attempts.get(agent, 0) + 1
            key = step.key_for(run.state.saga_id)
            await self._append(
                run, RecordKind.STEP_STARTED, step=name, agent=agent, attempt=attempt, key=key
            )
            self.counters.attempts += 1
            outcome = await self._call(run, agent, step, StepKind.FORWARD, step.request, None)
            reply = outcome.reply
            if reply is not None and reply.status is not ReplyStatus.REJECTED:
                if reply.status is ReplyStatus.OK:
                    await self._append(
                        run,
                        RecordKind.STEP_SUCCEEDED,
                        step=name,
                        agent=agent,
                        result=reply.result,
                        duplicate=reply.duplicate,
                    )
                else:
                    await self._append(
                        run,
                        RecordKind.STEP_FAILED,
                        step=name,
                        agent=agent,
                        code=reply.code,
                        detail=reply.detail,
                        in_doubt=reply.status is ReplyStatus.IN_DOUBT,
                    )
                return
            code = "refused" if reply is not None else outcome.code
            detail = reply.code if reply is not None else outcome.detail
            await self._append(
                run,
                RecordKind.STEP_ATTEMPT_FAILED,
                step=name,
                agent=agent,
                attempt=attempt,
                code=code,
                detail=detail,
            )
            if code in RETRYABLE and attempt < step.retry.max_attempts:
                await asyncio.sleep(step.retry.delay(attempt))
                continue
            if not await self._hand_off(run, step, agent, code):
                return
            agent = None

    async def _hand_off(self, run: _Run, step: SagaStep, agent: str, reason: str) -> bool:
        """Record that ``agent`` gives the step up; False when the step failed instead."""
        view = run.state.steps[step.name]
        in_doubt = view.in_doubt(agent)
        if step.capability is None:
            await self._append(
                run,
                RecordKind.STEP_FAILED,
                step=step.name,
                agent=agent,
                code=reason,
                in_doubt=in_doubt,
            )
            return False
        await self._append(
            run,
            RecordKind.STEP_HANDOFF,
            step=step.name,
            agent=agent,
            reason=reason,
            code=reason,
            in_doubt=in_doubt,
        )
        self.counters.handoffs += 1
        return True

    async def _call(
        self,
        run: _Run,
        agent: str,
        step: SagaStep,
        kind: StepKind,
        request: StepRequest,
        forward_result: dict[str, Any] | None,
    ) -> _Outcome:
        body = StepRequestBody(
            run.state.saga_id,
            step.name,
            kind,
            request.action,
            step.key_for(run.state.saga_id),
            dict(request.params),
            forward_result,
        )
        alarm: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._inflight.setdefault(agent, set()).add(alarm)
        sending: asyncio.Future[InboundMessage] = asyncio.ensure_future(
            self.node.request(agent, STEP_TYPE, encode_request(body), timeout=step.timeout_s)
        )
        try:
            waiters: set[asyncio.Future[Any]] = {sending, alarm}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if not sending.done():
                sending.cancel()
                with contextlib.suppress(BaseException):
                    await sending
                return _Outcome(code=alarm.result(), detail="abandoned while in flight")
            answer = sending.result()
            return _Outcome(reply=decode_reply(answer.body))
        except RequestTimeout:
            _raise_if_cancelled()
            return _Outcome(code="timeout", detail=f"no answer in {step.timeout_s}s")
        except NoResponders:
            return _Outcome(code="no_responders", detail="the agent is not on the mesh")
        except RemoteError as exc:
            clean = exc.remote_code not in ("handler_error",)
            return _Outcome(code="refused" if clean else "agent_error", detail=exc.remote_code)
        except InterceptorDenied as exc:
            return _Outcome(code="denied_locally", detail=exc.denial_code)
        except (EnvelopeError, SagaError) as exc:
            return _Outcome(code="bad_reply", detail=exc.code)
        except TransportError as exc:
            _raise_if_cancelled()  # nats-py may turn a cancellation into a timeout
            return _Outcome(code="transport", detail=exc.code)
        finally:
            if not sending.done():
                sending.cancel()
            waiting = self._inflight.get(agent)
            if waiting is not None:
                waiting.discard(alarm)
                if not waiting:
                    self._inflight.pop(agent, None)

    # -- compensation ------------------------------------------------------------------------

    async def _compensate(self, run: _Run, execution: Execution) -> None:
        step = run.state.step_def(execution.step)
        assert step.compensation is not None
        agent = execution.agent
        while True:
            attempt = execution.attempts + 1
            await self._append(
                run, RecordKind.COMPENSATION_STARTED, step=step.name, agent=agent, attempt=attempt
            )
            verdict = await self.guard.check(agent, step, compensation=True)
            if verdict.allowed:
                outcome = await self._call(
                    run, agent, step, StepKind.COMPENSATE, step.compensation, execution.result
                )
            else:
                outcome = _Outcome(code=verdict.code, detail=verdict.reason)
            reply = outcome.reply
            if reply is not None and reply.status is ReplyStatus.OK:
                await self._append(
                    run,
                    RecordKind.COMPENSATION_SUCCEEDED,
                    step=step.name,
                    agent=agent,
                    result=reply.result,
                    duplicate=reply.duplicate,
                )
                return
            code = reply.code if reply is not None else outcome.code
            detail = reply.detail if reply is not None else outcome.detail
            if attempt >= step.retry.max_attempts:
                await self._append(
                    run,
                    RecordKind.COMPENSATION_FAILED,
                    step=step.name,
                    agent=agent,
                    attempt=attempt,
                    code=code,
                    detail=detail,
                )
                return
            await self._append(
                run,
                RecordKind.COMPENSATION_ATTEMPT_FAILED,
                step=step.name,
                agent=agent,
                attempt=attempt,
                code=code,
                detail=detail,
            )
            await asyncio.sleep(step.retry.delay(attempt))


def _raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library turned into another error."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf exception of a (nested) task-group error."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


__all__ = ["CoordinatorConfig", "CoordinatorCounters", "SagaCoordinator", "SagaNotFound"]
