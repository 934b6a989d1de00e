"""Export of the trust graph to networkx (analysis, plots); never on the hot path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import networkx as nx

if TYPE_CHECKING:
    from trust.engine import TrustEngine


def to_networkx(engine: TrustEngine, *, at_ms: int | None = None) -> nx.DiGraph:
    """The engine's trust graph as a networkx ``DiGraph``.

    Nodes carry ``score``, ``ring`` and ``pre_trusted``; edges carry the observer's
    local trust decayed to ``at_ms`` (default: the engine clock): ``estimate``,
    ``evidence``, ``positive`` and ``negative``.
    """
    graph = nx.DiGraph()
    anchors = engine.pre_trusted
    for did in engine.agents:
        graph.add_node(
            did, score=engine.score(did), ring=engine.ring(did), pre_trusted=did in anchors
        )
    for local in engine.local_trust_edges(at_ms=at_ms):
        graph.add_edge(
            local.observer,
            local.subject,
            estimate=local.estimate,
            evidence=local.evidence,
            positive=local.positive,
            negative=local.negative,
        )
    return graph
