"""Export of the trust graph to networkx (analysis, plots); never on the hot path."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import networkx as nx

from trust.edges import LocalTrust


class TrustGraphSource(Protocol):
    """What the export reads (a :class:`~trust.engine.TrustEngine` fits; no import cycle)."""

    @property
    def agents(self) -> list[str]: ...

    @property
    def pre_trusted(self) -> frozenset[str]: ...

    def score(self, did: str) -> float: ...

    def ring(self, did: str) -> int: ...

    def local_trust_edges(self, *, at_ms: int | None = None) -> Iterable[LocalTrust]: ...


def to_networkx(engine: TrustGraphSource, *, at_ms: int | None = None) -> nx.DiGraph:
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
