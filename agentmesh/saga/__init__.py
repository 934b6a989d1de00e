"""Cross-agent sagas: durable log, compensation in reverse order, handoff, recovery.

See ``docs/sagas.md``. The pieces:

* :class:`SagaDefinition` (pydantic): ordered steps and parallel groups;
* :class:`SagaCoordinator`: drives sagas over the mesh from a :class:`SagaLog`
  (JetStream on NATS, the embedded stream otherwise), resumable by any replica;
* :class:`StepExecutor`: the agent side, running each action once per key;
* :class:`StepGuard` / :class:`SubstituteFinder` / :class:`InFlightAlarm`: seams to
  the directory, revocations, kill switch, rings, trust and policy;
* :class:`SagaState`: the pure state machine folded from the log.
"""

from agentmesh.saga.coordinator import CoordinatorConfig, CoordinatorCounters, SagaCoordinator
from agentmesh.saga.definition import (
    ParallelGroup,
    RetryPolicy,
    SagaDefinition,
    SagaStep,
    StepRequest,
)
from agentmesh.saga.errors import (
    IdempotencyStoreUnavailable,
    IllegalTransition,
    NoSubstitute,
    SagaDefinitionError,
    SagaError,
    SagaLogCorrupt,
    SagaNotFound,
    SagaOwnershipLost,
    StepActionFailed,
    StepMessageError,
)
from agentmesh.saga.executor import StepCall, StepExecutor
from agentmesh.saga.guard import (
    AllowAllGuard,
    EligibilityGuard,
    InFlightAlarm,
    StaticBlockList,
    StaticDirectory,
    StepGuard,
    SubstituteFinder,
)
from agentmesh.saga.log import SagaIndexEntry, SagaLog
from agentmesh.saga.records import RecordKind, SagaRecord
from agentmesh.saga.state import CompensationStatus, SagaState, SagaStatus, StepStatus

__all__ = [
    "AllowAllGuard",
    "CompensationStatus",
    "CoordinatorConfig",
    "CoordinatorCounters",
    "EligibilityGuard",
    "IdempotencyStoreUnavailable",
    "IllegalTransition",
    "InFlightAlarm",
    "NoSubstitute",
    "ParallelGroup",
    "RecordKind",
    "RetryPolicy",
    "SagaCoordinator",
    "SagaDefinition",
    "SagaDefinitionError",
    "SagaError",
    "SagaIndexEntry",
    "SagaLog",
    "SagaLogCorrupt",
    "SagaNotFound",
    "SagaOwnershipLost",
    "SagaRecord",
    "SagaState",
    "SagaStatus",
    "SagaStep",
    "StaticBlockList",
    "StaticDirectory",
    "StepActionFailed",
    "StepCall",
    "StepExecutor",
    "StepGuard",
    "StepMessageError",
    "StepRequest",
    "StepStatus",
    "SubstituteFinder",
]
