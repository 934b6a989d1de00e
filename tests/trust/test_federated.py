"""Federated trust: a foreign agent's local score discounted by the trust in its organization."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trust.federated import DEFAULT_ORG_TRUST, DiscountedTrust, FederatedScore, discount

UNIT = st.floats(0.0, 1.0, allow_nan=False)
OUTSIDE = st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda x: not 0.0 <= x <= 1.0
) | st.sampled_from([math.nan, math.inf, -math.inf, -0.1, 1.0000001])


@given(UNIT, UNIT)
def test_the_discount_is_in_the_unit_interval_and_never_above_local(
    local: float, org_trust: float
) -> None:
    score = discount(local, org_trust)
    assert 0.0 <= score <= 1.0
    assert score <= local
    assert score == local * org_trust


@given(UNIT, UNIT, UNIT)
def test_the_discount_is_monotone_in_both_arguments(a: float, b: float, other: float) -> None:
    low, high = sorted((a, b))
    assert discount(low, other) <= discount(high, other)
    assert discount(other, low) <= discount(other, high)


@given(UNIT)
def test_full_org_trust_keeps_local_and_none_gives_zero(local: float) -> None:
    assert discount(local, 1.0) == local
    assert discount(local, 0.0) == 0.0
    assert discount(0.0, local) == 0.0


@given(UNIT, OUTSIDE)
def test_out_of_range_or_nan_raises_value_error(inside: float, outside: float) -> None:
    with pytest.raises(ValueError, match="org_trust must be in"):
        discount(inside, outside)
    with pytest.raises(ValueError, match="local must be in"):
        discount(outside, inside)


@pytest.mark.parametrize("value", ["0.5", None, 1j])
def test_non_numbers_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="local must be in"):
        discount(value, 0.5)  # type: ignore[arg-type]


def test_integers_in_range_are_numbers() -> None:
    assert discount(1, 0) == 0.0
    assert isinstance(discount(1, 1), float)


OURS, ACME_AGENT, BETA_AGENT = "did:key:ours", "did:key:acme-agent", "did:key:beta-agent"
LOCAL = {OURS: 0.9, ACME_AGENT: 0.8, BETA_AGENT: 1.5}  # a local score out of range is clamped
ORGS = {ACME_AGENT: "acme", BETA_AGENT: "beta"}


def scores(org_trust: dict[str, float] | None = None, **kw: float) -> DiscountedTrust:
    return DiscountedTrust(LOCAL.__getitem__, ORGS.get, org_trust, **kw)


def test_our_own_agents_are_untouched() -> None:
    trust = scores({"acme": 0.0})
    assert trust.score(OURS) == 0.9
    assert trust.explain(OURS) is None


def test_foreign_agents_are_discounted_by_their_org_and_explained() -> None:
    trust = scores({"acme": 0.25})
    assert trust.score(ACME_AGENT) == pytest.approx(0.2)
    explained = trust.explain(ACME_AGENT)
    assert explained is not None
    assert (explained.did, explained.organization) == (ACME_AGENT, "acme")
    assert (explained.local, explained.org_trust) == (0.8, 0.25)
    assert explained.score == pytest.approx(0.2)
    beta = trust.explain(BETA_AGENT)
    assert beta == FederatedScore(BETA_AGENT, "beta", 1.0, DEFAULT_ORG_TRUST, DEFAULT_ORG_TRUST)
    assert trust.org_trust("beta") == DEFAULT_ORG_TRUST == 0.5


def test_the_default_for_unlisted_partners_is_configurable() -> None:
    trust = scores({"acme": 1.0}, default=0.1)
    assert trust.score(ACME_AGENT) == 0.8
    assert trust.score(BETA_AGENT) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("org_trust", "default"), [({"acme": 1.5}, 0.5), ({}, -0.1), ({}, math.nan)]
)
def test_bad_settings_are_refused_up_front(org_trust: dict[str, float], default: float) -> None:
    with pytest.raises(ValueError, match="org_trust must be in"):
        scores(org_trust, default=default)


@given(local=UNIT, org=UNIT)
def test_a_foreign_agent_never_ranks_above_the_same_agent_at_home(local: float, org: float) -> None:
    trust = DiscountedTrust(
        lambda did: local, lambda did: "acme" if did == "f" else None, {"acme": org}
    )
    assert trust.score("f") <= trust.score("home") == local
