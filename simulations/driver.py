"""One scenario run, round by round, on a fidelity backend (model or mesh).

Each round, in a seeded order, every live agent asks ``requests_per_round``
providers for service. With trust on, it picks among the reachable agents with
the EigenTrust paper's source selection (``simulations.eigentrust.choose_provider``:
skip the ones known to be bad, explore newcomers, else proportional to global
trust) and never picks a contained one; with trust off, uniformly. The provider's
behaviour decides how it serves, the requester's how it reports, and each
behaviour's extras run (fabricated receipts, floods, probes, forgeries, a new
identity). The backend carries all of it: pure function calls and the trust
engine (model fidelity) or real nodes, envelopes, receipts, policy and kill
switch (mesh fidelity). At the end of each round the backend recomputes trust
and the recorder notes who is contained.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from iatp.identity import AgentIdentity
from simulations.behaviours import (
    Action,
    Behaviour,
    Context,
    Endorse,
    Serve,
    Whitewash,
    make_behaviour,
)
from simulations.eigentrust import Setup, choose_provider
from simulations.metrics import Recorder
from simulations.spec import Param, ScenarioSpec
from trust import Outcome, TrustEngine


@dataclass
class SimAgent:
    """One simulated agent: its behaviour and its current identity."""

    index: int
    kind: str
    behaviour: Behaviour
    identity: AgentIdentity
    pre_trusted: bool = False
    generation: int = 0
    crashed: bool = False
    past_dids: list[str] = field(default_factory=list)

    @property
    def did(self) -> str:
        return self.identity.did

    @property
    def rogue(self) -> bool:
        return self.behaviour.rogue


def identity_for(seed: int, index: int, generation: int) -> AgentIdentity:
    """The same DID for the same (seed, agent, generation): runs are reproducible."""
    material = seed.to_bytes(8, "big", signed=True) + index.to_bytes(8, "big")
    return AgentIdentity.from_seed(material + generation.to_bytes(16, "big"))


def populate(spec: ScenarioSpec) -> list[SimAgent]:
    """Honest agents first (the first ``pre_trusted`` anchor trust), then each behaviour."""
    agents: list[SimAgent] = []
    kinds: list[tuple[str, Mapping[str, Param], int]] = [("honest", {}, spec.honest)]
    kinds += [(b.kind, b.params, b.count) for b in spec.behaviours]
    for kind, params, count in kinds:
        for _ in range(count):
            index = len(agents)
            agents.append(
                SimAgent(
                    index,
                    kind,
                    make_behaviour(kind, params, spec.honest_failure),
                    identity_for(spec.seed, index, 0),
                    pre_trusted=kind == "honest" and index < spec.pre_trusted,
                )
            )
    return agents


@dataclass(frozen=True, slots=True)
class Served:
    """What came back to the requester: the service, or a refusal/loss code."""

    serve: Serve
    code: str | None = None


class Backend(Protocol):
    """A fidelity: how interactions, receipts and extras happen."""

    engine: TrustEngine
    use_trust: bool

    async def request(self, round_no: int, requester: SimAgent, provider: SimAgent) -> Served: ...

    async def report(self, observer: SimAgent, subject: SimAgent, outcome: Outcome) -> None: ...

    async def act(self, round_no: int, agent: SimAgent, action: Action) -> list[str]: ...

    async def whitewash(self, agent: SimAgent) -> None: ...

    async def sagas(
        self, round_no: int, coordinator: SimAgent, teams: list[list[SimAgent]]
    ) -> tuple[list[str], list[tuple[SimAgent, bool]]]:
        """Run one saga per team; (statuses, (agent, ok) of every step action)."""
        ...

    async def end_round(self, round_no: int) -> None: ...

    def contained(self, agent: SimAgent) -> bool: ...

    def reachable(self, round_no: int, a: SimAgent, b: SimAgent) -> bool: ...


@dataclass
class Driver:
    """Runs ``spec`` on ``backend`` (see the module docstring)."""

    spec: ScenarioSpec
    backend: Backend
    agents: Sequence[SimAgent]
    use_trust: bool = True
    on_round: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.spec.seed * 7919 + (1 if self.use_trust else 0))
        self.recorder = Recorder(self.spec.rounds, self.spec.warmup)
        self.recorder.rogues = {a.index for a in self.agents if a.rogue}
        self.recorder.honest = {a.index for a in self.agents if not a.rogue}
        self.groups: dict[str, list[int]] = {}
        for agent in self.agents:
            self.groups.setdefault(agent.kind, []).append(agent.index)
        self.honest = [a.index for a in self.agents if a.kind == "honest"]
        self.setup = Setup(explore=self.spec.explore)
        # Without trust the backend's authority does not quarantine on the engine's say either.
        self.backend.use_trust = self.use_trust
        self.dids = [a.did for a in self.agents]
        self._contained: set[int] = set()

    def _context(self, round_no: int, me: int) -> Context:
        return Context(
            round_no,
            self.rng,
            me,
            self.honest,
            self.groups,
            contained=lambda agent: self.backend.contained(self.agents[agent]),
        )

    def choose(self, round_no: int, requester: SimAgent) -> SimAgent | None:
        """Among ``candidates`` random responders, the one the requester picks (or None)."""
        everyone = len(self.agents)
        draw = self.rng.random
        faulty = bool(self.spec.faults)
        pool: Iterable[int] = (
            range(everyone)
            if self.spec.candidates + 1 >= everyone
            # with replacement (cheaper than sample on large meshes): duplicates go below
            else dict.fromkeys(int(draw() * everyone) for _ in range(self.spec.candidates + 1))
        )
        candidates = [
            a.index
            for a in (self.agents[i] for i in pool)
            if a.index != requester.index
            and not a.crashed
            and (not faulty or self.backend.reachable(round_no, requester, a))
            and not (self.use_trust and a.index in self._contained)
        ][: self.spec.candidates]
        if not candidates:
            return None
        if not self.use_trust:
            return self.agents[self.rng.choice(candidates)]
        picked = choose_provider(
            requester.did, candidates, self.dids, self.backend.engine, self.setup, self.rng
        )
        return None if picked is None else self.agents[picked]

    async def run(self) -> Recorder:
        for round_no in range(self.spec.rounds):
            await self.round(round_no)
            if self.on_round is not None:
                self.on_round(round_no)
        return self.recorder

    async def round(self, round_no: int) -> None:
        stats = self.recorder.start_round()
        # Containment verdicts are taken once per round (trust is recomputed as receipts come).
        self._contained = {a.index for a in self.agents if self.backend.contained(a)}
        order = list(self.agents)
        self.rng.shuffle(order)
        for requester in order:
            if requester.crashed:
                continue
            for _ in range(self.spec.requests_per_round):
                await self._interact(round_no, requester)
        for agent in order:
            if not agent.crashed:
                for action in agent.behaviour.extras(self._context(round_no, agent.index)):
                    await self._act(round_no, agent, action)
        if self.spec.sagas_per_round:
            await self._sagas(round_no)
        await self.backend.end_round(round_no)
        engine = self.backend.engine
        for agent in self.agents:
            contained = self.backend.contained(agent)
            self.recorder.containment(round_no, agent.index, contained)
            score = engine.score(agent.did)
            if agent.rogue:
                stats.rogue_trust += score
                stats.contained_rogues += contained
            else:
                stats.honest_trust += score

    async def _sagas(self, round_no: int) -> None:
        coordinator = self.agents[0]  # an honest, pre-trusted agent runs the orders
        teams = []
        for _ in range(self.spec.sagas_per_round):
            team: list[SimAgent] = []
            for _ in range(8):
                picked = self.choose(round_no, coordinator)
                if picked is not None and picked not in team:
                    team.append(picked)
                if len(team) == 3:
                    break
            if len(team) >= 2:
                teams.append(team)
        statuses, steps = await self.backend.sagas(round_no, coordinator, teams)
        for status in statuses:
            self.recorder.sagas[status] += 1
        for agent, ok in steps:
            self.recorder.interaction(round_no, coordinator.index, agent.index, not ok)
            outcome = Outcome.SUCCESS if ok else Outcome.FAILURE
            await self.backend.report(coordinator, agent, outcome)

    async def _interact(self, round_no: int, requester: SimAgent) -> None:
        provider = self.choose(round_no, requester)
        if provider is None:
            # No reachable candidate, or the selection policy declined them all.
            self.recorder.extra["declined"] = self.recorder.extra.get("declined", 0) + 1
            return
        served = await self.backend.request(round_no, requester, provider)
        self.recorder.messages += 1
        if served.code is not None:
            self.recorder.rejected[served.code] += 1
        self.recorder.interaction(
            round_no, requester.index, provider.index, served.serve is Serve.BAD
        )
        outcome = requester.behaviour.report(
            self._context(round_no, requester.index), provider.index, served.serve
        )
        if outcome is not None and served.code not in ("quarantined", "revoked"):
            await self.backend.report(requester, provider, outcome)

    async def _act(self, round_no: int, agent: SimAgent, action: Action) -> None:
        if isinstance(action, Endorse):
            subject = self.agents[action.subject]
            if subject.index != agent.index:
                await self.backend.report(agent, subject, action.outcome)
            return
        if isinstance(action, Whitewash):
            agent.past_dids.append(agent.did)
            agent.generation += 1
            agent.identity = identity_for(self.spec.seed, agent.index, agent.generation)
            self.dids[agent.index] = agent.did
            self._contained.discard(agent.index)
            await self.backend.whitewash(agent)
            self.recorder.event(round_no, "whitewash", agent=agent.index, did=agent.did)
            return
        for code in await self.backend.act(round_no, agent, action):
            if code == "forgery_accepted":
                self.recorder.forgeries_accepted += 1
            elif code == "executed":
                self.recorder.tool_calls["executed"] += 1
            elif code.startswith("tool:"):
                self.recorder.tool_calls[code[5:]] += 1
                self.recorder.rejected[code[5:]] += 1
            else:
                self.recorder.rejected[code] += 1


__all__ = ["Backend", "Driver", "Served", "SimAgent", "identity_for", "populate"]
