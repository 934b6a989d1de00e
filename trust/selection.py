"""Trust-aware provider selection: which candidate serves a request.

A :class:`SelectionPolicy` chooses among candidate providers with three rules,
applied in order (``docs/trust.md`` §8):

1. **Distrust filter.** A candidate is skipped when the requester's own beta
   estimate of it is below ``own_floor`` (first-hand experience), when a drift
   flag sandboxes it, or when the credible evidence about it (reports weighted
   by their observers' credibility, so reports by agents nobody trusts weigh
   nothing) makes a quality of ``min_quality`` or better implausible:
   ``P(q >= min_quality | Beta(pos + 1, neg + 1)) < confidence``. Newcomers
   (no evidence) are never skipped.
2. **Exploration.** With probability ``explore`` the requester picks uniformly
   among the remaining candidates with zero global trust (newcomers), so they can
   earn trust; the rate actually realised is reported by :attr:`explored_share`.
3. **Audit by the pre-trusted.** A pre-trusted requester (the operator's own
   agents) picks uniformly among all remaining candidates with probability
   ``audit``: first-hand evidence from the pre-trusted reaches every provider
   that answers, not only the popular ones, so quiet honest agents earn the
   credible vouches that rater credibility and the rings need
   (``trust/credibility.py``). The realised rate is :attr:`audited_share`.
4. **Exploitation.** Otherwise proportionally to ``t * m ** kappa`` among the
   candidates with global trust ``t > 0``, where ``m`` is the posterior mean
   quality of the credible evidence (EigenTrust's probabilistic source selection,
   which spreads load over every trusted provider, tilted towards the providers
   that are rarely bad: ``kappa = 0`` is EigenTrust's), times ``probation``
   (0.5) for a candidate on probation after a failure-rate alarm (flagged, not
   sandboxed: it keeps a trickle of work, so the reports that confirm the drift or
   clear the flag keep coming); if none has ``t > 0``, uniformly among the
   newcomers.

:meth:`SelectionPolicy.rank` is the deterministic form for discovery lists:
the distrusted are removed, the rest ordered by score (ties by DID).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy.special import betainc

from trust.engine import TrustEngine
from trust.errors import InvalidTrustConfig

Reason = Literal["trusted", "explore", "newcomer", "audit", "none"]


@dataclass(frozen=True, slots=True)
class SelectionConfig:
    """Attributes:
    explore: probability of picking a newcomer (zero global trust) when one answers.
    distrust_filter: skip candidates the evidence shows to be bad (rule 1).
    own_floor: the requester's own estimate below which it never picks a candidate.
    min_quality: the service quality a provider must plausibly reach.
    confidence: a candidate is distrusted when ``P(q >= min_quality)`` is below this.
    audit: probability that a pre-trusted requester picks uniformly among the
        acceptable candidates (rule 3); 0 turns auditing off.
    quality_exponent: kappa; exploitation weighs a trusted candidate by
        ``t * m ** kappa`` where ``m`` is the posterior mean quality of the credible
        evidence about it, so a popular provider that is often bad (camouflage) loses
        to a quieter one that is rarely bad (0: by ``t`` alone, EigenTrust).
    probation: factor on the exploitation weight of a candidate whose failure-rate
        alarm is not confirmed yet (flagged, not sandboxed): enough work that the
        reports confirming the drift or clearing the flag keep coming (at 0.1 an
        honest agent flagged by chance served 79 requests in the next 1,100 rounds of
        the evaluation and stayed flagged), little enough to shield requesters.
    """

    explore: float = 0.10
    distrust_filter: bool = True
    own_floor: float = 0.5
    min_quality: float = 0.75
    confidence: float = 0.05
    quality_exponent: float = 16.0
    audit: float = 1.0
    probation: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.explore <= 1.0:
            raise InvalidTrustConfig("explore must be in [0, 1]")
        if not 0.0 < self.min_quality < 1.0 or not 0.0 < self.confidence < 1.0:
            raise InvalidTrustConfig("min_quality and confidence must be in (0, 1)")
        if not 0.0 <= self.own_floor <= 1.0:
            raise InvalidTrustConfig("own_floor must be in [0, 1]")
        if not 0.0 <= self.audit <= 1.0:
            raise InvalidTrustConfig("audit must be in [0, 1]")
        if not 0.0 <= self.probation <= 1.0:
            raise InvalidTrustConfig("probation must be in [0, 1]")
        if self.quality_exponent < 0.0:
            raise InvalidTrustConfig("quality_exponent must be >= 0")

    @classmethod
    def eigentrust(cls, explore: float = 0.10) -> SelectionConfig:
        """The paper's selection: no distrust filter, only trust and exploration."""
        return cls(explore=explore, distrust_filter=False, quality_exponent=0.0, audit=0.0)


@dataclass(frozen=True, slots=True)
class Choice:
    """The chosen DID (None: every candidate is distrusted) and the rule that chose it."""

    did: str | None
    reason: Reason


def plausible_quality(positive: float, negative: float, min_quality: float) -> float:
    """``P(q >= min_quality)`` under the Beta(positive + 1, negative + 1) posterior."""
    a, b = max(positive, 0.0) + 1.0, max(negative, 0.0) + 1.0
    return float(1.0 - betainc(a, b, min_quality))


class SelectionPolicy:
    """Chooses providers for one requester population (see the module docstring).

    Args:
        engine: the trust engine whose scores and evidence are read.
        config: the rules' parameters.
        rng: the random source (inject a seeded one for reproducible runs).
    """

    def __init__(
        self,
        engine: TrustEngine,
        config: SelectionConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or SelectionConfig()
        self.rng = rng or random.Random()  # noqa: S311 - selection, not secrecy
        self.choices = 0
        self.explored = 0
        self.filtered = 0
        self.audited = 0
        self.chosen_by: Counter[str] = Counter()

    @property
    def explored_share(self) -> float:
        """The share of choices made by the exploration rule (the realised rate)."""
        return self.explored / self.choices if self.choices else 0.0

    @property
    def audited_share(self) -> float:
        """The share of choices made by the audit rule (pre-trusted requesters)."""
        return self.audited / self.choices if self.choices else 0.0

    def distrusted(self, did: str, requester: str | None = None) -> bool:
        """Rule 1: the evidence shows ``did`` to be bad (see the module docstring)."""
        engine, cfg = self.engine, self.config
        if engine.sandboxed(did):
            return True
        if requester is not None:
            own = engine.local_estimate(requester, did)
            if own is not None and own < cfg.own_floor:
                return True
        positive, negative = engine.credible_evidence(did)
        if negative <= 0.0:
            return False
        return plausible_quality(positive, negative, cfg.min_quality) < cfg.confidence

    def _quality_weight(self, did: str) -> float:
        kappa = self.config.quality_exponent
        if kappa <= 0.0:
            return 1.0
        positive, negative = self.engine.credible_evidence(did)
        mean = (max(positive, 0.0) + 1.0) / (max(positive, 0.0) + max(negative, 0.0) + 2.0)
        return float(mean**kappa)

    def choose(self, candidates: Sequence[str], requester: str | None = None) -> Choice:
        """One provider among ``candidates`` (the requester itself is never chosen).

        Every choice is counted in :attr:`chosen_by` under the rule that made it.
        """
        choice = self._choose(candidates, requester)
        self.chosen_by[choice.reason] += 1
        return choice

    def _choose(self, candidates: Sequence[str], requester: str | None) -> Choice:
        engine, cfg = self.engine, self.config
        trusted: list[tuple[str, float]] = []
        newcomers: list[str] = []
        for did in candidates:
            if did == requester:
                continue
            if cfg.distrust_filter and self.distrusted(did, requester):
                self.filtered += 1
                continue
            t = engine.global_trust(did)
            if t > 0.0 and not engine.sandboxed(did):
                on_probation = cfg.probation if engine.flagged(did) else 1.0
                trusted.append((did, t * self._quality_weight(did) * on_probation))
            else:
                newcomers.append(did)
        auditor = cfg.audit > 0.0 and requester is not None and engine.is_pre_trusted(requester)
        if auditor and (trusted or newcomers) and self.rng.random() < cfg.audit:
            self.choices += 1
            self.audited += 1
            return Choice(self.rng.choice([d for d, _ in trusted] + newcomers), "audit")
        if newcomers and (not trusted or self.rng.random() < cfg.explore):
            self.choices += 1
            self.explored += bool(trusted)
            return Choice(self.rng.choice(newcomers), "explore" if trusted else "newcomer")
        if not trusted:
            return Choice(None, "none")
        self.choices += 1
        pick = self.rng.random() * sum(t for _, t in trusted)
        for did, t in trusted:
            pick -= t
            if pick <= 0.0:
                return Choice(did, "trusted")
        return Choice(trusted[-1][0], "trusted")

    def order(self, candidates: Sequence[str], requester: str | None = None) -> list[str]:
        """Every acceptable candidate, in the order :meth:`choose` would try them.

        The first is the policy's choice (exploration included); a caller that tries
        candidates in turn (a saga's substitute choice) gets the same rules at each try.
        """
        left = list(dict.fromkeys(candidates))
        out: list[str] = []
        while left:
            picked = self.choose(left, requester).did
            if picked is None:
                break
            out.append(picked)
            left.remove(picked)
        return out

    def rank(self, candidates: Sequence[str], requester: str | None = None) -> list[str]:
        """Candidates without the distrusted, best score first (ties by DID)."""
        keep = [
            did
            for did in dict.fromkeys(candidates)
            if did != requester
            and not (self.config.distrust_filter and self.distrusted(did, requester))
        ]
        return sorted(keep, key=lambda did: (-self.engine.score(did), did))


__all__ = ["Choice", "SelectionConfig", "SelectionPolicy", "plausible_quality"]
