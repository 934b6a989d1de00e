"""Targeted attack scenarios: a Sybil ring, a traitor, and honest agents with bad luck.

* ``sybil_ring``: 100 fresh identities endorse each other heavily every round
  while an honest population (with a pre-trusted core) works normally; reports
  the best ring any Sybil ever reached (the claim: never above ring 3).
* ``traitor``: an agent serves well for a long time, reaches ring 2 or better,
  then turns bad; reports how many bad interactions it took until ring 3.
* ``false_demotions``: honest agents fail at random with a given rate; reports the
  share of agents that ever reached ring 2 and were later demoted to ring 3.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from simulations.population import World, agent_dids
from trust import Outcome

ACTIONS = ("search", "summarise", "fetch", "translate")


def _honest_round(world: World, dids: Sequence[str], rng: random.Random, failure: float) -> None:
    for observer in dids:
        subject = rng.choice(dids)
        if subject != observer:
            outcome = Outcome.FAILURE if rng.random() < failure else Outcome.SUCCESS
            world.report(observer, subject, outcome, action=rng.choice(ACTIONS))


@dataclass(frozen=True)
class SybilResult:
    sybils: int
    best_ring: int
    max_score: float
    honest_ring_le2: float


def sybil_ring(
    seed: int = 1, *, honest: int = 30, sybils: int = 100, rounds: int = 20
) -> SybilResult:
    rng = random.Random(seed)
    good = agent_dids(honest, namespace=1000 + seed)
    fake = agent_dids(sybils, namespace=2000 + seed)
    world = World(pre_trusted=good[:3])
    best_ring, max_score = 3, 0.0
    for _ in range(rounds):
        _honest_round(world, good, rng, 0.02)
        for member in fake:
            for friend in rng.sample(fake, 5):
                if friend != member:
                    world.report(member, friend, Outcome.SUCCESS)
            # Sybils also slander honest agents.
            world.report(member, rng.choice(good), Outcome.POLICY_VIOLATION)
        world.engine.recompute()
        best_ring = min(best_ring, *(world.engine.ring(s) for s in fake))
        max_score = max(max_score, *(world.engine.score(s) for s in fake))
    ring_le2 = sum(world.engine.ring(g) <= 2 for g in good) / honest
    return SybilResult(sybils, best_ring, max_score, ring_le2)


@dataclass(frozen=True)
class TraitorResult:
    ring_before: int
    bad_interactions_to_ring3: int | None


def traitor(seed: int = 1, *, honest: int = 20, history_rounds: int = 30) -> TraitorResult:
    """Bad interactions (each observed by a random honest agent) until the traitor is in ring 3."""
    rng = random.Random(seed)
    dids = agent_dids(honest, namespace=3000 + seed)
    world = World(pre_trusted=dids[:3])
    target = dids[-1]
    for _ in range(history_rounds):
        _honest_round(world, dids, rng, 0.02)
        for _ in range(3):
            world.report(rng.choice(dids[:-1]), target, Outcome.SUCCESS, action="search")
        world.engine.recompute()
    ring_before = world.engine.ring(target)
    for count in range(1, 101):
        world.report(rng.choice(dids[:-1]), target, Outcome.FAILURE, action="search")
        if world.engine.ring(target) == 3:
            return TraitorResult(ring_before, count)
    return TraitorResult(ring_before, None)


@dataclass(frozen=True)
class FalseDemotionResult:
    failure_rate: float
    agents_promoted: int
    agents_demoted: int

    @property
    def rate(self) -> float:
        return self.agents_demoted / max(self.agents_promoted, 1)


def false_demotions(
    seed: int = 1, *, failure_rate: float = 0.1, honest: int = 50, rounds: int = 60
) -> FalseDemotionResult:
    """Honest agents with ``failure_rate`` random failures; count demotions to ring 3."""
    rng = random.Random(seed)
    dids = agent_dids(honest, namespace=4000 + seed)
    world = World(pre_trusted=dids[:3])
    promoted: set[str] = set()
    demoted: set[str] = set()

    def watch(event: object) -> None:
        did, new = getattr(event, "did", None), getattr(event, "new_ring", None)
        if did in promoted and new == 3:
            demoted.add(did)

    world.engine.add_listener(watch)
    for _ in range(rounds):
        _honest_round(world, dids, rng, failure_rate)
        world.engine.recompute()
        promoted.update(d for d in dids if world.engine.ring(d) <= 2)
    return FalseDemotionResult(failure_rate, len(promoted), len(demoted))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulations.scenarios",
        description="Sybil ring, traitor and false-demotion scenarios against the trust engine.",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args(argv)
    console = Console()
    sybil = sybil_ring(args.seed)
    turned = traitor(args.seed)
    table = Table(title=f"Trust attack scenarios (seed {args.seed})")
    table.add_column("scenario")
    table.add_column("result")
    table.add_row(
        f"Sybil ring of {sybil.sybils}",
        f"best ring reached {sybil.best_ring}, max score {sybil.max_score:.3f}, "
        f"honest in ring <= 2: {sybil.honest_ring_le2:.0%}",
    )
    table.add_row(
        "traitor after a long honest history",
        f"ring before {turned.ring_before}; ring 3 after {turned.bad_interactions_to_ring3} "
        "bad interactions",
    )
    for rate in (0.05, 0.1, 0.2):
        fd = false_demotions(args.seed, failure_rate=rate)
        table.add_row(
            f"honest agents, {rate:.0%} random failures",
            f"false demotions to ring 3: {fd.agents_demoted}/{fd.agents_promoted} = {fd.rate:.1%}",
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
