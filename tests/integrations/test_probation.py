"""Both framework adapters keep an agent on probation eligible, ranked last.

A first failure-rate alarm flags an agent without sandboxing it (``docs/trust.md``
section 4): the product's selection policy still gives it half its work, so the
reports that clear an honest agent keep coming. The adapters rank by score, which
the flag cuts: the agent gets a task only when the unflagged ones are gone or fail.
A sandboxing alarm (hard failures) takes it out.
"""

from __future__ import annotations

from agentmesh.directory.directory import Directory
from agentmesh.integrations.autogen.routing import HostResolver
from agentmesh.integrations.crewai.delegation import DelegationSettings, Delegator
from agentmesh.integrations.crewai.member import Roster
from agentmesh.transport.memory import InMemoryTransport
from iatp.clock import ManualClock
from tests.trust.conftest import dids, receipt
from trust import Outcome, TrustConfig, TrustEngine

OBSERVER, STEADY, FLAKY = dids(3, start=700)


def _engine(hard: bool) -> TrustEngine:
    """STEADY and FLAKY with a clean history; FLAKY then fails until its first alarm
    (the failure-rate test only, or the outcome CUSUM as well when ``hard``)."""
    clock = ManualClock(1_700_000_000_000)
    config = TrustConfig(cusum_threshold=4.0 if hard else 1e9)
    engine = TrustEngine(pre_trusted=[OBSERVER], clock=clock, config=config)
    for _ in range(150):
        clock.advance(1000)
        engine.record(receipt(OBSERVER, STEADY, at_ms=clock.now_ms()))
        engine.record(receipt(OBSERVER, FLAKY, at_ms=clock.now_ms()))
    engine.recompute()
    while not engine.flagged(FLAKY):
        clock.advance(1000)
        engine.record(receipt(OBSERVER, FLAKY, Outcome.FAILURE, at_ms=clock.now_ms()))
    engine.recompute()
    return engine


def _adapters(engine: TrustEngine) -> tuple[Delegator, HostResolver]:
    directory = Directory(InMemoryTransport())
    delegator = Delegator(directory, engine, Roster(), None, DelegationSettings())
    return delegator, HostResolver(directory, {}, trust=engine)


def test_an_agent_on_probation_stays_eligible_and_ranks_last() -> None:
    engine = _engine(hard=False)
    assert engine.flagged(FLAKY)
    assert not engine.sandboxed(FLAKY)
    assert engine.score(FLAKY) < engine.score(STEADY)
    for adapter in _adapters(engine):
        assert adapter.eligible(FLAKY)
        assert adapter.eligible(STEADY)


def test_a_sandboxed_agent_is_not_eligible() -> None:
    engine = _engine(hard=True)
    assert engine.sandboxed(FLAKY)
    for adapter in _adapters(engine):
        assert not adapter.eligible(FLAKY)
        assert adapter.eligible(STEADY)
