"""CrewAI on the mesh: the tool-hook pair through the governor, and one delegation.

What the CrewAI adapter (``agentmesh.integrations.crewai``) costs a crew:

* **tool hook pair, 100 rules** (latency, goal from the issue: absolute p99 <= 50 us):
  the :class:`ToolGovernor` ``PRE_TOOL_CALL`` + ``POST_TOOL_CALL`` pair of a running
  :class:`MeshCrew` (embedded mesh, default configuration), called the way
  CrewAI's dispatcher calls them, from a thread that is not the mesh's (CrewAI
  runs crews in threads), on an allowed call: member lookup, the tool's spec,
  quarantine, ring capability (the trust engine is a ring source), a compiled
  policy of 100 rules (+10 glob deny rules), a rate limit, the audit of the
  allowed call, and the success receipt handed to the mesh's loop. Between calls
  the runner waits (not timed) until the loop signed, published and folded that
  receipt, as it would during the next LLM turn of a real crew, so each call
  starts after the mesh's own work on the previous one. Floor: an empty function
  pair called the same way.
* **tool hook pair, no success receipts**: the same with
  ``report_tool_successes=False`` (refusals and failures still make receipts):
  nothing to sign between calls.
* **tool hook pair, back to back**: the same without success receipts, calls one
  after the other with nothing in between: warm caches, the best case.
* **refused tool call, 100 rules**: a call a glob deny rule refuses: the audited
  refusal, ``HookAborted`` raised and caught, the policy-violation receipt, the
  refusal text for the model from ``POST_TOOL_CALL``; settled between calls.
* **through CrewAI's hook dispatch**: CrewAI's own ``run_before_tool_call_hooks``
  / ``run_after_tool_call_hooks`` with the mesh's pair registered, against the
  same with an empty pair registered, and (part b) with nothing registered,
  CrewAI's fast path: what registering any tool hook costs in CrewAI 1.15.
* **delegation, embedded**: one ``Delegator.delegate`` as ``delegate_to_mesh``
  makes it (submitted from a CrewAI-side thread to the mesh's loop): directory
  lookup ranked by trust, a signed ``crewai.task`` request, the serving node's
  interceptors (quarantine, admission, policy, trust), a real CrewAI agent of
  another crew running the task (a scripted LLM: one governed ``word_count``
  call, then the answer) in a worker thread, the signed reply, the success
  receipt. Floor: the same agent running the same task locally
  (``run_agent_task``: the same CrewAI call, the same scripted LLM, its tool call
  governed the same way).
* **delegation over NATS**: the same delegation to the same kind of crew running
  in its own process (``python -m agentmesh.integrations.crewai.worker``) over a
  real ``nats-server`` (loopback, JetStream for the directory and the receipt
  stream), against the embedded delegation measured in the same run.

The cases run in a child process of their own (``python -m benchmarks.bench_crewai
--serve``, driven by JSON lines on stdin / stdout: set a case up, run ``n``
operations of one side, tear it down), which times itself: CrewAI's large heap
(``gc.collect()`` ~150 ms) never enters the benchmark process, where it would
slow down and perturb every benchmark that runs after this one. The child
imports CrewAI with its telemetry and tracing off and its files in a scratch
directory, ``gc.freeze()``s what the imports built, and collects garbage before
each side as the harness does.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import gc
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from time import perf_counter, perf_counter_ns
from typing import IO, Any, TypeVar

from agentmesh.policy.engine import CompiledPolicy
from benchmarks.harness import Benchmark, Goal, Measured, Pair, RunConfig, within
from iatp.identity import AgentIdentity
from tests.natsserver import NatsServerProcess

BENCHMARK = Benchmark(
    name="crewai",
    title="CrewAI: the mesh's tool-hook pair vs an empty pair; a delegation vs the local task",
    description=(
        "Run in a child process (`python -m benchmarks.bench_crewai --serve`) that times "
        "itself, so CrewAI's heap stays out of the benchmark process. Tool hooks: the "
        "`ToolGovernor` PRE/POST pair of a running `MeshCrew` (embedded mesh, default "
        "configuration unless the case says otherwise), called as CrewAI's dispatcher calls "
        "them, from a thread that is not the mesh loop's, for a member's call to one of 64 "
        "tools under a policy of 100 rules (+10 glob deny rules) with a `rings` section (the "
        "trust engine is a ring source) and a rate limit: quarantine, ring capability, "
        "policy, rate limit, audit, and the receipt handed to the loop. Between calls the "
        "runner waits, not timed, until the loop signed, published and folded the call's "
        "receipt (as during a real crew's next LLM turn), except in the back-to-back case. "
        "The floor is an empty function pair called the same way; the goal from the issue "
        "is absolute (p99 <= 50 us, default configuration). The dispatch case runs CrewAI's "
        "own `run_before_tool_call_hooks` / `run_after_tool_call_hooks` with the mesh's pair "
        "registered vs an empty pair registered, part (b) with no hook registered at all. "
        "Delegation: `Delegator.delegate` submitted from a CrewAI-side thread (as "
        "`delegate_to_mesh` does) to an agent of another crew whose scripted LLM makes one "
        "governed `word_count` call and answers; embedded, the floor is the same agent "
        "running the same task locally; over NATS the other crew runs in its own process "
        "(`python -m agentmesh.integrations.crewai.worker`) on a real nats-server with "
        "JetStream, and the floor is the embedded delegation of the same run. Receipts are "
        "settled between delegations (not timed)."
    ),
)

ROOT = Path(__file__).resolve().parent.parent
MESH = "bench-crewai"
RULES = 100
TOOLS = 64
ANALYSIS = "analysis"
TEXT = "count the words of this sentence for the research crew"
REQUEST_TIMEOUT = 10.0
WORKER_START_TIMEOUT = 90.0
CHILD_START_TIMEOUT = 120.0
CHILD_COMMAND_TIMEOUT = 900.0
T = TypeVar("T")
LocalCase = Callable[[RunConfig], Iterator[Pair]]

# --------------------------------------------------------------------------- CrewAI, offline

_scratch: Path | None = None


def crewai_environment() -> dict[str, str]:
    """CrewAI offline (no telemetry, tracing or version check), its files in a scratch dir.

    CrewAI writes settings under ``$HOME`` and its task-output database under
    ``CREWAI_STORAGE_DIR`` when it is imported, and reads its switches then and at
    run time: the child process (and the worker it starts) runs with these set. The
    directory is this process's, removed when it exits.
    """
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix="agentmesh-bench-crewai-"))
        atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    return {
        "HOME": str(_scratch / "home"),
        "XDG_DATA_HOME": str(_scratch / "xdg-data"),
        "XDG_CACHE_HOME": str(_scratch / "xdg-cache"),
        "XDG_CONFIG_HOME": str(_scratch / "xdg-config"),
        "CREWAI_STORAGE_DIR": str(_scratch / "storage"),
        "CREWAI_DISABLE_TELEMETRY": "true",
        "CREWAI_DISABLE_TRACKING": "true",
        "OTEL_SDK_DISABLED": "true",
        "CREWAI_TRACING_ENABLED": "false",
        "CREWAI_DISABLE_VERSION_CHECK": "true",
    }


# --------------------------------------------------------------------------- the child process


class _Child:
    """``python -m benchmarks.bench_crewai --serve``: one JSON answer line per command."""

    def __init__(self) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_crewai", "--serve"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, **crewai_environment()},
        )
        threading.Thread(target=self._pump, name="bench-crewai-child", daemon=True).start()
        self._next(CHILD_START_TIMEOUT, "start")

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, timeout: float, what: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = None
        if line is None:
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"the crewai benchmark process did not answer {what}\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"crewai benchmark process: {what}: {answer['error']}")
        return answer

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.process.stdin.flush()
        return self._next(CHILD_COMMAND_TIMEOUT, cmd)

    def run(self, side: str, n: int) -> list[float] | Measured:
        answer = self.call("run", side=side, n=n)
        value: list[float] = answer["value"]
        parts: dict[str, list[float]] = answer.get("parts", {})
        return Measured(value, dict(parts)) if parts else value

    def close(self) -> None:
        process = self.process
        try:
            with contextlib.suppress(OSError, ValueError):
                if process.stdin is not None:
                    process.stdin.close()  # it leaves at the end of its stdin
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        finally:
            self._stderr.close()


_child: _Child | None = None


def _the_child() -> _Child:
    global _child
    if _child is None or _child.process.poll() is not None:
        _child = _Child()
        atexit.register(_child.close)
    return _child


def _close_child() -> None:
    global _child
    if _child is not None:
        _child.close()
        _child = None


_LOCAL: dict[str, LocalCase] = {}


def _case(
    name: str,
    *,
    subject: str,
    floor: str,
    goal: Goal | None = None,
    ops: int | None = None,
    quick_ops: int | None = None,
) -> Callable[[LocalCase], LocalCase]:
    """Register a latency case whose runners live in the child process (see the docstring)."""

    def register(local: LocalCase) -> LocalCase:
        _LOCAL[name] = local

        def remote(config: RunConfig) -> Iterator[Pair]:
            child = _the_child()
            child.call("setup", case=name, quick=config.quick)
            try:
                yield Pair(lambda n: child.run("subject", n), lambda n: child.run("floor", n))
            finally:
                try:
                    child.call("teardown")
                finally:
                    if name == BENCHMARK.cases[-1].name:
                        _close_child()

        BENCHMARK.latency(
            name, subject=subject, floor=floor, goal=goal, ops=ops, quick_ops=quick_ops
        )(remote)
        return local

    return register


def _as_lists(result: object) -> dict[str, Any]:
    if isinstance(result, Measured):
        parts = {name: list(value) for name, value in result.parts.items()}
        return {"value": list(result.value), "parts": parts}
    assert isinstance(result, Sequence)
    return {"value": list(result)}


def serve() -> int:
    """The child: set cases up, run their sides, tear them down, as the parent says."""
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever else prints (CrewAI's console) goes to stderr, not the protocol

    def answer(doc: dict[str, Any]) -> None:
        answers.write(json.dumps(doc) + "\n")
        answers.flush()

    import crewai.hooks  # noqa: F401  (imported once, then frozen out of the collector)

    import agentmesh.integrations.crewai  # noqa: F401

    gc.collect()
    gc.freeze()
    answer({"ready": True})
    running: Iterator[Pair] | None = None
    pair: Pair | None = None
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["cmd"] == "setup":
                running = _LOCAL[command["case"]](RunConfig.for_mode(bool(command["quick"])))
                pair = next(running)
                answer({"ok": True})
            elif command["cmd"] == "run":
                if pair is None:
                    raise RuntimeError("no case is set up")
                runner = pair.subject if command["side"] == "subject" else pair.floor
                gc.collect()
                answer(_as_lists(runner(int(command["n"]))))
            elif command["cmd"] == "teardown":
                pair = None
                if running is not None:
                    running.close()
                running = None
                answer({"ok": True})
            else:
                raise ValueError(f"unknown command {command['cmd']!r}")
        except Exception as exc:
            answer({"error": f"{type(exc).__name__}: {exc}"})
    if running is not None:
        running.close()
    return 0


# --------------------------------------------------------------------------- the mesh's loop


class _MeshLoop:
    """The mesh's event loop in a thread of its own; the runners play CrewAI's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="bench-crewai-mesh", daemon=True
        )
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.loop.shutdown_default_executor(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


def _mesh_loop(stack: contextlib.ExitStack) -> _MeshLoop:
    mesh_loop = _MeshLoop()
    stack.callback(mesh_loop.close)
    return mesh_loop


def _join(stack: contextlib.ExitStack, mesh_loop: _MeshLoop, mesh: Any) -> Any:
    """Start a MeshCrew on the loop; leaving the stack closes it there."""
    mesh_loop.run(mesh.start())
    stack.callback(lambda: mesh_loop.run(mesh.aclose()))
    return mesh


# --------------------------------------------------------------------------- tool hooks


def make_policy(rules: int) -> CompiledPolicy:
    """``rules`` allow rules (one per tool action) + one glob deny rule per ten, rings, a limit."""
    body: list[dict[str, Any]] = []
    for i in range(rules):
        body.append(
            {
                "id": f"allow-{i}",
                "effect": "allow",
                "match": {"actions": [f"tool.{i}"], "kinds": ["tool"]},
                "when": {"args.amount": {"lt": 1000}},
            }
        )
        if i % 10 == 0:
            body.append(
                {
                    "id": f"deny-flag-{i}",
                    "effect": "deny",
                    "match": {"actions": [f"tool.{i // 10}*"], "kinds": ["tool"]},
                    "when": {"args.flag": {"eq": True}},
                }
            )
    return CompiledPolicy.from_data(
        {
            "version": 1,
            "name": f"bench-crewai-{rules}",
            "rules": body,
            "rings": {"capabilities": {1: ["*"], 2: ["tool.*"], 3: ["tool.*"]}},
            "rate_limits": [{"actions": ["tool.*"], "rate": 1e9, "burst": 1e9}],
        }
    )


def _empty(context: object) -> None:
    return None


class _HookBench:
    """A running MeshCrew with one member, and the hook contexts of its tool calls."""

    def __init__(self, stack: contextlib.ExitStack, *, refused: bool, successes: bool) -> None:
        from crewai import Agent, Crew, Task
        from crewai.hooks import ToolCallHookContext

        from agentmesh.integrations.crewai import (
            Answer,
            CrewMeshConfig,
            MeshCrew,
            ScriptedLLM,
            ToolSpec,
        )

        self.agent = Agent(
            role="worker",
            goal="use tools",
            backstory="A benchmark agent.",
            llm=ScriptedLLM.of(Answer("done")),
        )
        self.crew = Crew(
            agents=[self.agent],
            tasks=[Task(description="work", expected_output="done", agent=self.agent)],
        )
        config = CrewMeshConfig(
            policy=make_policy(RULES),
            name="bench",
            mesh=MESH,
            tools={f"tool_{i}": ToolSpec(f"tool.{i}") for i in range(RULES)},
            report_tool_successes=successes,
        )
        self.mesh_loop = _mesh_loop(stack)
        self.mesh = _join(stack, self.mesh_loop, MeshCrew(self.crew, config))
        self.hooks = self.mesh.hooks
        self.contexts = []
        for i in range(TOOLS):
            arguments = {"amount": (i * 37) % 1000, "flag": refused}
            name = f"tool_{(i * 7) % RULES}"
            if refused:  # only the tools a glob deny rule covers (tool.0*, ..., tool.9*)
                name = f"tool_{i % 10}"
            before = ToolCallHookContext(name, arguments, None, agent=self.agent, crew=self.crew)  # type: ignore[arg-type]
            after = ToolCallHookContext(
                name,
                arguments,
                None,  # type: ignore[arg-type]
                agent=self.agent,
                crew=self.crew,
                tool_result="ok",
                raw_tool_result="ok",
            )
            self.contexts.append((before, after))

    def settle(self) -> None:
        """Wait until the loop signed, published and folded every receipt queued so far."""
        self.mesh_loop.run(self.mesh.settle(timeout=10.0))

    def check(self, *, refused: bool) -> None:
        """One call each way through the real hooks, to prove the subject does what it says."""
        from crewai.hooks import HookAborted

        before, after = self.contexts[0]
        published = self.mesh.reporter.published
        try:
            self.hooks.before(before)
        except HookAborted as aborted:
            if not refused:
                raise RuntimeError(f"the benchmark's call was refused: {aborted.reason}") from None
        else:
            if refused:
                raise RuntimeError("the benchmark's refused call was allowed")
        text = self.hooks.after(after)
        if refused and not (text or "").startswith("refused by the mesh: policy_denied"):
            raise RuntimeError(f"no refusal text for the model: {text!r}")
        self.settle()
        expected = published + (self.hooks.report_successes or refused)
        if self.mesh.reporter.published != expected:
            raise RuntimeError("the call's receipt was not published as configured")

    def runner(
        self,
        before_hook: Callable[[Any], object],
        after_hook: Callable[[Any], object],
        *,
        settle: bool = True,
    ) -> Callable[[int], list[float]]:
        """Per-call latencies of the pair; ``settle``: receipts settled after each call."""
        from crewai.hooks import HookAborted

        contexts = self.contexts

        def run(n: int) -> list[float]:
            samples = []
            count = len(contexts)
            for i in range(n):
                before, after = contexts[i % count]
                start = perf_counter_ns()
                try:  # noqa: SIM105 (no context manager's calls inside the timing)
                    before_hook(before)
                except HookAborted:  # CrewAI's dispatcher catches it the same way
                    pass
                after_hook(after)
                samples.append((perf_counter_ns() - start) * 1e-9)
                if settle:
                    self.settle()
            return samples

        return run


def _hook_case(*, refused: bool, successes: bool, settle: bool = True) -> LocalCase:
    def factory(config: RunConfig) -> Iterator[Pair]:
        with contextlib.ExitStack() as stack:
            bench = _HookBench(stack, refused=refused, successes=successes)
            bench.check(refused=refused)
            hooks = bench.hooks
            yield Pair(
                bench.runner(hooks.before, hooks.after, settle=settle),
                bench.runner(_empty, _empty, settle=settle),
            )

    return factory


_case(
    "tool hook pair, 100 rules",
    subject="the mesh's `PRE_TOOL_CALL` + `POST_TOOL_CALL` hooks (`ToolGovernor.before` / "
    "`.after`) on an allowed call, default configuration (allowed call audited, success "
    "receipt handed to the mesh's loop); the receipt settled between calls, not timed",
    floor="an empty function pair called the same way, with the same contexts",
    goal=within(50e-6, metric="p99"),
    ops=1000,
    quick_ops=50,
)(_hook_case(refused=False, successes=True))

_case(
    "tool hook pair, no success receipts",
    subject="the same with `report_tool_successes=False` (nothing queued for an allowed call)",
    floor="an empty function pair called the same way, with the same contexts",
    ops=1000,
    quick_ops=50,
)(_hook_case(refused=False, successes=False))

_case(
    "tool hook pair, back to back",
    subject="the pair without success receipts, called back to back with nothing settled "
    "in between (warm caches, an idle loop: the best case)",
    floor="an empty function pair called the same way, with the same contexts",
)(_hook_case(refused=False, successes=False, settle=False))

_case(
    "refused tool call, 100 rules",
    subject="the same pair on a call a glob deny rule refuses (refusal audited, "
    "`HookAborted` raised and caught, policy-violation receipt queued, refusal text)",
    floor="an empty function pair called the same way, with the same contexts",
    ops=1000,
    quick_ops=50,
)(_hook_case(refused=True, successes=True))


@_case(
    "through CrewAI's hook dispatch",
    subject="CrewAI's `run_before_tool_call_hooks` + `run_after_tool_call_hooks` with the "
    "mesh's pair registered (allowed call, default configuration)",
    floor="the same with an empty pair registered; part (b): with no hook registered "
    "(CrewAI's fast path)",
    ops=1000,
    quick_ops=50,
)
def dispatch_case(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        from crewai.hooks import InterceptionPoint, register_hook, unregister_hook
        from crewai.hooks.tool_hooks import run_after_tool_call_hooks, run_before_tool_call_hooks

        bench = _HookBench(stack, refused=False, successes=True)
        bench.check(refused=False)
        hooks = bench.hooks
        hooks.uninstall()  # each side registers its own pair for its rounds
        dispatch = bench.runner(run_before_tool_call_hooks, run_after_tool_call_hooks)

        def subject(n: int) -> list[float]:
            hooks.install()
            try:
                return dispatch(n)
            finally:
                hooks.uninstall()

        def floor(n: int) -> Measured:
            register_hook(InterceptionPoint.PRE_TOOL_CALL, _empty)
            register_hook(InterceptionPoint.POST_TOOL_CALL, _empty)
            try:
                empty_pair = dispatch(n)
            finally:
                unregister_hook(InterceptionPoint.PRE_TOOL_CALL, _empty)
                unregister_hook(InterceptionPoint.POST_TOOL_CALL, _empty)
            return Measured(empty_pair, {"(b) no hook registered": dispatch(n)})

        yield Pair(subject, floor)


# --------------------------------------------------------------------------- delegation


def _crew(role: str, llm: Any, tools: list[Any]) -> Any:
    from crewai import Agent, Crew, Task

    agent = Agent(
        role=role, goal=f"be a good {role}", backstory="A benchmark agent.", llm=llm, tools=tools
    )
    return Crew(agents=[agent], tasks=[Task(description="work", expected_output="x", agent=agent)])


def _research_crew(
    stack: contextlib.ExitStack,
    mesh_loop: _MeshLoop,
    identity: AgentIdentity,
    anchors: tuple[str, ...],
    **where: Any,
) -> Any:
    """A crew whose ``lead`` delegates (``delegate_to_mesh``), joined and waiting."""
    from agentmesh.integrations.crewai import (
        Answer,
        CrewMeshConfig,
        DelegationSettings,
        MeshCrew,
        ScriptedLLM,
    )
    from agentmesh.integrations.crewai.demo import DEMO_TOOLS, demo_policy, offline_egress

    config = CrewMeshConfig(
        policy=demo_policy(),
        name="research",
        mesh=MESH,
        delegates=("lead",),
        tools=DEMO_TOOLS,
        egress=offline_egress(),
        anchors=anchors,
        delegation=DelegationSettings(timeout=REQUEST_TIMEOUT, max_attempts=1),
    )
    the_crew = _crew("lead", ScriptedLLM.of(Answer("done")), [])
    return _join(stack, mesh_loop, MeshCrew(the_crew, config, identity=identity, **where))


def _analysis_crew(
    stack: contextlib.ExitStack,
    mesh_loop: _MeshLoop,
    identity: AgentIdentity,
    anchors: tuple[str, ...],
    **where: Any,
) -> Any:
    """A crew whose ``analyst`` offers ``analysis`` (the worker process's crew, here)."""
    from agentmesh.integrations.crewai import CrewMeshConfig, MeshCrew
    from agentmesh.integrations.crewai.demo import (
        DEMO_TOOLS,
        analyst_llm,
        demo_policy,
        demo_tools,
        offline_egress,
    )

    config = CrewMeshConfig(
        policy=demo_policy(),
        name="analysis",
        mesh=MESH,
        capabilities={"analyst": (ANALYSIS,)},
        tools=DEMO_TOOLS,
        egress=offline_egress(),
        anchors=anchors,
    )
    the_crew = _crew("analyst", analyst_llm(), demo_tools())
    return _join(stack, mesh_loop, MeshCrew(the_crew, config, identity=identity, **where))


async def _candidate(research: Any, timeout: float) -> None:
    """Wait until the analyst's card reached the research crew's directory."""
    async with asyncio.timeout(timeout):
        while not research.delegator.candidates(ANALYSIS):  # noqa: ASYNC110 (no card event)
            await asyncio.sleep(0.02)


def _expected_output() -> str:
    return f"words: {len(TEXT.split())}"


class _Delegations:
    """Timed delegations from the research crew's lead, as ``delegate_to_mesh`` makes them."""

    def __init__(self, mesh_loop: _MeshLoop, research: Any, *others: Any) -> None:
        from agentmesh.integrations.crewai import TaskRequest

        self.mesh_loop = mesh_loop
        self.research = research
        self.crews = (research, *others)
        self.lead = research.member("lead")
        self.request = TaskRequest(ANALYSIS, TEXT)

    def settle(self) -> None:
        for crew in self.crews:
            self.mesh_loop.run(crew.settle(timeout=10.0))

    def run(self, n: int) -> list[float]:
        samples = []
        delegator = self.research.delegator
        for _ in range(n):
            start = perf_counter()
            result = self.mesh_loop.run(
                delegator.delegate(self.lead, self.request), timeout=REQUEST_TIMEOUT * 2
            )
            samples.append(perf_counter() - start)
            if result.output != _expected_output():
                raise RuntimeError(f"the delegated task answered {result.output!r}")
            self.settle()
        return samples


@_case(
    "delegation, embedded",
    subject="`Delegator.delegate(lead, task)` submitted from a CrewAI-side thread: trust-ranked "
    "lookup, signed request, the other crew's agent runs the task (one governed tool call, "
    "scripted LLM) in a worker thread, signed reply, receipt",
    floor="the same agent running the same task locally (`run_agent_task`: the same CrewAI "
    "call, its tool call governed the same way)",
    ops=100,
    quick_ops=5,
)
def delegation_embedded(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        from agentmesh.integrations.crewai.tasks import run_agent_task
        from agentmesh.transport.memory import InMemoryBus

        bus = InMemoryBus()
        mesh_loop = _mesh_loop(stack)
        ids = (AgentIdentity.generate(), AgentIdentity.generate())
        anchors = tuple(i.did for i in ids)
        research = _research_crew(stack, mesh_loop, ids[0], anchors, bus=bus)
        analysis = _analysis_crew(stack, mesh_loop, ids[1], anchors, bus=bus)
        mesh_loop.run(_candidate(research, REQUEST_TIMEOUT))
        delegations = _Delegations(mesh_loop, research, analysis)
        analyst = analysis.member("analyst")

        def local(n: int) -> list[float]:
            samples = []
            for _ in range(n):
                start = perf_counter()
                output = run_agent_task(analyst, delegations.request)
                samples.append(perf_counter() - start)
                if output != _expected_output():
                    raise RuntimeError(f"the local task answered {output!r}")
                delegations.settle()
            return samples

        yield Pair(delegations.run, local)


class _WorkerProcess:
    """``python -m agentmesh.integrations.crewai.worker``: JSON lines out, leaves at stdin EOF."""

    def __init__(self, *args: str) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentmesh.integrations.crewai.worker",
                "--stop-on-stdin-eof",
                *args,
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,  # the environment is this process's: CrewAI's, offline
        )
        # Drained all along: the worker's last line (its stats) can exceed a pipe's buffer.
        threading.Thread(target=self._pump, name="crewai-worker-out", daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_ready(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=WORKER_START_TIMEOUT)
        except queue.Empty:
            line = None
        if line is None:
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"the crewai worker was not ready\n{tail}")
        ready: dict[str, Any] = json.loads(line)
        if ready.get("event") != "ready":
            raise RuntimeError(f"the crewai worker said {ready!r} first")
        return ready

    def close(self) -> None:
        process = self.process
        try:
            with contextlib.suppress(OSError, ValueError):
                if process.stdin is not None:
                    process.stdin.close()  # it leaves at the end of its stdin
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        finally:
            self._stderr.close()


@_case(
    "delegation over NATS",
    subject="the same delegation to the analyst of a crew in its own process "
    "(`python -m agentmesh.integrations.crewai.worker`, same scripted task) over a real "
    "nats-server with JetStream",
    floor="the embedded delegation (both crews in this process, in-memory bus), "
    "interleaved in the same run",
    ops=100,
    quick_ops=5,
)
def delegation_nats(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        from agentmesh.transport.memory import InMemoryBus

        server = NatsServerProcess()  # JetStream: directory cards, receipt stream
        stack.callback(server.close)
        server.start()
        research_id, worker_id = AgentIdentity.generate(), AgentIdentity.generate()
        anchors = (research_id.did, worker_id.did)
        worker = _WorkerProcess(
            "--nats",
            server.url,
            "--mesh",
            MESH,
            "--name",
            "analysis",
            "--member",
            f"analyst={ANALYSIS}",
            "--anchor",
            research_id.did,
            "--seed",
            worker_id.seed().hex(),
        )
        stack.callback(worker.close)
        mesh_loop = _mesh_loop(stack)
        # The floor's crews start while the worker imports CrewAI.
        bus = InMemoryBus()
        local_ids = (AgentIdentity.generate(), AgentIdentity.generate())
        local_anchors = tuple(i.did for i in local_ids)
        local_research = _research_crew(stack, mesh_loop, local_ids[0], local_anchors, bus=bus)
        local_analysis = _analysis_crew(stack, mesh_loop, local_ids[1], local_anchors, bus=bus)
        mesh_loop.run(_candidate(local_research, REQUEST_TIMEOUT))
        embedded = _Delegations(mesh_loop, local_research, local_analysis)
        ready = worker.wait_ready()
        if ready.get("crew") != worker_id.did:
            raise RuntimeError("the worker runs another crew identity")
        research = _research_crew(stack, mesh_loop, research_id, anchors, nats_url=server.url)
        mesh_loop.run(_candidate(research, 30.0))
        over_nats = _Delegations(mesh_loop, research)
        yield Pair(over_nats.run, embedded.run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_crewai")
    parser.add_argument(
        "--serve", action="store_true", help="run as the cases' child process (JSON lines)"
    )
    args = parser.parse_args(argv)
    if not args.serve:
        parser.error("run the benchmark with `python -m benchmarks run --only crewai`")
    return serve()


if __name__ == "__main__":
    sys.exit(main())
