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
from typing import Any

from agentmesh.audit import AuditSink
from agentmesh.errors import (
    TransportError,
)
from agentmesh.node.node import MeshNode
from agentmesh.saga.definition import SagaDefinition, validate_token
from agentmesh.saga.driver import (
    CoordinatorConfig,
    CoordinatorCounters,
    SagaRun,
    StepDriver,
    raise_if_cancelled,
)
from agentmesh.saga.errors import SagaError, SagaNotFound, SagaOwnershipLost
from agentmesh.saga.guard import (
    AllowAllGuard,
    InFlightAlarm,
    StaticDirectory,
    StepGuard,
    SubstituteFinder,
)
from agentmesh.saga.log import SagaLog
from agentmesh.saga.records import RecordKind, SagaRecord
from agentmesh.saga.state import (
    BeginCompensation,
    Compensate,
    Finish,
    RunSteps,
    SagaState,
)

logger = logging.getLogger(__name__)


class SagaCoordinator(StepDriver):
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
    def busy(self) -> bool:
        """Whether this replica is driving any saga right now."""
        return bool(self._active)

    @property
    def driving(self) -> int:
        """How many sagas this replica is driving right now."""
        return len(self._active)

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
        run = SagaRun(SagaState.fold(saga_id, records), lease)
        self.counters.resumed += 1
        if run.state.status.terminal and records:
            # It ended, but the index missed the news (say its bucket was electing a
            # leader): repair the index and the active set instead of driving it again.
            await self.log.record_status(run.state, records[-1].seq, self.did)
            self._audit(saga_id, "index_repaired", None, run.state.status.value)
            return run.state
        self._audit(saga_id, "resumed", None, f"{len(records)} records")
        try:
            async with asyncio.TaskGroup() as group:
                keeper = group.create_task(self._keep_lease(run))
                if not run.state.started:
                    await self._append(
                        run, RecordKind.SAGA_STARTED, definition=definition, name=name
                    )
                with self._span(f"saga.run {name}", run) as span:
                    await self._drive(run)
                    if span is not None:
                        span.set_attribute("saga.name", name)
                        span.set_attribute("saga.status", run.state.status.value)
                        if run.state.status.value != "completed":
                            span.refuse(run.state.status.value, f"saga {saga_id} did not complete")
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
                    raise_if_cancelled()
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

    async def _keep_lease(self, run: SagaRun) -> None:
        while True:
            await asyncio.sleep(self.config.lease_ttl / 3)
            run.lease = await self.log.renew(run.lease, ttl=self.config.lease_ttl)
            # Only a cancellation stops this loop, and a store call may lose one
            # (asyncio.wait_for on 3.11 when the reply lands with it): the saga's
            # task group then waited for the keeper forever.
            raise_if_cancelled()

    async def _drive(self, run: SagaRun) -> None:
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

    async def _finish(self, run: SagaRun, kind: RecordKind) -> None:
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


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf exception of a (nested) task-group error."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


__all__ = ["CoordinatorConfig", "CoordinatorCounters", "SagaCoordinator", "SagaNotFound"]
