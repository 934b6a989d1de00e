"""Rings: capabilities per ring, immediate demotion, signed and audited elevations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agentmesh.audit import MemoryAuditSink
from agentmesh.policy import ElevationError, RingDenied, RingEnforcer, StaticRings, sign_elevation
from iatp.clock import ManualClock
from iatp.identity import AgentIdentity

CAPS = {1: ["*"], 2: ["pay.small", "read.*"], 3: ["read.public"]}
AGENT = AgentIdentity.generate().did


def make(
    **kwargs: object,
) -> tuple[RingEnforcer, StaticRings, ManualClock, MemoryAuditSink, AgentIdentity]:
    authority = AgentIdentity.generate()
    trust = StaticRings({AGENT: 2})
    clock = ManualClock()
    audit = MemoryAuditSink()
    enforcer = RingEnforcer(
        [trust],
        CAPS,
        authorities=[authority.did],
        clock=clock,
        audit=audit,
        node="n",
        **kwargs,  # type: ignore[arg-type]
    )
    return enforcer, trust, clock, audit, authority


def test_capabilities_and_demotion_apply_on_the_next_check() -> None:
    enforcer, trust, _, _, _ = make()
    assert enforcer.check(AGENT, "pay.small") == 2
    trust.set(AGENT, 3)  # a drift demotion
    with pytest.raises(RingDenied) as caught:
        enforcer.check(AGENT, "pay.small")
    assert (caught.value.ring, caught.value.did, caught.value.rule) == (3, AGENT, "ring-3")
    assert enforcer.check("did:key:unknown", "read.public") == 3


def test_most_restrictive_source_wins_and_ring_zero_is_never_an_agent() -> None:
    policy_cap = StaticRings({AGENT: 3}, default=0)
    enforcer = RingEnforcer([StaticRings({AGENT: 1}), policy_cap], CAPS)
    assert enforcer.ring(AGENT) == 3
    assert RingEnforcer([StaticRings(default=0)], CAPS).ring("x") == 1
    with pytest.raises(ValueError):
        RingEnforcer([], CAPS)


def test_signed_elevation_expires_and_is_audited() -> None:
    enforcer, trust, clock, audit, authority = make()
    trust.set(AGENT, 3)
    now = clock.now_ms()
    grant = sign_elevation(
        authority,
        subject=AGENT,
        ring=1,
        issued_at_ms=now,
        expires_at_ms=now + 60_000,
        reason="incident 7",
    )
    enforcer.elevate(grant)
    assert enforcer.check(AGENT, "admin.reboot") == 1
    clock.advance(60_000)
    assert enforcer.ring(AGENT) == 3
    assert audit.codes("ring") == ["elevated", "elevation_expired"]
    assert "incident 7" in audit.of_kind("ring")[0].detail


@pytest.mark.parametrize(
    "attack", ["not_authority", "forged", "tampered", "ring0", "expired", "too_long"]
)
def test_elevation_attacks_are_refused_and_audited(attack: str) -> None:
    enforcer, _, clock, audit, authority = make(max_elevation_ms=120_000)
    now = clock.now_ms()
    signer = AgentIdentity.generate() if attack == "not_authority" else authority
    grant = sign_elevation(
        signer, subject=AGENT, ring=1, issued_at_ms=now, expires_at_ms=now + 60_000, reason="r"
    )
    if attack == "forged":
        grant = replace(grant, signature=bytes(64))
    elif attack == "tampered":
        grant = replace(grant, expires_at_ms=now + 100_000)
    elif attack == "ring0":
        grant = sign_elevation(
            authority, subject=AGENT, ring=0, issued_at_ms=now, expires_at_ms=now + 1, reason="r"
        )
    elif attack == "expired":
        clock.advance(60_000)
    elif attack == "too_long":
        grant = sign_elevation(
            authority,
            subject=AGENT,
            ring=1,
            issued_at_ms=now,
            expires_at_ms=now + 10**9,
            reason="r",
        )
    with pytest.raises(ElevationError):
        enforcer.elevate(grant)
    assert enforcer.ring(AGENT) == 2
    assert audit.codes("ring") == ["elevation_refused"]


def test_elevation_can_be_ended_early() -> None:
    enforcer, _, clock, audit, authority = make()
    now = clock.now_ms()
    enforcer.elevate(
        sign_elevation(
            authority, subject=AGENT, ring=1, issued_at_ms=now, expires_at_ms=now + 1000, reason="r"
        )
    )
    assert enforcer.end_elevation(AGENT)
    assert not enforcer.end_elevation(AGENT)
    assert enforcer.ring(AGENT) == 2
    assert audit.codes("ring") == ["elevated", "elevation_ended"]
