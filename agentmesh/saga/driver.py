"""The step engine of the saga coordinator: attempts, handoff, compensation, the log.

:class:`StepDriver` appends every state change (validated by the pure state
machine, signed, acked by the log) *before* acting on it, runs one step with its
retries and handoffs, and one compensation with its retries. The
:class:`~agentmesh.saga.coordinator.SagaCoordinator` adds leases, recovery and the
order of actions on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from agentmesh import telemetry
from agentmesh.audit import AuditEvent, AuditSink
from agentmesh.errors import (
    CircuitOpen,
    InterceptorDenied,
    NoResponders,
    RemoteError,
    RequestTimeout,
    TransportError,
)
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.saga.definition import SagaStep, StepRequest
from agentmesh.saga.errors import SagaError
from agentmesh.saga.guard import (
    StepGuard,
    SubstituteFinder,
)
from agentmesh.saga.log import Lease, SagaLog
from agentmesh.saga.records import RecordKind, SagaRecord
from agentmesh.saga.state import (
    Execution,
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
class StepOutcome:
    reply: StepReplyBody | None = None
    code: str = ""
    detail: str = ""


class SagaRun:
    def __init__(self, state: SagaState, lease: Lease) -> None:
        self.state = state
        self.lease = lease
        self.lock = asyncio.Lock()


class StepDriver:
    """Runs the steps and compensations of sagas, logging each change before acting."""

    node: MeshNode
    log: SagaLog
    audit: AuditSink
    config: CoordinatorConfig
    counters: CoordinatorCounters
    guard: StepGuard
    finder: SubstituteFinder
    after_append: Callable[[SagaRecord], None] | None
    _inflight: dict[str, set[asyncio.Future[str]]]

    @property
    def did(self) -> str:
        return self.node.did

    async def _append(
        self,
        run: SagaRun,
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

    async def _choose(
        self, run: SagaRun, step: SagaStep, exclude: set[str]
    ) -> tuple[str | None, str]:
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

    def _span(
        self, name: str, run: SagaRun, step: str | None = None
    ) -> AbstractContextManager[telemetry.Span | None]:
        """A saga span when tracing is on (``agentmesh.telemetry``), else nothing."""
        active = telemetry.tracer
        if active is None:
            return contextlib.nullcontext()
        attributes: dict[str, telemetry.AttributeValue] = {
            "agentmesh.node": self.did,
            "saga.id": run.state.saga_id,
        }
        if step is not None:
            attributes["saga.step"] = step
        return active.span(name, attributes=attributes)

    async def _run_step(self, run: SagaRun, name: str) -> None:
        with self._span(f"saga.step {name}", run, name) as span:
            await self._run_step_traced(run, name)
            if span is not None:
                view = run.state.steps[name]
                span.set_attribute("saga.step_status", view.status.value)
                if view.agent is not None:
                    span.set_attribute("agentmesh.peer", view.agent)

    async def _run_step_traced(self, run: SagaRun, name: str) -> None:
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

    async def _hand_off(self, run: SagaRun, step: SagaStep, agent: str, reason: str) -> bool:
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
        run: SagaRun,
        agent: str,
        step: SagaStep,
        kind: StepKind,
        request: StepRequest,
        forward_result: dict[str, Any] | None,
    ) -> StepOutcome:
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
                return StepOutcome(code=alarm.result(), detail="abandoned while in flight")
            answer = sending.result()
            return StepOutcome(reply=decode_reply(answer.body))
        except RequestTimeout:
            raise_if_cancelled()
            return StepOutcome(code="timeout", detail=f"no answer in {step.timeout_s}s")
        except NoResponders:
            return StepOutcome(code="no_responders", detail="the agent is not on the mesh")
        except RemoteError as exc:
            clean = exc.remote_code not in ("handler_error",)
            return StepOutcome(code="refused" if clean else "agent_error", detail=exc.remote_code)
        except InterceptorDenied as exc:
            return StepOutcome(code="denied_locally", detail=exc.denial_code)
        except CircuitOpen as exc:
            # Our own breaker on the agent is open: nothing was sent (a clean failure,
            # hand the step to a substitute). Further down the chain: the agent took the
            # request and a dependency of its failed, so the step may have run.
            if exc.depth <= 1:
                return StepOutcome(code="circuit_open", detail=f"retry at {exc.retry_at_ms}")
            return StepOutcome(code="agent_error", detail=f"circuit_open at {exc.root}")
        except (EnvelopeError, SagaError) as exc:
            return StepOutcome(code="bad_reply", detail=exc.code)
        except TransportError as exc:
            raise_if_cancelled()  # nats-py may turn a cancellation into a timeout
            return StepOutcome(code="transport", detail=exc.code)
        finally:
            if not sending.done():
                sending.cancel()
            waiting = self._inflight.get(agent)
            if waiting is not None:
                waiting.discard(alarm)
                if not waiting:
                    self._inflight.pop(agent, None)

    # -- compensation ------------------------------------------------------------------------

    async def _compensate(self, run: SagaRun, execution: Execution) -> None:
        with self._span(f"saga.compensate {execution.step}", run, execution.step) as span:
            await self._compensate_traced(run, execution)
            if span is not None:
                span.set_attribute("agentmesh.peer", execution.agent)
                done = run.state.execution(execution.step, execution.agent)
                if done is not None and done.compensation.value == "failed":
                    span.refuse("compensation_failed", f"{execution.step} at {execution.agent}")

    async def _compensate_traced(self, run: SagaRun, execution: Execution) -> None:
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
                outcome = StepOutcome(code=verdict.code, detail=verdict.reason)
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


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that a library turned into another error."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


__all__ = [
    "RETRYABLE",
    "STATUS_KINDS",
    "CoordinatorConfig",
    "CoordinatorCounters",
    "SagaRun",
    "StepDriver",
    "StepOutcome",
    "raise_if_cancelled",
]
