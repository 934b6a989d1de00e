"""Outcomes reported from CrewAI's threads become receipts without waking the mesh's loop."""

from __future__ import annotations

import asyncio

from agentmesh.integrations.crewai import MeshCrew
from agentmesh.integrations.crewai.outcomes import COLLECT_INTERVAL
from agentmesh.transport.memory import InMemoryBus
from tests.integrations.crewai.crews import agent, config, crew, mesh_name, wait_for
from tests.integrations.crewai.test_hooks import ANSWER_WITH_RESULT, script
from trust.evidence import Outcome


async def test_an_outcome_from_another_thread_is_published_without_a_flush(
    bus: InMemoryBus,
) -> None:
    the_crew = crew(agent("m", script(ANSWER_WITH_RESULT)))
    async with MeshCrew(the_crew, config("c", mesh_name()), bus=bus) as mesh:
        reporter, did = mesh.reporter, mesh.member("m").did
        await asyncio.to_thread(reporter.report, did, Outcome.SUCCESS, "tool.x")
        # Nothing woke the loop for it: the collector picks it up within an interval.
        await wait_for(lambda: reporter.published == 1, timeout=COLLECT_INTERVAL * 40)
        assert reporter.outcomes == {"success": 1}


async def test_flush_collects_other_threads_outcomes_at_once(bus: InMemoryBus) -> None:
    the_crew = crew(agent("m", script(ANSWER_WITH_RESULT)))
    async with MeshCrew(the_crew, config("c", mesh_name()), bus=bus) as mesh:
        reporter, did = mesh.reporter, mesh.member("m").did
        reporter.collect_interval = 3600.0  # only a flush can collect them now
        await asyncio.sleep(COLLECT_INTERVAL * 2)  # the running collector's wait ends

        def report_three() -> None:
            for outcome in (Outcome.SUCCESS, Outcome.FAILURE, Outcome.POLICY_VIOLATION):
                reporter.report(did, outcome, "tool.x")

        await asyncio.to_thread(report_three)
        await reporter.flush(timeout=5.0)
        assert reporter.published == 3
        assert mesh.trust.engine.explain(did).negative > 0


async def test_outcomes_reported_after_leaving_are_dropped(bus: InMemoryBus) -> None:
    the_crew = crew(agent("m", script(ANSWER_WITH_RESULT)))
    mesh = MeshCrew(the_crew, config("c", mesh_name()), bus=bus)
    async with mesh:
        reporter, did = mesh.reporter, mesh.member("m").did
    await asyncio.to_thread(reporter.report, did, Outcome.SUCCESS, "tool.x")
    assert reporter.dropped == 1
    assert reporter.published == 0
