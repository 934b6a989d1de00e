"""The saga state machine, kept pure: records in, state and the next action out.

:meth:`SagaState.validate` says whether a record may follow (raising
:class:`IllegalTransition` otherwise) without changing anything, and
:meth:`SagaState.apply` folds it in. :meth:`SagaState.plan` names what the
coordinator must do next. No I/O, no clock, no asyncio: any replica that folds
the same log reaches the same state and the same plan.

Compensation targets are *executions*: a step that succeeded on an agent, or whose
outcome on an agent is in doubt (the agent timed out, was quarantined mid-flight,
or crashed mid-action). They are compensated strictly in reverse order of when
they were recorded; a compensation that still fails after its retries leaves the
saga in ``needs-attention``, never in ``compensated``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agentmesh.saga.definition import SagaDefinition, SagaStep
from agentmesh.saga.errors import IllegalTransition, SagaDefinitionError
from agentmesh.saga.records import RecordKind, SagaRecord


class SagaStatus(enum.StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    NEEDS_ATTENTION = "needs-attention"

    @property
    def terminal(self) -> bool:
        return self in (
            SagaStatus.COMPLETED,
            SagaStatus.COMPENSATED,
            SagaStatus.NEEDS_ATTENTION,
        )

    @classmethod
    def terminal_value(cls, value: str) -> bool:
        """Whether the status named ``value`` is terminal (unknown names are not)."""
        return value in {s.value for s in cls if s.terminal}


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class CompensationStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    NOT_NEEDED = "not-needed"


CLEAN_FAILURES = frozenset(
    {"no_responders", "refused", "denied_locally", "agent_ineligible", "circuit_open"}
)
"""Attempt failures that prove the agent did not run the action."""


@dataclass
class Execution:
    """An effect on one agent that compensation must undo (or prove absent)."""

    step: str
    agent: str
    in_doubt: bool
    result: dict[str, Any] | None
    compensation: CompensationStatus
    attempts: int = 0
    code: str = ""


@dataclass
class StepView:
    name: str
    status: StepStatus = StepStatus.PENDING
    agent: str | None = None
    attempts: dict[str, int] = field(default_factory=dict)
    clean_failures: dict[str, int] = field(default_factory=dict)
    tried: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None
    code: str = ""

    def in_doubt(self, agent: str) -> bool:
        """Whether ``agent`` may have run this step (a request was sent, no clean refusal)."""
        return self.attempts.get(agent, 0) > self.clean_failures.get(agent, 0)


@dataclass(frozen=True, slots=True)
class RunSteps:
    """Start (or resume) these steps of the current group, concurrently."""

    steps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BeginCompensation:
    step: str
    code: str


@dataclass(frozen=True, slots=True)
class Compensate:
    step: str
    agent: str


@dataclass(frozen=True, slots=True)
class Finish:
    kind: RecordKind


Action = RunSteps | BeginCompensation | Compensate | Finish


@dataclass
class SagaState:
    """Everything a replica knows about one saga, from its log alone."""

    saga_id: str
    definition: SagaDefinition | None = None
    status: SagaStatus = SagaStatus.RUNNING
    steps: dict[str, StepView] = field(default_factory=dict)
    executions: list[Execution] = field(default_factory=list)
    next_number: int = 1
    failed_step: str | None = None
    records: list[SagaRecord] = field(default_factory=list)
    fenced: int = 0
    rejected: list[str] = field(default_factory=list)

    @classmethod
    def fold(cls, saga_id: str, records: Iterable[SagaRecord]) -> SagaState:
        """The state after ``records`` (as read from the log, in stream order)."""
        state = cls(saga_id)
        for record in records:
            state.accept(record)
        return state

    def accept(self, record: SagaRecord) -> bool:
        """Apply a record read from the log; markers and fenced duplicates are kept aside.

        A record whose number was already applied lost a race between replicas
        (first stored wins); it is counted in ``fenced`` and otherwise ignored. A
        record that cannot follow (forged, or from a broken writer) is listed in
        ``rejected`` and ignored.
        """
        if record.kind is RecordKind.SAGA_RESUMED:
            self.records.append(record)
            return False
        if record.saga_id == self.saga_id and 0 < record.number < self.next_number:
            self.fenced += 1
            return False
        try:
            self.apply(record)
        except IllegalTransition as exc:
            # Not written by a well-behaved replica (one would not write it): keep it
            # out of the state rather than let one bad record brick the saga.
            self.rejected.append(f"seq {record.seq}: {exc}")
            return False
        return True

    # -- queries -----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self.definition is not None

    def _definition(self) -> SagaDefinition:
        if self.definition is None:
            raise IllegalTransition("the saga has not started", saga_id=self.saga_id)
        return self.definition

    def step_def(self, name: str) -> SagaStep:
        return self._definition().step(name)

    def current_group(self) -> list[str]:
        """Names of the first group that has not fully succeeded (empty when all have)."""
        for group in self._definition().groups():
            names = [s.name for s in group]
            if any(self.steps[n].status is not StepStatus.SUCCEEDED for n in names):
                return names
        return []

    def execution(self, step: str, agent: str) -> Execution | None:
        for execution in self.executions:
            if execution.step == step and execution.agent == agent:
                return execution
        return None

    def next_compensation(self) -> Execution | None:
        """The newest execution whose compensation is not settled (reverse order)."""
        for execution in reversed(self.executions):
            if execution.compensation in (CompensationStatus.PENDING, CompensationStatus.RUNNING):
                return execution
        return None

    def plan(self) -> Action | None:
        """What the coordinator must do next (``None`` once the saga has ended)."""
        if self.status.terminal or not self.started:
            return None
        if self.status is SagaStatus.COMPENSATING:
            target = self.next_compensation()
            if target is not None:
                return Compensate(target.step, target.agent)
            broken = any(e.compensation is CompensationStatus.FAILED for e in self.executions)
            return Finish(
                RecordKind.SAGA_NEEDS_ATTENTION if broken else RecordKind.SAGA_COMPENSATED
            )
        group = self.current_group()
        if not group:
            return Finish(RecordKind.SAGA_COMPLETED)
        views = [self.steps[n] for n in group]
        running = tuple(v.name for v in views if v.status is StepStatus.RUNNING)
        failed = [v for v in views if v.status is StepStatus.FAILED]
        if failed and not running:
            return BeginCompensation(failed[0].name, failed[0].code)
        if failed:
            return RunSteps(running)
        return RunSteps(tuple(v.name for v in views if v.status is not StepStatus.SUCCEEDED))

    # -- transitions -------------------------------------------------------------------------

    def _illegal(self, record: SagaRecord, why: str) -> IllegalTransition:
        return IllegalTransition(
            f"record {record.number} ({record.kind.value}) cannot follow: {why}",
            saga_id=self.saga_id,
        )

    def validate(self, record: SagaRecord) -> None:
        """Raise unless ``record`` may be the next record; changes nothing.

        Raises:
            IllegalTransition: it may not.
        """
        kind = record.kind
        if record.saga_id != self.saga_id:
            raise self._illegal(record, f"it belongs to saga {record.saga_id!r}")
        if record.number != self.next_number:
            raise self._illegal(record, f"the next record number is {self.next_number}")
        if kind is RecordKind.SAGA_STARTED:
            if self.started:
                raise self._illegal(record, "the saga has started already")
            try:
                SagaDefinition.load(record.data.get("definition"))
            except SagaDefinitionError as exc:
                raise self._illegal(record, str(exc)) from exc
            return
        if not self.started:
            raise self._illegal(record, "the saga has not started")
        if self.status.terminal:
            raise self._illegal(record, f"the saga has ended ({self.status.value})")
        if kind.value.startswith("step."):
            self._validate_step(record)
        elif kind.value.startswith("compensation."):
            self._validate_compensation(record)
        else:
            self._validate_saga(record)

    def _validate_step(self, record: SagaRecord) -> None:
        if self.status is not SagaStatus.RUNNING:
            raise self._illegal(record, "steps run only while the saga is running")
        if record.step not in self.steps:
            raise self._illegal(record, f"no step {record.step!r}")
        group = self.current_group()
        if record.step not in group:
            raise self._illegal(record, f"step {record.step!r} is not in the current group")
        view = self.steps[record.step]
        if record.kind is RecordKind.STEP_STARTED:
            if record.agent is None:
                raise self._illegal(record, "a start names its agent")
            if view.status is StepStatus.PENDING:
                if any(self.steps[n].status is StepStatus.FAILED for n in group):
                    raise self._illegal(record, "a sibling failed; no new steps start")
            elif view.status is not StepStatus.RUNNING:
                raise self._illegal(record, f"step is {view.status.value}")
            if view.agent not in (None, record.agent):
                raise self._illegal(record, "the step must be handed off before changing agent")
            if view.agent is None and record.agent in view.tried:
                raise self._illegal(record, "that agent was handed off already")
            if record.attempt != view.attempts.get(record.agent, 0) + 1:
                raise self._illegal(record, "attempts count up by one")
            return
        never_started = view.status is StepStatus.PENDING and view.agent is None
        if record.kind is RecordKind.STEP_FAILED and never_started:
            pass  # no eligible agent at all: the step fails without a start
        elif view.status is not StepStatus.RUNNING:
            raise self._illegal(record, f"step is {view.status.value}, not running")
        if record.agent != view.agent:
            raise self._illegal(record, "it names another agent than the running one")
        if record.kind in (RecordKind.STEP_ATTEMPT_FAILED, RecordKind.STEP_HANDOFF) and (
            record.agent is None
        ):
            raise self._illegal(record, "no agent is running the step")

    def _validate_compensation(self, record: SagaRecord) -> None:
        if self.status is not SagaStatus.COMPENSATING:
            raise self._illegal(record, "the saga is not compensating")
        target = self.next_compensation()
        if target is None or (target.step, target.agent) != (record.step, record.agent):
            raise self._illegal(record, "compensations run in reverse order")
        if record.kind is RecordKind.COMPENSATION_STARTED:
            if record.attempt != target.attempts + 1:
                raise self._illegal(record, "attempts count up by one")
        elif target.compensation is not CompensationStatus.RUNNING:
            raise self._illegal(record, "the compensation has not started")

    def _validate_saga(self, record: SagaRecord) -> None:
        expected = self.plan()
        ok = {
            RecordKind.SAGA_COMPENSATING: isinstance(expected, BeginCompensation)
            and expected.step == record.step,
            RecordKind.SAGA_COMPLETED: expected == Finish(RecordKind.SAGA_COMPLETED),
            RecordKind.SAGA_COMPENSATED: expected == Finish(RecordKind.SAGA_COMPENSATED),
            RecordKind.SAGA_NEEDS_ATTENTION: expected == Finish(RecordKind.SAGA_NEEDS_ATTENTION),
        }.get(record.kind, False)
        if not ok:
            raise self._illegal(record, f"the saga's next action is {expected}")

    def apply(self, record: SagaRecord) -> None:
        """Validate and fold in ``record``.

        Raises:
            IllegalTransition: it may not follow (nothing is changed then).
        """
        self.validate(record)
        self._mutate(record)

    def _mutate(self, record: SagaRecord) -> None:
        kind, data = record.kind, record.data
        self.records.append(record)
        self.next_number += 1
        if kind is RecordKind.SAGA_STARTED:
            self.definition = SagaDefinition.load(data["definition"])
            self.steps = {s.name: StepView(s.name) for s in self.definition.all_steps()}
            return
        if kind.value.startswith("step."):
            self._mutate_step(record)
        elif kind.value.startswith("compensation."):
            target = self.next_compensation()
            assert target is not None  # validated
            if kind is RecordKind.COMPENSATION_STARTED:
                target.compensation = CompensationStatus.RUNNING
                target.attempts = record.attempt
            elif kind is RecordKind.COMPENSATION_ATTEMPT_FAILED:
                target.code = record.code()
            elif kind is RecordKind.COMPENSATION_SUCCEEDED:
                target.compensation = CompensationStatus.DONE
            else:
                target.compensation = CompensationStatus.FAILED
                target.code = record.code()
        elif kind is RecordKind.SAGA_COMPENSATING:
            self.status = SagaStatus.COMPENSATING
            self.failed_step = record.step
        elif kind is RecordKind.SAGA_COMPLETED:
            self.status = SagaStatus.COMPLETED
        elif kind is RecordKind.SAGA_COMPENSATED:
            self.status = SagaStatus.COMPENSATED
        elif kind is RecordKind.SAGA_NEEDS_ATTENTION:
            self.status = SagaStatus.NEEDS_ATTENTION

    def _add_execution(self, step: str, agent: str, *, in_doubt: bool, result: Any) -> None:
        needed = self.step_def(step).compensation is not None
        self.executions.append(
            Execution(
                step,
                agent,
                in_doubt,
                result if isinstance(result, dict) else None,
                CompensationStatus.PENDING if needed else CompensationStatus.NOT_NEEDED,
            )
        )

    def _mutate_step(self, record: SagaRecord) -> None:
        assert record.step is not None
        view = self.steps[record.step]
        kind, agent = record.kind, record.agent
        if kind is RecordKind.STEP_STARTED:
            assert agent is not None
            view.status = StepStatus.RUNNING
            view.agent = agent
            view.attempts[agent] = record.attempt
        elif kind is RecordKind.STEP_ATTEMPT_FAILED:
            assert agent is not None
            view.code = record.code()
            if record.code() in CLEAN_FAILURES:
                view.clean_failures[agent] = view.clean_failures.get(agent, 0) + 1
        elif kind is RecordKind.STEP_HANDOFF:
            assert agent is not None
            view.tried.append(agent)
            view.agent = None
            if record.data.get("in_doubt"):
                self._add_execution(record.step, agent, in_doubt=True, result=None)
        elif kind is RecordKind.STEP_SUCCEEDED:
            assert agent is not None
            view.status = StepStatus.SUCCEEDED
            view.result = record.data.get("result")
            self._add_execution(record.step, agent, in_doubt=False, result=view.result)
        elif kind is RecordKind.STEP_FAILED:
            view.status = StepStatus.FAILED
            view.code = record.code()
            if agent is not None and record.data.get("in_doubt"):
                self._add_execution(record.step, agent, in_doubt=True, result=None)


__all__ = [
    "CLEAN_FAILURES",
    "Action",
    "BeginCompensation",
    "Compensate",
    "CompensationStatus",
    "Execution",
    "Finish",
    "RunSteps",
    "SagaState",
    "SagaStatus",
    "StepStatus",
    "StepView",
]
