"""What a chaos run measures, round by round, and the figures a person asks for.

* ``bad_fraction``: the share of honest agents' interactions that were served
  badly (over all rounds, and after the warm-up), with trust and, from the
  baseline run, without it;
* containment of each rogue: the round after its last bad service to an honest
  agent, when that is before the run's last tenth (the damage stopped: it was
  demoted, quarantined or simply no longer chosen), and the bad interactions it
  caused until then; a rogue that never harmed anyone counts as contained at 0;
  ``contained_share`` of rogues;
* ``blast_radius``: honest agents that accepted at least one bad result;
  ``bad_tool_calls``: rogue tool calls that went through;
* ``false_containment``: honest agents quarantined or distrusted at the end
  (``false_containment_ever``: at any round after the warm-up);
* ``rogue_trust_mass``: the share of global trust held by rogues at the end;
* ``attacker_cost``: good services rogues gave per bad one;
* ``rejected``: refused messages and calls by code (mesh fidelity: real codes);
* ``sagas``: completed / compensated / stuck / double-executed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RoundStats:
    honest_interactions: int = 0
    honest_bad: int = 0
    rogue_trust: float = 0.0
    honest_trust: float = 0.0
    contained_rogues: int = 0


@dataclass
class Recorder:
    """Collects a run's events; :meth:`summary` turns them into the metrics."""

    rounds: int
    warmup: int
    rogues: set[int] = field(default_factory=set)
    honest: set[int] = field(default_factory=set)
    per_round: list[RoundStats] = field(default_factory=list)
    last_bad: dict[int, int] = field(default_factory=dict)
    harm: Counter[int] = field(default_factory=Counter)
    contained_now: set[int] = field(default_factory=set)
    rogue_good: int = 0
    rogue_bad: int = 0
    hit_honest: set[int] = field(default_factory=set)
    ever_contained_honest: set[int] = field(default_factory=set)
    rejected: Counter[str] = field(default_factory=Counter)
    tool_calls: Counter[str] = field(default_factory=Counter)
    sagas: Counter[str] = field(default_factory=Counter)
    events: list[dict[str, Any]] = field(default_factory=list)
    messages: int = 0
    forgeries_accepted: int = 0
    # Backend figures beyond the driver's (faults injected, faults skipped), if any.
    extra: dict[str, Any] = field(default_factory=dict)

    def start_round(self) -> RoundStats:
        stats = RoundStats()
        self.per_round.append(stats)
        return stats

    def interaction(self, round_no: int, requester: int, provider: int, bad: bool) -> None:
        stats = self.per_round[-1]
        if provider in self.rogues:
            if bad:
                self.rogue_bad += 1
                if requester in self.honest:
                    self.last_bad[provider] = round_no
                    self.harm[provider] += 1
                    self.event(round_no, "bad_service", agent=provider, requester=requester)
            else:
                self.rogue_good += 1
        if requester in self.honest:
            stats.honest_interactions += 1
            if bad:
                stats.honest_bad += 1
                self.hit_honest.add(requester)

    def containment(self, round_no: int, agent: int, contained: bool) -> None:
        """Called each round for every agent with the backend's verdict (quarantined/distrusted)."""
        if contained and agent not in self.contained_now:
            self.contained_now.add(agent)
            self.event(round_no, "contained", agent=agent, rogue=agent in self.rogues)
            if agent in self.honest and round_no >= self.warmup:
                self.ever_contained_honest.add(agent)
        elif not contained and agent in self.contained_now:
            self.contained_now.discard(agent)
            self.event(round_no, "released", agent=agent, rogue=agent in self.rogues)

    def contained_at(self) -> dict[int, int | None]:
        """Per rogue: the round its damage stopped (None: it went on to the end)."""
        tail = max(3, self.rounds // 10)
        out: dict[int, int | None] = {}
        for rogue in self.rogues:
            last = self.last_bad.get(rogue)
            if last is None:
                out[rogue] = 0
            else:
                out[rogue] = last + 1 if last < len(self.per_round) - tail else None
        return out

    def event(self, round_no: int, kind: str, **fields: Any) -> None:
        self.events.append({"round": round_no, "event": kind, **fields})

    def series(self) -> list[float]:
        """Bad-interaction fraction of honest agents per round."""
        return [
            s.honest_bad / s.honest_interactions if s.honest_interactions else 0.0
            for s in self.per_round
        ]

    def summary(self) -> dict[str, Any]:
        def fraction(stats: list[RoundStats]) -> float:
            total = sum(s.honest_interactions for s in stats)
            return sum(s.honest_bad for s in stats) / total if total else 0.0

        contained_at = self.contained_at()
        contained = {a: r for a, r in contained_at.items() if r is not None}
        times = sorted(contained.values())
        harm_until = [self.harm[a] for a in contained]
        last = self.per_round[-1] if self.per_round else RoundStats()
        total_trust = last.rogue_trust + last.honest_trust
        return {
            "bad_fraction": fraction(self.per_round),
            "bad_fraction_after_warmup": fraction(self.per_round[self.warmup :]),
            "rogues": len(self.rogues),
            "contained_share": len(contained) / len(self.rogues) if self.rogues else 1.0,
            "containment_round_median": times[len(times) // 2] if times else None,
            "containment_round_max": times[-1] if times else None,
            "bad_before_containment_max": max(harm_until, default=0),
            "bad_before_containment_total": sum(self.harm.values()),
            "blast_radius": len(self.hit_honest) / len(self.honest) if self.honest else 0.0,
            "false_containment": len(self.contained_now & self.honest) / len(self.honest)
            if self.honest
            else 0.0,
            "false_containment_ever": len(self.ever_contained_honest) / len(self.honest)
            if self.honest
            else 0.0,
            "rogue_trust_mass": last.rogue_trust / total_trust if total_trust else 0.0,
            "attacker_cost": self.rogue_good / self.rogue_bad if self.rogue_bad else None,
            "bad_tool_calls": self.tool_calls.get("executed", 0),
            "refused_tool_calls": sum(v for k, v in self.tool_calls.items() if k != "executed"),
            "rejected": dict(sorted(self.rejected.items())),
            "rate_limited": self.rejected.get("rate_limited", 0),
            "forgeries_rejected": sum(
                self.rejected.get(code, 0)
                for code in ("bad_signature", "replayed", "expired", "issued_in_future")
            ),
            "forgeries_accepted": self.forgeries_accepted,
            "sagas": dict(sorted(self.sagas.items())),
            "sagas_stuck": self.sagas.get("needs-attention", 0),
            "sagas_double_executed": self.sagas.get("double-executed", 0),
            "messages": self.messages,
            **{k: v for k, v in self.extra.items() if v},
        }


__all__ = ["Recorder", "RoundStats"]
