"""Model fidelity: the same behaviours and the same trust engine, without envelopes.

Receipts go straight into a :class:`trust.TrustEngine` on a virtual clock; tool
probes go through the real policy governor (policy engine, egress guard, rate
limits, budgets); floods through a real token bucket per target. What only the
mesh can show is not pretended here: forged and replayed envelopes are counted
under ``model:not_modelled``, and latency, duplication, reordering and clock skew
have no effect (loss, partitions and crashes do).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from agentmesh.policy.decision import DecisionRequest
from agentmesh.policy.egress import EgressGuard
from agentmesh.policy.engine import CompiledPolicy
from agentmesh.policy.errors import PolicyDenied
from agentmesh.policy.governance import Governance
from agentmesh.policy.governor import Usage
from agentmesh.policy.ratelimit import TokenBucket
from iatp.clock import ManualClock
from simulations.behaviours import Action, Context, Flood, Forge, Probe, Serve
from simulations.driver import Driver, Served, SimAgent
from simulations.faults import FaultPlan
from simulations.sagas import model_saga
from simulations.spec import ScenarioSpec
from trust import Outcome, Receipt, TrustEngine

DEFAULT_POLICY = Path(__file__).resolve().parent / "policy.yaml"
START_MS = 1_700_000_000_000
ROUND_MS = 60_000


def load_policy(spec: ScenarioSpec) -> CompiledPolicy:
    return CompiledPolicy.from_file(Path(spec.policy) if spec.policy else DEFAULT_POLICY)


def no_resolver(host: str) -> list[str]:
    """Simulations never touch DNS: a name is refused as unresolvable."""
    raise OSError(f"simulations do not resolve {host}")


class ModelBackend:
    """Pure-function interactions on one trust engine (see the module docstring)."""

    def __init__(self, spec: ScenarioSpec, agents: list[SimAgent]) -> None:
        self.spec = spec
        self.agents = agents
        self.clock = ManualClock(START_MS)
        self.engine = TrustEngine(
            pre_trusted=[a.did for a in agents if a.pre_trusted], clock=self.clock
        )
        self.faults = FaultPlan(spec.faults, agents, spec.seed)
        self.governance = Governance(
            load_policy(spec), egress=EgressGuard(resolver=no_resolver), clock=self.clock
        )
        self.quarantined: set[str] = set()
        self.buckets: dict[int, TokenBucket] = {}
        self.receipts = 0
        self.rng = random.Random(spec.seed)
        self.driver: Driver | None = None
        self.use_trust = True
        self.codes: Counter[str] = Counter()

    def bind(self, driver: Driver) -> None:
        self.driver = driver

    def _context(self, round_no: int, me: int) -> Context:
        assert self.driver is not None
        return self.driver._context(round_no, me)

    async def request(self, round_no: int, requester: SimAgent, provider: SimAgent) -> Served:
        if self.faults.lost(round_no):
            return Served(Serve.SILENT, "lost")
        serve = provider.behaviour.serve(self._context(round_no, provider.index), requester.index)
        return Served(serve)

    async def report(self, observer: SimAgent, subject: SimAgent, outcome: Outcome) -> None:
        self.receipts += 1
        # Receipt.create would hash a canonical body for the id; a counter is unique here.
        interaction = f"sim-{self.receipts}"
        self.engine.record(
            Receipt(
                interaction, observer.did, subject.did, interaction, outcome, self.clock.now_ms()
            )
        )
        self.clock.advance(1)
        if self.receipts % self.spec.recompute_every == 0:
            self.engine.recompute()

    async def act(self, round_no: int, agent: SimAgent, action: Action) -> list[str]:
        if isinstance(action, Probe):
            return [self.probe(agent, action)]
        if isinstance(action, Flood):
            return self.flood(action)
        if isinstance(action, Forge):
            return ["model:not_modelled"]
        return []

    def probe(self, agent: SimAgent, probe: Probe) -> str:
        request = DecisionRequest(probe.tool, kind="tool", peer=agent.did)
        usage = Usage(cost=probe.cost, urls=(probe.url,) if probe.url else ())
        try:
            self.governance.governor.authorize(request, usage, record=False)
        except PolicyDenied as denied:
            return f"tool:{denied.code}"
        return "executed"

    def flood(self, flood: Flood) -> list[str]:
        now = self.clock.now_ms() / 1000
        bucket = self.buckets.setdefault(flood.target, TokenBucket(20.0, 20, now))
        return [
            "flood_served" if bucket.take(now) == 0 else "rate_limited" for _ in range(flood.count)
        ]

    async def sagas(
        self, round_no: int, coordinator: SimAgent, teams: list[list[SimAgent]]
    ) -> tuple[list[str], list[tuple[SimAgent, bool]]]:
        statuses: list[str] = []
        steps: list[tuple[SimAgent, bool]] = []
        for team in teams:
            status, outcomes = model_saga(team, lambda me: self._context(round_no, me))
            statuses.append(status)
            steps += outcomes
        return statuses, steps

    async def whitewash(self, agent: SimAgent) -> None:
        return None  # a fresh DID is simply unknown to the engine

    async def end_round(self, round_no: int) -> None:
        self.clock.advance(ROUND_MS)
        # A round's receipts number about the population: recompute_every spans rounds.
        if round_no % max(1, self.spec.recompute_every // len(self.agents)) != 0:
            self.faults.crash_round(round_no)
            return
        self.engine.recompute()
        for agent in self.agents:
            if self.use_trust and sheriff_quarantines(self.engine, agent.did):
                self.quarantined.add(agent.did)
        self.faults.crash_round(round_no)

    def contained(self, agent: SimAgent) -> bool:
        return agent.did in self.quarantined or distrusted(self.engine, agent.did)

    def reachable(self, round_no: int, a: SimAgent, b: SimAgent) -> bool:
        return self.faults.reachable(round_no, a.index, b.index)


MIN_DISTRUST = 2.0
"""Credible negative evidence (failure units) below which no one is called a rogue."""


def sheriff_quarantines(engine: TrustEngine, did: str) -> bool:
    """The simulation's authority quarantines an agent whose drift was detected *and* whom
    the evidence distrusts (a drift flag alone, e.g. raised by slander, is not enough)."""
    return engine.flagged(did) and distrusted(engine, did)


def distrusted(engine: TrustEngine, did: str) -> bool:
    """Demoted to ring 3 with more credible bad than good evidence, and enough of it."""
    if engine.ring(did) != 3:
        return False
    positive, negative = engine.credible_evidence(did)
    return negative >= MIN_DISTRUST and negative > positive


__all__ = ["ModelBackend", "distrusted", "load_policy", "sheriff_quarantines"]
