"""EigenTrust threat models A and B (Kamvar, Schlosser, Garcia-Molina, WWW 2003).

Each round every agent issues one query. Honest agents answer a query with
probability ``honest_response`` (they have the file), malicious agents with
``malicious_response`` (they claim everything), as in the paper, so malicious
responders crowd the candidate lists. As in the paper's simulation, an honest
requester repeats "pick a provider among the responders, download" until it holds
a good copy (each try is one interaction, and one receipt) or no acceptable
responder is left. A malicious requester downloads once per query.

The requester picks a provider (:func:`choose_provider`):

* without trust: uniformly among the responders not tried yet;
* with trust, the paper's probabilistic rule: responders the requester knows to be
  bad (its own experience, or credible reports) are skipped; with probability
  ``explore`` (10 % in the paper) it picks uniformly among the remaining responders
  with zero global trust, so newcomers can earn trust; otherwise proportionally to
  global trust among those with positive trust, or, if none of them answered,
  uniformly among the zero-trust ones.

Honest providers serve well with probability ``1 - honest_failure``; malicious ones
always serve badly. The requester then records a receipt about the provider:

* honest requesters report what happened;
* model A (independent malicious): malicious requesters report the opposite;
* model B (malicious collective): malicious requesters report success for any
  malicious provider and failure for any honest one, and every round each
  malicious agent also endorses ``collective_endorsements`` random members.

The engine recomputes after every ``recompute_every`` receipts (as ``MeshTrust`` does
with its receipt-count cadence) and at the end of each round. Reported: the
fraction of honest requesters' interactions that were bad (with a malicious
provider), over all rounds and after ``warmup``, and the share of honest queries
that ended without a good copy.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from simulations.population import World, agent_dids
from trust import Outcome, TrustEngine

MODELS = ("A", "B")


@dataclass(frozen=True)
class Setup:
    model: str = "A"
    malicious: float = 0.3
    agents: int = 100
    rounds: int = 60
    warmup: int = 15
    pre_trusted: int = 3
    honest_response: float = 0.1
    malicious_response: float = 0.5
    honest_failure: float = 0.05
    explore: float = 0.10
    collective_endorsements: int = 3
    recompute_every: int = 10
    use_trust: bool = True
    seed: int = 1


@dataclass(frozen=True)
class Result:
    setup: Setup
    bad_fraction: float
    bad_fraction_after_warmup: float
    honest_interactions: int
    unserved_fraction: float
    malicious_ring3: float
    honest_ring_le2: float


def run(setup: Setup, *, on_round: Callable[[int], None] | None = None) -> Result:
    """Run one seeded simulation; ``on_round(i)`` is called after each round."""
    if setup.model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}")
    rng = random.Random(setup.seed)
    dids = agent_dids(setup.agents, namespace=setup.seed)
    n_bad = round(setup.malicious * setup.agents)
    malicious = set(rng.sample(range(setup.pre_trusted, setup.agents), n_bad))
    world = World(pre_trusted=dids[: setup.pre_trusted])
    engine = world.engine
    tally = _Tally(setup.warmup)
    last_recompute = 0
    for round_no in range(setup.rounds):
        for requester in rng.sample(range(setup.agents), setup.agents):
            if setup.use_trust and world.issued - last_recompute >= setup.recompute_every:
                engine.recompute()
                last_recompute = world.issued
            responders = [
                a
                for a in range(setup.agents)
                if a != requester
                and rng.random()
                < (setup.malicious_response if a in malicious else setup.honest_response)
            ]
            if requester in malicious:
                if responders:
                    provider = rng.choice(responders)
                    bad = provider in malicious
                    served_badly = bad or rng.random() < setup.honest_failure
                    outcome = _report(setup.model, True, bad, served_badly)
                    world.report(dids[requester], dids[provider], outcome)
                continue
            _honest_query(
                requester, responders, malicious, dids, world, setup, rng, tally, round_no
            )
        if setup.model == "B":
            _collective_endorsements(world, dids, sorted(malicious), setup, rng)
        if setup.use_trust:
            engine.recompute()
        if on_round is not None:
            on_round(round_no)
    honest = [i for i in range(setup.agents) if i not in malicious]
    return Result(
        setup=setup,
        bad_fraction=tally.bad / max(tally.total, 1),
        bad_fraction_after_warmup=tally.bad_late / max(tally.total_late, 1),
        honest_interactions=tally.total,
        unserved_fraction=tally.unserved / max(tally.queries, 1),
        malicious_ring3=sum(engine.ring(dids[i]) == 3 for i in malicious) / max(len(malicious), 1),
        honest_ring_le2=sum(engine.ring(dids[i]) <= 2 for i in honest) / max(len(honest), 1),
    )


@dataclass
class _Tally:
    warmup: int
    bad: int = 0
    total: int = 0
    bad_late: int = 0
    total_late: int = 0
    queries: int = 0
    unserved: int = 0

    def interaction(self, round_no: int, inauthentic: bool) -> None:
        self.total += 1
        self.bad += inauthentic
        if round_no >= self.warmup:
            self.total_late += 1
            self.bad_late += inauthentic


def _honest_query(
    requester: int,
    responders: list[int],
    malicious: set[int],
    dids: Sequence[str],
    world: World,
    setup: Setup,
    rng: random.Random,
    tally: _Tally,
    round_no: int,
) -> None:
    """Select, download, report; again among the untried responders until a good copy."""
    tally.queries += 1
    untried = list(responders)
    while untried:
        if setup.use_trust:
            provider = choose_provider(dids[requester], untried, dids, world.engine, setup, rng)
        else:
            provider = rng.choice(untried)
        if provider is None:
            break
        untried.remove(provider)
        inauthentic = provider in malicious
        served_badly = inauthentic or rng.random() < setup.honest_failure
        tally.interaction(round_no, inauthentic)
        outcome = _report(setup.model, False, inauthentic, served_badly)
        world.report(dids[requester], dids[provider], outcome)
        if not served_badly:
            return
    tally.unserved += 1


def choose_provider(
    requester: str,
    responders: Sequence[int],
    dids: Sequence[str],
    engine: TrustEngine,
    setup: Setup,
    rng: random.Random,
) -> int | None:
    """The paper's probabilistic source selection, skipping responders known to be bad.

    Known bad: the requester's own beta estimate is below 1/2, or, for a zero-trust
    responder, credible negative evidence outweighs credible positive evidence.
    Weights are global trust ``t`` (the score's relative share ``s / (1 - s)`` is
    ``t`` times the same constant for everyone). ``None`` when every responder is
    known bad.
    """
    trusted: list[tuple[int, float]] = []
    zero: list[int] = []
    wanted = [dids[agent] for agent in responders]
    estimates = engine.local_estimates(requester, wanted)
    for agent, did, own in zip(responders, wanted, estimates, strict=True):
        if own is not None and own < 0.5:
            continue
        score = engine.score(did)
        if score > 0:
            trusted.append((agent, score / (1.0 - score)))
            continue
        positive, negative = engine.credible_evidence(did)
        if negative <= positive:
            zero.append(agent)
    if zero and (not trusted or rng.random() < setup.explore):
        return rng.choice(zero)
    if not trusted:
        return None
    pick = rng.random() * sum(w for _, w in trusted)
    for agent, weight in trusted:
        pick -= weight
        if pick <= 0:
            return agent
    return trusted[-1][0]


def _report(model: str, requester_bad: bool, provider_bad: bool, served_badly: bool) -> Outcome:
    if not requester_bad:
        return Outcome.FAILURE if served_badly else Outcome.SUCCESS
    if model == "A":
        return Outcome.SUCCESS if served_badly else Outcome.FAILURE
    return Outcome.SUCCESS if provider_bad else Outcome.FAILURE


def _collective_endorsements(
    world: World, dids: Sequence[str], members: Sequence[int], setup: Setup, rng: random.Random
) -> None:
    if len(members) < 2:
        return
    for member in members:
        for friend in rng.sample(members, min(setup.collective_endorsements + 1, len(members))):
            if friend != member:
                world.report(dids[member], dids[friend], Outcome.SUCCESS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.eigentrust",
        description="EigenTrust threat models A (independent) and B (collective), "
        "with and without trust-based provider selection.",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--model", choices=[*MODELS, "both"], default="both")
    parser.add_argument("--malicious", type=float, nargs="+", default=[0.3, 0.6])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument(
        "--warmup",
        type=int,
        default=15,
        help="bootstrap rounds left out of the steady-state figure",
    )
    args = parser.parse_args(argv)
    models = MODELS if args.model == "both" else (args.model,)
    setups = [
        Setup(
            model=m,
            malicious=f,
            agents=args.agents,
            rounds=args.rounds,
            warmup=args.warmup,
            seed=args.seed,
            use_trust=t,
        )
        for m in models
        for f in args.malicious
        for t in (True, False)
    ]
    console = Console()
    results = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("simulating", total=len(setups) * args.rounds)
        for setup in setups:
            results.append(run(setup, on_round=lambda _: progress.advance(task)))
    table = Table(title=f"EigenTrust threat models (seed {args.seed}, {args.agents} agents)")
    for column in (
        "model",
        "malicious",
        "trust",
        "bad (all)",
        "bad (after warm-up)",
        "queries without a good copy",
        "malicious in ring 3",
    ):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.setup.model,
            f"{r.setup.malicious:.0%}",
            "yes" if r.setup.use_trust else "no",
            f"{r.bad_fraction:.3f}",
            f"{r.bad_fraction_after_warmup:.3f}",
            f"{r.unserved_fraction:.3f}",
            f"{r.malicious_ring3:.0%}" if r.setup.use_trust else "-",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
