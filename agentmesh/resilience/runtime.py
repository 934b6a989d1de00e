"""A resilience document installed on one node: breakers, cascade detector, SLO tracker.

Install before ``node.start()`` (interceptors, like every check, are in place
before the node subscribes)::

    resilience = install_resilience(node, load_resilience("resilience.yaml"))
    async with node:
        ...
    resilience.breakers.snapshot(), resilience.slos.snapshot()

The cascade detector needs the breakers (they note which downstream call a
failing handler made): a document with ``cascade:`` and no ``breakers:`` gets
breakers with the default parameters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agentmesh.node.interceptors import Stage
from agentmesh.node.node import MeshNode
from agentmesh.resilience.breaker import BreakerConfig
from agentmesh.resilience.cascade import CascadeDetector, QuarantineCallback
from agentmesh.resilience.document import ResilienceDocument
from agentmesh.resilience.peers import PeerBreakers
from agentmesh.resilience.slo import SloTracker


@dataclass(frozen=True, slots=True)
class NodeResilience:
    """What :func:`install_resilience` put on the node (None: that section is off)."""

    breakers: PeerBreakers | None
    cascades: CascadeDetector | None
    slos: SloTracker | None


def install_resilience(
    node: MeshNode,
    document: ResilienceDocument,
    *,
    quarantine: QuarantineCallback | None = None,
    rng: random.Random | None = None,
) -> NodeResilience:
    """Install the document's sections on ``node`` (before it starts).

    Args:
        node: the node; its clock and audit sink are used.
        document: which parts, with which parameters.
        quarantine: ``async quarantine(did, reason)`` for ``cascade.action: quarantine``
            (an authority's kill switch; see :mod:`agentmesh.resilience.cascade`).
        rng: jitter of the breakers' cool-downs.
    """
    breakers: PeerBreakers | None = None
    if document.breakers is not None or document.cascade is not None:
        breakers = PeerBreakers(document.breakers or BreakerConfig(), rng=rng)
        breakers.install(node)
    cascades: CascadeDetector | None = None
    if document.cascade is not None:
        cascades = CascadeDetector(document.cascade, quarantine=quarantine)
        cascades.adopt(node=node.did, audit=node.audit, clock=node.clock)
        node.add_interceptor(cascades, stage=Stage.SAGA)
    slos: SloTracker | None = None
    if document.slos:
        slos = SloTracker(document.slos, clock=node.clock)
        node.add_interceptor(slos, stage=Stage.SAGA)
    return NodeResilience(breakers=breakers, cascades=cascades, slos=slos)


__all__ = ["NodeResilience", "install_resilience"]
