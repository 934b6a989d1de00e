"""Saga definitions: what users write (pydantic v2, validated at load time).

A saga is an ordered list of entries; each entry is one :class:`SagaStep` or a
:class:`ParallelGroup` of steps that run at the same time. A step names either a
``capability`` (any eligible agent offering it; handoff possible) or a specific
``agent`` DID (optionally with a capability too, which makes handoff possible).

Example (YAML or JSON, loaded with :meth:`SagaDefinition.model_validate`)::

    name: order
    steps:
      - name: reserve
        capability: inventory.v1
        request: {action: inventory.reserve, params: {sku: A1, qty: 2}}
        compensation: {action: inventory.release}
      - name: charge
        capability: payment.v1
        request: {action: payment.charge, params: {amount: 20}}
        compensation: {action: payment.refund}
        required_ring: 1
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from agentmesh.saga.errors import SagaDefinitionError

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""Saga ids, saga names and step names: safe as subject tokens and KV keys."""

_NAME = re.compile(NAME_PATTERN)


def validate_token(value: str, *, what: str) -> str:
    """Check ``value`` is a name token (``[A-Za-z0-9_-]{1,64}``).

    Raises:
        SagaDefinitionError: it is not.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise SagaDefinitionError(f"{what} must match {NAME_PATTERN}, got {value!r}")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Model):
    """How often an unanswered request is sent again before handoff or failure.

    Only *transport* failures (timeout, no responders) are retried: a step the agent
    answered as failed is a business failure and is never retried. Compensations
    use the same policy; when the last attempt fails the saga needs attention.
    """

    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    backoff_s: Annotated[float, Field(ge=0, le=60)] = 0.05
    multiplier: Annotated[float, Field(ge=1, le=10)] = 2.0
    max_backoff_s: Annotated[float, Field(ge=0, le=300)] = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` starts at 1)."""
        return float(min(self.max_backoff_s, self.backoff_s * self.multiplier ** (attempt - 1)))


class StepRequest(_Model):
    """One action on an agent: ``action`` is the agent's handler name."""

    action: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
    params: dict[str, JsonValue] = Field(default_factory=dict)


class SagaStep(_Model):
    """One step: a forward request, its compensation, and how to run it.

    Attributes:
        name: unique within the saga.
        capability: any eligible agent offering this capability may run the step.
        agent: a specific agent DID (tried first; handoff needs ``capability``).
        request: the forward action.
        compensation: the action that undoes it; ``None`` means nothing to undo.
        timeout_s: per attempt.
        retry: transport retries (see :class:`RetryPolicy`).
        idempotency_key: the agent-side de-duplication key; defaults to
            ``<saga id>.<step name>`` (the same on every replica and every retry).
        required_ring: the least privileged ring allowed to run it (0..3; lower is
            more privileged): an agent whose ring is *above* this number is refused.
    """

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    capability: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    agent: Annotated[str, Field(pattern=r"^did:key:z[1-9A-HJ-NP-Za-km-z]+$")] | None = None
    request: StepRequest
    compensation: StepRequest | None = None
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    required_ring: Annotated[int, Field(ge=0, le=3)] = 2

    @model_validator(mode="after")
    def _names_a_target(self) -> Self:
        if self.capability is None and self.agent is None:
            raise ValueError(f"step {self.name!r} names neither a capability nor an agent")
        return self

    def key_for(self, saga_id: str) -> str:
        """The idempotency key this step uses in saga ``saga_id``."""
        return self.idempotency_key or f"{saga_id}.{self.name}"


class ParallelGroup(_Model):
    """Steps that start together; the group completes when all of them have."""

    parallel: Annotated[list[SagaStep], Field(min_length=1, max_length=64)]


class SagaDefinition(_Model):
    """A named, ordered list of steps and parallel groups."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    steps: Annotated[list[SagaStep | ParallelGroup], Field(min_length=1, max_length=256)]

    @model_validator(mode="after")
    def _unique_step_names(self) -> Self:
        seen: set[str] = set()
        for step in self.all_steps():
            if step.name in seen:
                raise ValueError(f"step name {step.name!r} is used twice")
            seen.add(step.name)
        return self

    def groups(self) -> list[list[SagaStep]]:
        """The entries as groups: a single step is a group of one."""
        return [
            list(entry.parallel) if isinstance(entry, ParallelGroup) else [entry]
            for entry in self.steps
        ]

    def all_steps(self) -> list[SagaStep]:
        return [step for group in self.groups() for step in group]

    def step(self, name: str) -> SagaStep:
        """Raises: SagaDefinitionError: no step of that name."""
        for step in self.all_steps():
            if step.name == name:
                return step
        raise SagaDefinitionError(f"saga {self.name!r} has no step {name!r}")

    @classmethod
    def load(cls, data: Any) -> SagaDefinition:
        """Validate ``data`` (a dict, e.g. parsed YAML/JSON) into a definition.

        Raises:
            SagaDefinitionError: with pydantic's explanation of what is wrong.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SagaDefinitionError(f"invalid saga definition: {exc}") from exc


__all__ = [
    "NAME_PATTERN",
    "ParallelGroup",
    "RetryPolicy",
    "SagaDefinition",
    "SagaStep",
    "StepRequest",
    "validate_token",
]
