"""Resilience of a node (agent SRE, OWASP ASI-08): circuit breakers, cascades, SLOs.

* :class:`PeerBreakers`: a circuit breaker per peer around ``node.request``;
  an open circuit fails fast with :class:`~agentmesh.errors.CircuitOpen`.
* :class:`CascadeDetector`: handler failures attributed to a failing downstream
  agent; an event (and, by the document's ``action``, a quarantine request) when
  they spread to several callers or along a long chain.
* :class:`SloTracker`: per-capability success-rate and latency objectives, with
  error budget and burn rates.

Each has a plain-dataclass ``snapshot()`` for metrics and dashboards; this
package itself imports no metrics or tracing library. See docs/resilience.md.
"""

from agentmesh.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Permit,
    Transition,
)
from agentmesh.resilience.cascade import (
    CascadeConfig,
    CascadeDetector,
    CascadeEvent,
    QuarantineCallback,
)
from agentmesh.resilience.document import (
    ResilienceDocument,
    load_resilience,
    parse_resilience,
)
from agentmesh.resilience.failures import (
    DEPENDENCY_REASONS,
    FAILURE_CODES,
    Attribution,
    CallResult,
    attribute,
    classify,
)
from agentmesh.resilience.peers import BreakerSnapshot, PeerBreakers
from agentmesh.resilience.runtime import NodeResilience, install_resilience
from agentmesh.resilience.slo import (
    LatencyObjective,
    SloSnapshot,
    SloSpec,
    SloTracker,
    budget_remaining,
    burn_rate,
)

__all__ = [
    "DEPENDENCY_REASONS",
    "FAILURE_CODES",
    "Attribution",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "CallResult",
    "CascadeConfig",
    "CascadeDetector",
    "CascadeEvent",
    "CircuitBreaker",
    "LatencyObjective",
    "NodeResilience",
    "PeerBreakers",
    "Permit",
    "QuarantineCallback",
    "ResilienceDocument",
    "SloSnapshot",
    "SloSpec",
    "SloTracker",
    "Transition",
    "attribute",
    "budget_remaining",
    "burn_rate",
    "classify",
    "install_resilience",
    "load_resilience",
    "parse_resilience",
]
