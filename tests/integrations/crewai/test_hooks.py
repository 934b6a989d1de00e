"""The crew's PRE/POST tool hooks: every member's tool call goes through the governor."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from crewai import Crew, Task
from crewai.crews.crew_output import CrewOutput
from crewai.events.event_bus import crewai_event_bus
from crewai.events.types.hook_events import HookDispatchedEvent
from crewai.hooks import (
    InterceptionPoint,
    ToolCallHookContext,
    get_hooks,
    register_hook,
    unregister_hook,
)

from agentmesh.audit import AuditEvent, MemoryAuditSink
from agentmesh.integrations.crewai import MeshCrew, ScriptedLLM, ToolCall, ToolSpec
from agentmesh.integrations.crewai.hooks import (
    ARGS_CHANGED,
    HOOK_ERROR,
    MESH_CLOSED,
    UNKNOWN_MEMBER,
)
from agentmesh.integrations.crewai.scripted_llm import Answer
from agentmesh.policy.engine import CompiledPolicy
from agentmesh.transport.memory import InMemoryBus
from iatp.identity import AgentIdentity
from tests.integrations.crewai.crews import CountingTool, agent, config, crew, mesh_name, named

ANSWER_WITH_RESULT = Answer("tool said: {last_tool_result}")


def script(*steps: ToolCall | Answer, native: bool = True) -> ScriptedLLM:
    return ScriptedLLM.of(*steps, native_tools=native)


async def test_allowed_call_runs_and_is_audited(bus: InMemoryBus) -> None:
    tool = CountingTool()
    llm = script(ToolCall("word_count", {"text": "a b c"}), ANSWER_WITH_RESULT)
    audit = MemoryAuditSink()
    async with MeshCrew(
        crew(agent("writer", llm, [tool])), config("c", mesh_name()), bus=bus, audit=audit
    ) as mesh:
        output = await mesh.kickoff()
        await mesh.settle()
        writer = mesh.member("writer").did
        assert output.raw == "tool said: words: 3"
        assert tool.runs == [{"text": "a b c"}]
        [decision] = mesh.hooks.decisions
        assert (decision.role, decision.action, decision.allowed, decision.rule) == (
            "writer",
            "text.word_count",
            True,
            "text-tools",
        )
        allowed = [e for e in audit if e.kind == "policy_allowed"]
        assert [(e.peer, e.subject) for e in allowed] == [(writer, "text.word_count")]
        # One receipt for the tool, one for the crew task; both successes about the writer.
        assert mesh.reporter.outcomes == {"success": 2}
        assert mesh.trust.engine.score(writer) > 0


@pytest.mark.parametrize("native", [True, False], ids=["native", "react"])
async def test_refused_call_is_blocked_with_its_code_and_the_team_continues(
    bus: InMemoryBus, native: bool
) -> None:
    shell, counter = named("run_shell"), CountingTool()
    rogue_llm = script(
        ToolCall("run_shell", {"command": "rm -rf /"}), ANSWER_WITH_RESULT, native=native
    )
    good_llm = script(ToolCall("word_count", {"text": "x y"}), ANSWER_WITH_RESULT, native=native)
    rogue, good = agent("rogue", rogue_llm, [shell]), agent("good", good_llm, [counter])
    audit = MemoryAuditSink()
    aborted: list[tuple[str, str | None, str | None]] = []
    with crewai_event_bus.scoped_handlers():

        @crewai_event_bus.on(HookDispatchedEvent)
        def seen(source: object, event: HookDispatchedEvent) -> None:
            aborted.append((event.outcome, event.abort_reason, event.abort_source))

        async with MeshCrew(
            crew(rogue, good), config("c", mesh_name()), bus=bus, audit=audit
        ) as mesh:
            output = await mesh.kickoff()
            await mesh.settle()
            crewai_event_bus.flush()
            rogue_did = mesh.member("rogue").did
            assert shell.runs == []  # the refused tool never ran
            assert counter.runs == [{"text": "x y"}]  # the rest of the crew carried on
            assert output.raw == "tool said: words: 2"
            first_answer = mesh.crew.tasks[0].output
            assert first_answer is not None
            assert first_answer.raw == (
                "tool said: refused by the mesh: policy_denied (rule no-shell): "
                "shell.exec: rule 'no-shell': deny"
            )
            assert mesh.hooks.refused == {"policy_denied": 1}
            denied = [e for e in audit if e.kind == "policy_denied"]
            assert [(e.code, e.peer, e.subject) for e in denied] == [
                ("policy_denied", rogue_did, "shell.exec")
            ]
            assert "rule=no-shell" in denied[0].detail
            assert mesh.reporter.outcomes["policy_violation"] == 1
            explained = mesh.trust.engine.explain(rogue_did)
            assert explained.negative > 0
    assert ("aborted", "policy_denied", "agentmesh") in aborted


async def test_egress_guard_refuses_the_metadata_address(bus: InMemoryBus) -> None:
    fetch = named("fetch_url")
    llm = script(
        ToolCall("fetch_url", {"url": "http://169.254.169.254/latest"}), ANSWER_WITH_RESULT
    )
    async with MeshCrew(
        crew(agent("web", llm, [fetch])), config("c", mesh_name()), bus=bus
    ) as mesh:
        output = await mesh.kickoff()
    assert fetch.runs == []
    assert "refused by the mesh: egress_denied" in output.raw
    assert "cloud metadata endpoint" in output.raw


async def test_budgeted_argument_must_be_a_number(bus: InMemoryBus) -> None:
    pay = named("pay")
    policy = CompiledPolicy.from_data(
        {
            "version": 1,
            "name": "pay",
            "rules": [{"id": "pay", "effect": "allow", "match": {"actions": ["pay"]}}],
            "budgets": [{"actions": ["pay"], "window_s": 60, "cost": 100}],
        }
    )
    tools = {"pay": ToolSpec("pay", cost_arg="amount")}
    llm = script(
        ToolCall("pay", {"amount": "lots"}),
        ToolCall("pay", {"amount": 60}),
        ToolCall("pay", {"amount": 60}),
        ANSWER_WITH_RESULT,
    )
    cfg = config("c", mesh_name(), tools=tools, policy=policy)
    async with MeshCrew(crew(agent("payer", llm, [pay])), cfg, bus=bus) as mesh:
        output = await mesh.kickoff()
        refused = [(d.code, d.rule) for d in mesh.hooks.decisions if not d.allowed]
    assert len(pay.runs) == 1  # 60 fits the budget of 100; the next 60 does not
    assert refused == [("policy_denied", "budget"), ("budget_exceeded", "budget")]
    assert "budget_exceeded" in output.raw


async def test_an_agent_without_mesh_identity_is_refused(bus: InMemoryBus) -> None:
    tool = CountingTool()
    member = agent("member", script(ANSWER_WITH_RESULT), [])
    audit = MemoryAuditSink()
    the_crew = crew(member)
    async with MeshCrew(the_crew, config("c", mesh_name()), bus=bus, audit=audit) as mesh:
        stowaway = agent(
            "stowaway", script(ToolCall("word_count", {"text": "a"}), ANSWER_WITH_RESULT), [tool]
        )
        the_crew.agents.append(stowaway)
        the_crew.tasks.append(Task(description="sneak", expected_output="x", agent=stowaway))
        output = await mesh.kickoff()
    assert tool.runs == []
    assert f"refused by the mesh: {UNKNOWN_MEMBER}" in output.raw
    assert [e.code for e in audit if e.code == UNKNOWN_MEMBER] == [UNKNOWN_MEMBER]


async def test_hooks_are_crew_scoped(bus: InMemoryBus) -> None:
    """A crew that is not on the mesh, in the same process, is not governed by it."""
    governed_shell, free_shell = named("run_shell"), named("run_shell")
    governed = crew(
        agent(
            "a",
            script(ToolCall("run_shell", {"command": "ls"}), ANSWER_WITH_RESULT),
            [governed_shell],
        )
    )
    free = crew(
        agent(
            "a", script(ToolCall("run_shell", {"command": "ls"}), ANSWER_WITH_RESULT), [free_shell]
        )
    )
    async with MeshCrew(governed, config("c", mesh_name()), bus=bus) as mesh:
        assert len(get_hooks(InterceptionPoint.PRE_TOOL_CALL)) >= 1
        await asyncio.to_thread(free.kickoff)
        await mesh.kickoff()
    assert len(free_shell.runs) == 1
    assert governed_shell.runs == []


async def test_a_copy_of_the_crew_is_refused_not_run_ungoverned(bus: InMemoryBus) -> None:
    """kickoff_for_each runs copies of the crew and its agents: not members, not free."""
    shell = named("run_shell")
    llm = ScriptedLLM.of(
        ToolCall("run_shell", {"command": "rm -rf /"}), ANSWER_WITH_RESULT, repeat=True
    )
    the_crew = crew(agent("rogue", llm, [shell]))
    audit = MemoryAuditSink()
    async with MeshCrew(the_crew, config("c", mesh_name()), bus=bus, audit=audit) as mesh:
        [output] = await asyncio.to_thread(the_crew.kickoff_for_each, [{}])
        assert mesh.hooks.refused == {UNKNOWN_MEMBER: 1}
    assert isinstance(output, CrewOutput)
    assert shell.runs == []
    assert output.raw.startswith(f"tool said: refused by the mesh: {UNKNOWN_MEMBER}")
    assert "is a copy of member 'rogue'" in output.raw
    assert [e.code for e in audit if e.kind == "policy_denied"] == [UNKNOWN_MEMBER]


async def test_quarantined_member_is_refused_without_a_violation_receipt(
    bus: InMemoryBus, authority: AgentIdentity
) -> None:
    tool = CountingTool()
    llm = script(ToolCall("word_count", {"text": "a"}), ANSWER_WITH_RESULT)
    cfg = config("c", mesh_name(), authorities=(authority.did,))
    async with MeshCrew(crew(agent("m", llm, [tool])), cfg, bus=bus) as mesh:
        did = mesh.member("m").did
        await mesh.kill_switch.quarantine(authority, did, "test")
        output = await mesh.kickoff()
        await mesh.settle()
        assert tool.runs == []
        assert "refused by the mesh: quarantined" in output.raw
        assert "policy_violation" not in mesh.reporter.outcomes


async def test_a_closing_crew_refuses_and_then_unhooks(bus: InMemoryBus) -> None:
    tool = CountingTool()
    member = agent("m", script(ANSWER_WITH_RESULT), [tool])
    mesh = MeshCrew(crew(member), config("c", mesh_name()), bus=bus)
    before = len(get_hooks(InterceptionPoint.PRE_TOOL_CALL))
    async with mesh:
        assert len(get_hooks(InterceptionPoint.PRE_TOOL_CALL)) == before + 1
        hooks = mesh.hooks
        hooks.closed = True
        context = ToolCallHookContext("word_count", {"text": "a"}, None, agent=member)  # type: ignore[arg-type]
        with pytest.raises(Exception, match=MESH_CLOSED):
            hooks.before(context)
        assert hooks.after(context) is not None
        hooks.closed = False
    assert len(get_hooks(InterceptionPoint.PRE_TOOL_CALL)) == before
    assert not hooks.installed


async def test_arguments_changed_by_a_later_hook_are_audited(bus: InMemoryBus) -> None:
    tool = CountingTool()
    llm = script(ToolCall("word_count", {"text": "harmless"}), ANSWER_WITH_RESULT)
    audit = MemoryAuditSink()

    def tamper(context: ToolCallHookContext) -> None:
        context.tool_input["text"] = "changed after the decision"

    hook: Callable[[ToolCallHookContext], None] = tamper
    async with MeshCrew(
        crew(agent("m", llm, [tool])), config("c", mesh_name()), bus=bus, audit=audit
    ) as mesh:
        register_hook(InterceptionPoint.PRE_TOOL_CALL, hook)
        try:
            await mesh.kickoff()
        finally:
            unregister_hook(InterceptionPoint.PRE_TOOL_CALL, hook)
        assert mesh.hooks.refused[ARGS_CHANGED] == 1
    assert [e.code for e in audit if e.kind == "policy_warning"] == [ARGS_CHANGED]


async def test_crew_of_two_meshes_in_one_process_do_not_cross(bus: InMemoryBus) -> None:
    one, two = CountingTool(), CountingTool()
    c1 = crew(agent("m", script(ToolCall("word_count", {"text": "a"}), ANSWER_WITH_RESULT), [one]))
    c2 = crew(
        agent("m", script(ToolCall("word_count", {"text": "b c"}), ANSWER_WITH_RESULT), [two])
    )
    mesh = mesh_name()
    async with (
        MeshCrew(c1, config("one", mesh), bus=bus) as m1,
        MeshCrew(c2, config("two", mesh), bus=bus) as m2,
    ):
        await m1.kickoff()
        await m2.kickoff()
        assert [d.did for d in m1.hooks.decisions] == [m1.member("m").did]
        assert [d.did for d in m2.hooks.decisions] == [m2.member("m").did]


def test_crew_config_errors_are_typed() -> None:
    from agentmesh.integrations.crewai import CrewConfigError, CrewMeshConfig
    from agentmesh.integrations.crewai.demo import demo_policy

    with pytest.raises(CrewConfigError, match="capability"):
        CrewMeshConfig(policy=demo_policy(), capabilities={"a": ("Not A Name",)})
    with pytest.raises(CrewConfigError, match="did:key"):
        CrewMeshConfig(policy=demo_policy(), anchors=("alice",))
    with pytest.raises(CrewConfigError, match="CompiledPolicy"):
        CrewMeshConfig(policy="policy.yaml")  # type: ignore[arg-type]
    the_crew = crew(agent("a", script(ANSWER_WITH_RESULT)))
    with pytest.raises(CrewConfigError, match="no agent has the role"):
        MeshCrew(the_crew, CrewMeshConfig(policy=demo_policy(), delegates=("boss",)))
    twins = Crew(
        agents=[
            agent("twin", script(ANSWER_WITH_RESULT)),
            agent("twin", script(ANSWER_WITH_RESULT)),
        ],
        tasks=[],
    )
    with pytest.raises(CrewConfigError, match="share the role") as raised:
        MeshCrew(twins, CrewMeshConfig(policy=demo_policy()))
    assert raised.value.role == "twin"
    assert raised.value.code == "crewai_config"


class _PolicyAuditFails:
    """An audit sink that cannot write policy decisions (a full disk, a closed file)."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def append(self, event: AuditEvent) -> None:
        if event.kind.startswith("policy_"):
            raise OSError("no space left on device")
        self.events.append(event)


async def test_a_hook_that_cannot_decide_fails_closed(bus: InMemoryBus) -> None:
    """CrewAI runs a tool whose hook raised anything but HookAborted: the mesh's must not."""
    shell, counter = named("run_shell"), CountingTool()
    llm = script(
        ToolCall("run_shell", {"command": "rm -rf /"}),
        ToolCall("word_count", {"text": "a b"}),
        ANSWER_WITH_RESULT,
    )
    cfg = config("c", mesh_name())
    audit = _PolicyAuditFails()
    async with MeshCrew(crew(agent("m", llm, [shell, counter])), cfg, bus=bus, audit=audit) as mesh:
        output = await mesh.kickoff()
        assert mesh.hooks.refused == {HOOK_ERROR: 2}
        assert mesh.hooks.current_member() is None
    # The refusal could not be audited, and the allowed call could not be either: neither ran.
    assert shell.runs == []
    assert counter.runs == []
    assert output.raw == "tool said: refused by the mesh: crewai_hook_error: " + (
        "the mesh could not decide (OSError)"
    )


async def test_crewai_coworker_delegation_is_governed_call_by_call(bus: InMemoryBus) -> None:
    """CrewAI's own delegation tool and the coworker's calls inside it: each one decided."""
    counter = CountingTool()
    manager = agent(
        "manager",
        script(
            ToolCall(
                "delegate_work_to_coworker",
                {"task": "count the words", "context": "a b c", "coworker": "counter"},
            ),
            ANSWER_WITH_RESULT,
        ),
    )
    manager.allow_delegation = True
    worker = agent(
        "counter", script(ToolCall("word_count", {"text": "a b c"}), ANSWER_WITH_RESULT), [counter]
    )
    the_crew = Crew(
        agents=[manager, worker],
        tasks=[Task(description="get it counted", expected_output="a count", agent=manager)],
    )
    policy = CompiledPolicy.from_data(
        {
            "version": 1,
            "name": "nested",
            "rules": [
                {"id": "text", "effect": "allow", "match": {"actions": ["text.*"]}},
                {
                    "id": "coworkers",
                    "effect": "allow",
                    "match": {"actions": ["delegate_work_to_coworker"]},
                },
            ],
        }
    )
    cfg = config("c", mesh_name(), policy=policy)
    async with MeshCrew(the_crew, cfg, bus=bus) as mesh:
        output = await mesh.kickoff()
        await mesh.settle()
        assert counter.runs == [{"text": "a b c"}]
        assert output.raw == "tool said: tool said: words: 3"
        assert [(d.role, d.action, d.allowed) for d in mesh.hooks.decisions] == [
            ("manager", "delegate_work_to_coworker", True),
            ("counter", "text.word_count", True),
        ]
        # The coworker's call ends first, inside the delegating call: both have their outcome.
        assert mesh.hooks.results == {"success": 2}
        assert mesh.hooks.current_member() is None
