"""The behaviour library: what each simulated agent does, at either fidelity.

A behaviour answers three questions each round, the same way for the model and
the mesh fidelity (``simulations.model``, ``simulations.mesh``):

* :meth:`Behaviour.serve`: asked for service, does the agent serve well, badly,
  or not at all?
* :meth:`Behaviour.report`: after being served, which receipt does it issue
  about the provider (honest agents tell the truth; some rogues lie)?
* :meth:`Behaviour.extras`: what else does it do this round (fabricated
  endorsements, floods, policy probes, forged envelopes, a new identity, ...)?

``rogue`` is the ground truth the metrics use; honest-but-unlucky behaviours
(``unavailable``) are not rogues and must not be contained.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

from simulations.spec import Param, ScenarioError
from trust import Outcome


class Serve(enum.Enum):
    GOOD = "good"
    BAD = "bad"
    SILENT = "silent"


TRUTH = {Serve.GOOD: Outcome.SUCCESS, Serve.BAD: Outcome.FAILURE, Serve.SILENT: Outcome.TIMEOUT}


@dataclass(frozen=True, slots=True)
class Endorse:
    """A fabricated receipt about ``subject`` (no interaction behind it)."""

    subject: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Flood:
    """``count`` extra requests at ``target`` this round (rate limits should refuse them)."""

    target: int
    count: int


@dataclass(frozen=True, slots=True)
class Probe:
    """A governed tool call the policy should refuse (SSRF target, forbidden tool, budget)."""

    tool: str
    url: str | None = None
    cost: float = 0.0


@dataclass(frozen=True, slots=True)
class Forge:
    """An envelope forged under ``victim``'s DID, or a replay of a captured one."""

    target: int
    victim: int
    replay: bool = False


@dataclass(frozen=True, slots=True)
class Whitewash:
    """Leave and come back under a fresh DID (its history stays with the old one)."""


Action = Endorse | Flood | Probe | Forge | Whitewash


@dataclass
class Context:
    """What a behaviour may know about the round (indices into the population)."""

    round_no: int
    rng: random.Random
    me: int
    honest: Sequence[int]
    groups: Mapping[str, Sequence[int]]
    contained: Callable[[int], bool] = field(default=lambda agent: False)

    def group(self, kind: str) -> Sequence[int]:
        return self.groups.get(kind, ())


class Behaviour:
    """An honest agent: serves well (but for bad luck), reports the truth."""

    kind: ClassVar[str] = "honest"
    rogue: ClassVar[bool] = False
    summary: ClassVar[str] = "serves well but for bad luck (honest_failure), reports the truth"
    defaults: ClassVar[Mapping[str, Param]] = MappingProxyType({})

    def __init__(self, params: Mapping[str, Param], failure: float) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ScenarioError(f"behaviour {self.kind!r} has no parameter {sorted(unknown)}")
        self.params = {**self.defaults, **params}
        self.failure = failure

    def num(self, name: str) -> float:
        value = self.params[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{self.kind}.{name} must be a number, got {value!r}")
        return float(value)

    def serve(self, ctx: Context, requester: int) -> Serve:
        return Serve.BAD if ctx.rng.random() < self.failure else Serve.GOOD

    def report(self, ctx: Context, provider: int, served: Serve) -> Outcome | None:
        return TRUTH[served]

    def extras(self, ctx: Context) -> list[Action]:
        return []


class BadProvider(Behaviour):
    kind = "bad_provider"
    rogue = True
    summary = "independent malicious provider: always serves badly, reports the opposite"

    def serve(self, ctx: Context, requester: int) -> Serve:
        return Serve.BAD

    def report(self, ctx: Context, provider: int, served: Serve) -> Outcome | None:
        return Outcome.FAILURE if served is Serve.GOOD else Outcome.SUCCESS


class Collusion(Behaviour):
    kind = "collusion"
    rogue = True
    summary = "colluding ring: serves badly, praises its own, slanders honest agents, fabricates"
    defaults = MappingProxyType({"endorsements": 3})

    def serve(self, ctx: Context, requester: int) -> Serve:
        return Serve.BAD

    def report(self, ctx: Context, provider: int, served: Serve) -> Outcome | None:
        return Outcome.SUCCESS if provider in ctx.group(self.kind) else Outcome.FAILURE

    def extras(self, ctx: Context) -> list[Action]:
        ring = [a for a in ctx.group(self.kind) if a != ctx.me]
        picks = ctx.rng.sample(ring, min(int(self.num("endorsements")), len(ring)))
        return [Endorse(a, Outcome.SUCCESS) for a in picks]


class Camouflage(Behaviour):
    kind = "camouflage"
    rogue = True
    summary = "serves well with probability f (to hide), badly otherwise; reports the truth"
    defaults = MappingProxyType({"f": 0.5})

    def serve(self, ctx: Context, requester: int) -> Serve:
        return Serve.GOOD if ctx.rng.random() < self.num("f") else Serve.BAD


class Spy(Behaviour):
    kind = "spy"
    rogue = True
    summary = "serves well to earn trust, and spends it endorsing the colluding ring"
    defaults = MappingProxyType({"endorsements": 3, "ring": "collusion"})

    def extras(self, ctx: Context) -> list[Action]:
        ring = list(ctx.group(str(self.params["ring"])))
        picks = ctx.rng.sample(ring, min(int(self.num("endorsements")), len(ring)))
        return [Endorse(a, Outcome.SUCCESS) for a in picks]


class Sybil(Behaviour):
    kind = "sybil"
    rogue = True
    summary = "fresh identities that praise each other and slander honest agents; serve badly"
    defaults = MappingProxyType({"endorsements": 5})

    def serve(self, ctx: Context, requester: int) -> Serve:
        return Serve.BAD

    def report(self, ctx: Context, provider: int, served: Serve) -> Outcome | None:
        return Outcome.SUCCESS if provider in ctx.group(self.kind) else Outcome.POLICY_VIOLATION

    def extras(self, ctx: Context) -> list[Action]:
        ring = [a for a in ctx.group(self.kind) if a != ctx.me]
        picks = ctx.rng.sample(ring, min(int(self.num("endorsements")), len(ring)))
        actions: list[Action] = [Endorse(a, Outcome.SUCCESS) for a in picks]
        if ctx.honest:
            actions.append(Endorse(ctx.rng.choice(ctx.honest), Outcome.POLICY_VIOLATION))
        return actions


class Whitewasher(Behaviour):
    kind = "whitewash"
    rogue = True
    summary = "serves badly; once contained, comes back under a fresh DID"

    def serve(self, ctx: Context, requester: int) -> Serve:
        return Serve.BAD

    def extras(self, ctx: Context) -> list[Action]:
        return [Whitewash()] if ctx.contained(ctx.me) else []


class OnOff(Behaviour):
    kind = "on_off"
    rogue = True
    summary = "alternates honest and malicious phases of `period` rounds"
    defaults = MappingProxyType({"period": 8})

    def serve(self, ctx: Context, requester: int) -> Serve:
        bad_phase = (ctx.round_no // int(self.num("period"))) % 2 == 1
        return Serve.BAD if bad_phase else super().serve(ctx, requester)


class BadMouthing(Behaviour):
    kind = "bad_mouthing"
    rogue = True
    summary = "serves well but reports every honest provider as having failed"

    def report(self, ctx: Context, provider: int, served: Serve) -> Outcome | None:
        return Outcome.FAILURE if provider in ctx.honest else TRUTH[served]

    def extras(self, ctx: Context) -> list[Action]:
        return [Endorse(ctx.rng.choice(ctx.honest), Outcome.FAILURE)] if ctx.honest else []


class BallotStuffing(Behaviour):
    kind = "ballot_stuffing"
    rogue = True
    summary = "serves well but fabricates praise for a target group of bad providers"
    defaults = MappingProxyType({"target": "bad_provider", "endorsements": 3})

    def extras(self, ctx: Context) -> list[Action]:
        targets = list(ctx.group(str(self.params["target"])))
        picks = ctx.rng.sample(targets, min(int(self.num("endorsements")), len(targets)))
        return [Endorse(a, Outcome.SUCCESS) for a in picks]


class Impersonator(Behaviour):
    kind = "impersonator"
    rogue = True
    summary = "forges envelopes under honest agents' DIDs and replays captured ones"
    defaults = MappingProxyType({"per_round": 2})

    def serve(self, ctx: Context, requester: int) -> Serve:
        return Serve.BAD

    def extras(self, ctx: Context) -> list[Action]:
        if not ctx.honest:
            return []
        return [
            Forge(ctx.rng.choice(ctx.honest), ctx.rng.choice(ctx.honest), replay=i % 2 == 1)
            for i in range(int(self.num("per_round")))
        ]


class Flooder(Behaviour):
    kind = "flooding"
    rogue = True
    summary = "floods one agent with requests every round (rate limits should refuse them)"
    defaults = MappingProxyType({"rate": 40})

    def extras(self, ctx: Context) -> list[Action]:
        return [Flood(ctx.rng.choice(ctx.honest), int(self.num("rate")))] if ctx.honest else []


class PolicyProber(Behaviour):
    kind = "policy_probe"
    rogue = True
    summary = "tries forbidden tools, SSRF targets and budget exhaustion every round"
    PROBES: ClassVar[tuple[Probe, ...]] = (
        Probe("shell.exec"),
        Probe("http.fetch", url="http://169.254.169.254/latest/meta-data/"),
        Probe("http.fetch", url="http://10.0.0.7/admin"),
        Probe("payments.spend", cost=400.0),
    )

    def extras(self, ctx: Context) -> list[Action]:
        return list(self.PROBES)


class GoalHijack(Behaviour):
    kind = "goal_hijack"
    rogue = True
    summary = "honest until round `turn`, then issues actions outside its declared capability"
    defaults = MappingProxyType({"turn": 10})

    def extras(self, ctx: Context) -> list[Action]:
        if ctx.round_no < int(self.num("turn")):
            return []
        return [Probe("payments.transfer"), Probe("admin.delete_user")]


class SagaSaboteur(Behaviour):
    kind = "saga_saboteur"
    rogue = True
    summary = "accepts saga steps then fails them, and refuses compensations"

    def serve(self, ctx: Context, requester: int) -> Serve:
        return Serve.BAD


class Unavailable(Behaviour):
    kind = "unavailable"
    summary = "honest but often silent (timeouts): must not be contained as a rogue"
    defaults = MappingProxyType({"silence": 0.4})

    def serve(self, ctx: Context, requester: int) -> Serve:
        return (
            Serve.SILENT
            if ctx.rng.random() < self.num("silence")
            else super().serve(ctx, requester)
        )


class Drift(Behaviour):
    kind = "drift"
    rogue = True
    summary = (
        "honest until round `turn`, then serves badly with probability `bad` "
        "(a formerly trusted agent drifts; bad < 1 is a soft drift)"
    )
    defaults = MappingProxyType({"turn": 15, "bad": 1.0})

    def serve(self, ctx: Context, requester: int) -> Serve:
        if ctx.round_no >= int(self.num("turn")):
            bad = self.num("bad")
            # bad = 1 draws nothing: a hard drift keeps the random sequence of old runs
            if bad >= 1.0 or ctx.rng.random() < bad:
                return Serve.BAD
            return Serve.GOOD
        return super().serve(ctx, requester)


BEHAVIOURS: dict[str, type[Behaviour]] = {
    cls.kind: cls
    for cls in (
        Behaviour,
        BadProvider,
        Collusion,
        Camouflage,
        Spy,
        Sybil,
        Whitewasher,
        OnOff,
        BadMouthing,
        BallotStuffing,
        Impersonator,
        Flooder,
        PolicyProber,
        GoalHijack,
        SagaSaboteur,
        Unavailable,
        Drift,
    )
}


def register_behaviour(cls: type[Behaviour]) -> type[Behaviour]:
    """Add a behaviour of your own (a class decorator); scenarios name it by ``cls.kind``.

    Raises:
        ScenarioError: the kind is taken by another class.
    """
    held = BEHAVIOURS.get(cls.kind)
    if held is not None and held is not cls:
        raise ScenarioError(f"behaviour kind {cls.kind!r} is taken by {held.__name__}")
    BEHAVIOURS[cls.kind] = cls
    return cls


def make_behaviour(kind: str, params: Mapping[str, Param], failure: float) -> Behaviour:
    """Raises: ScenarioError: unknown kind or parameter."""
    cls = BEHAVIOURS.get(kind)
    if cls is None:
        raise ScenarioError(f"unknown behaviour {kind!r}; one of {', '.join(sorted(BEHAVIOURS))}")
    return cls(params, failure)


__all__ = [
    "BEHAVIOURS",
    "TRUTH",
    "Action",
    "Behaviour",
    "Context",
    "Endorse",
    "Flood",
    "Forge",
    "Probe",
    "Serve",
    "Whitewash",
    "make_behaviour",
    "register_behaviour",
]
