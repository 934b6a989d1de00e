"""Errors of the saga layer, rooted at :class:`agentmesh.errors.MeshError`::

    MeshError
    └── SagaError                       saga_error
        ├── SagaDefinitionError         saga_invalid_definition  (a definition failed validation)
        ├── SagaNotFound                saga_not_found           (no log for this saga id)
        ├── SagaLogCorrupt              saga_log_corrupt         (a record failed to decode)
        ├── IllegalTransition           saga_illegal_transition  (a record does not follow)
        ├── SagaOwnershipLost           saga_ownership_lost      (another replica owns the saga)
        ├── NoSubstitute                saga_no_substitute       (handoff found nobody eligible)
        ├── StepMessageError            saga_bad_step_message    (a step request/reply is malformed)
        ├── IdempotencyStoreUnavailable saga_idempotency_store_unavailable
        │                                                        (the agent's idempotency store
        │                                                         failed past its retry bound;
        │                                                         fields key, seconds)
        └── StepActionFailed            saga_step_failed         (an action's business failure;
                                                                  field reason_code)

Every error carries ``saga_id`` when it is about one saga (``None`` otherwise).
"""

from __future__ import annotations

from agentmesh.errors import MeshError


class SagaError(MeshError):
    """A failure of the saga layer."""

    code = "saga_error"

    def __init__(self, message: str, *, saga_id: str | None = None) -> None:
        super().__init__(message)
        self.saga_id = saga_id


class SagaDefinitionError(SagaError):
    code = "saga_invalid_definition"


class SagaNotFound(SagaError):
    code = "saga_not_found"


class SagaLogCorrupt(SagaError):
    code = "saga_log_corrupt"


class IllegalTransition(SagaError):
    code = "saga_illegal_transition"


class SagaOwnershipLost(SagaError):
    code = "saga_ownership_lost"


class NoSubstitute(SagaError):
    """No agent with the step's capability passes the trust, ring and policy checks."""

    code = "saga_no_substitute"

    def __init__(self, message: str, *, saga_id: str | None = None, step: str = "") -> None:
        super().__init__(message, saga_id=saga_id)
        self.step = step


class StepMessageError(SagaError):
    code = "saga_bad_step_message"


class IdempotencyStoreUnavailable(SagaError):
    """The agent's idempotency store stayed unavailable past the executor's retry bound.

    Raised (and answered, audited and counted by the executor) instead of the
    store's own timeout, so the caller learns which record could not be written
    and for how long it was retried.
    """

    code = "saga_idempotency_store_unavailable"

    def __init__(self, message: str, *, key: str, seconds: float) -> None:
        super().__init__(message)
        self.key = key
        self.seconds = seconds


class StepActionFailed(SagaError):
    """Raise from a step action to fail the step on purpose (e.g. payment declined).

    The coordinator then compensates the saga; ``reason_code`` travels to its log.
    """

    code = "saga_step_failed"

    def __init__(self, message: str, *, reason_code: str = "declined") -> None:
        super().__init__(message)
        self.reason_code = reason_code


__all__ = [
    "IdempotencyStoreUnavailable",
    "IllegalTransition",
    "NoSubstitute",
    "SagaDefinitionError",
    "SagaError",
    "SagaLogCorrupt",
    "SagaNotFound",
    "SagaOwnershipLost",
    "StepActionFailed",
    "StepMessageError",
]
