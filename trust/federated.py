"""Trust across organizations: local evidence discounted by the trust in the peer org.

An organization ranks a partner's agent by what its own observers saw of it (the
agent's local score in [0, 1], :meth:`trust.TrustEngine.score`), discounted by
how much it trusts the partner organization as a whole (``org_trust`` in [0, 1],
this organization's own setting per partner)::

    federated score = local score x org trust

So a foreign agent never ranks above what the local evidence supports, an
untrusted partner's agents rank at 0, and an agent of this organization is
scored as before (no discount).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEFAULT_ORG_TRUST = 0.5


def discount(local: float, org_trust: float) -> float:
    """``local x org_trust``; both in [0, 1].

    Raises:
        ValueError: an argument is outside [0, 1] or not a number.
    """
    for name, value in (("local", local), ("org_trust", org_trust)):
        if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(local) * float(org_trust)


@dataclass(frozen=True, slots=True)
class FederatedScore:
    """Why a foreign agent has its score: local evidence, its organization, the discount."""

    did: str
    organization: str
    local: float
    org_trust: float
    score: float


class DiscountedTrust:
    """Scores that discount foreign agents by their organization's trust.

    Args:
        local: the local score of any agent (e.g. ``TrustEngine.score``).
        organization_of: the partner organization of a foreign agent (None: one of ours).
        org_trust: this organization's trust in each partner (missing: ``default``).
        default: trust in a partner not listed in ``org_trust``.
    """

    def __init__(
        self,
        local: Callable[[str], float],
        organization_of: Callable[[str], str | None],
        org_trust: Mapping[str, float] | None = None,
        *,
        default: float = DEFAULT_ORG_TRUST,
    ) -> None:
        self._local = local
        self._organization_of = organization_of
        self._org_trust = dict(org_trust or {})
        discount(0.0, default)
        for value in self._org_trust.values():
            discount(0.0, value)
        self._default = default

    def org_trust(self, organization: str) -> float:
        return self._org_trust.get(organization, self._default)

    def explain(self, did: str) -> FederatedScore | None:
        """The discount applied to ``did`` (None for an agent of this organization)."""
        organization = self._organization_of(did)
        if organization is None:
            return None
        local = min(max(self._local(did), 0.0), 1.0)
        trust = self.org_trust(organization)
        return FederatedScore(did, organization, local, trust, discount(local, trust))

    def score(self, did: str) -> float:
        explained = self.explain(did)
        return self._local(did) if explained is None else explained.score


__all__ = ["DEFAULT_ORG_TRUST", "DiscountedTrust", "FederatedScore", "discount"]
