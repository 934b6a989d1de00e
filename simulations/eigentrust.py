"""EigenTrust threat models A and B (Kamvar, Schlosser, Garcia-Molina, WWW 2003).

Each round every agent issues one query. Honest agents answer a query with
probability ``honest_response`` (they have the file), malicious agents with
``malicious_response`` (they claim everything), as in the paper, so malicious
responders crowd the candidate lists. The requester picks a provider:

* without trust: uniformly among the responders;
* with trust: proportionally to ``score**2`` among responders with a positive score,
  except that with probability ``explore`` (or when no responder has a score) it
  picks uniformly among the responders with score 0, so newcomers can earn trust.

Honest providers serve well with probability ``1 - honest_failure``; malicious ones
always serve badly. The requester then records a receipt about the provider:

* honest requesters report what happened;
* model A (independent malicious): malicious requesters report the opposite;
* model B (malicious collective): malicious requesters report success for any
  malicious provider and failure for any honest one, and every round each
  malicious agent also endorses ``collective_endorsements`` random members.

The engine recomputes after every ``recompute_every`` queries. Reported: the fraction of honest
requesters' interactions that were bad, over all rounds and after ``warmup``.
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
    explore: float = 0.05
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
    bad = total = bad_late = total_late = 0
    for round_no in range(setup.rounds):
        for turn, requester in enumerate(rng.sample(range(setup.agents), setup.agents), 1):
            if setup.use_trust and turn % setup.recompute_every == 0:
                engine.recompute()
            responders = [
                a
                for a in range(setup.agents)
                if a != requester
                and rng.random()
                < (setup.malicious_response if a in malicious else setup.honest_response)
            ]
            if not responders:
                continue
            provider = _choose(
                requester, requester in malicious, responders, dids, engine, setup, rng
            )
            inauthentic = provider in malicious
            served_badly = inauthentic or rng.random() < setup.honest_failure
            if requester not in malicious:
                total += 1
                bad += inauthentic
                if round_no >= setup.warmup:
                    total_late += 1
                    bad_late += inauthentic
            reported = _report(
                setup.model, requester in malicious, provider in malicious, served_badly
            )
            world.report(dids[requester], dids[provider], reported)
        if setup.model == "B":
            _collective_endorsements(world, dids, sorted(malicious), setup, rng)
        if setup.use_trust:
            engine.recompute()
        if on_round is not None:
            on_round(round_no)
    honest = [i for i in range(setup.agents) if i not in malicious]
    return Result(
        setup=setup,
        bad_fraction=bad / max(total, 1),
        bad_fraction_after_warmup=bad_late / max(total_late, 1),
        honest_interactions=total,
        malicious_ring3=sum(engine.ring(dids[i]) == 3 for i in malicious) / max(len(malicious), 1),
        honest_ring_le2=sum(engine.ring(dids[i]) <= 2 for i in honest) / max(len(honest), 1),
    )


def _choose(
    requester: int,
    requester_is_bad: bool,
    responders: Sequence[int],
    dids: Sequence[str],
    engine: TrustEngine,
    setup: Setup,
    rng: random.Random,
) -> int:
    if requester_is_bad or not setup.use_trust:
        return rng.choice(responders)
    scores = [engine.score(dids[a]) for a in responders]
    trusted = [(a, s * s) for a, s in zip(responders, scores, strict=True) if s > 0]
    # Exploration goes to the unknown, never to the distrusted (negative evidence).
    # The requester also remembers its own bad experiences (its local trust).
    me = dids[requester]
    unknown = [
        a
        for a, s in zip(responders, scores, strict=True)
        if s <= 0
        and engine.credible_evidence(dids[a])[1] < 1.0
        and engine.local(me, dids[a]).negative < 0.5
    ]
    if not trusted and not unknown:
        return rng.choice(responders)
    if not trusted or (unknown and rng.random() < setup.explore):
        return rng.choice(unknown)
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
            f"{r.malicious_ring3:.0%}" if r.setup.use_trust else "-",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
