"""A crew in its own process that serves delegated tasks (``-m ...crewai.worker``).

::

    python -m agentmesh.integrations.crewai.worker --nats nats://127.0.0.1:4222 \\
        --member analyst=analysis --script analyst.json --anchor did:key:z6Mk...

Each ``--member ROLE=CAP[,CAP...]`` becomes a CrewAI agent with the demo tools
(``word_count``, ``fetch_url``, ``run_shell``) and a scripted LLM (``--script``, a
JSON script, default: count the words of the task), joined to the mesh with the
demo policy (or ``--policy FILE``). The process prints JSON lines: ``ready`` (the
crew's and members' DIDs), then, on SIGTERM, SIGINT or end of stdin, ``stats``
(tasks served, messages rejected by code, tool calls refused) and ``left``.

CrewAI reads its environment when it is imported: start the process with
``CREWAI_DISABLE_TELEMETRY=true``, ``CREWAI_TRACING_ENABLED=false`` (and ``HOME`` /
``CREWAI_STORAGE_DIR`` pointing at a scratch directory) to keep it offline and
leave no files behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict

from crewai import Agent, Crew, Task
from crewai.agents.agent_builder.base_agent import BaseAgent

from agentmesh.integrations.crewai.config import CrewMeshConfig
from agentmesh.integrations.crewai.demo import (
    DEMO_TOOLS,
    analyst_llm,
    demo_policy,
    demo_tools,
    offline_egress,
)
from agentmesh.integrations.crewai.errors import IntegrationError
from agentmesh.integrations.crewai.mesh_crew import MeshCrew
from agentmesh.integrations.crewai.scripted_llm import ScriptedLLM, load_script
from agentmesh.policy.engine import CompiledPolicy
from agentmesh.policy.errors import PolicyLoadError
from iatp.errors import AgentMeshError
from iatp.identity import AgentIdentity


def _member(text: str) -> tuple[str, tuple[str, ...]]:
    role, sep, caps = text.partition("=")
    names = tuple(c.strip() for c in caps.split(",") if c.strip())
    if not sep or not role.strip() or not names:
        raise argparse.ArgumentTypeError(f"expected ROLE=CAP[,CAP...], got {text!r}")
    return role.strip(), names


def _seed(text: str) -> bytes:
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise argparse.ArgumentTypeError("a seed is 64 hex characters")
    return seed


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agentmesh.integrations.crewai.worker",
        description="Run a CrewAI crew on the mesh that serves delegated tasks.",
    )
    p.add_argument("--nats", required=True, help="NATS server URL (nats://host:port)")
    p.add_argument("--mesh", default="agentmesh", help="mesh name (default: agentmesh)")
    p.add_argument("--name", default="worker", help="the crew's name on the mesh")
    p.add_argument(
        "--member",
        type=_member,
        action="append",
        required=True,
        metavar="ROLE=CAP[,CAP]",
        help="an agent and the capabilities it offers (repeatable)",
    )
    p.add_argument("--script", help="JSON script for every member's LLM (default: word count)")
    p.add_argument("--policy", help="policy file (default: the demo policy)")
    p.add_argument("--anchor", action="append", default=[], help="pre-trusted DID (repeatable)")
    p.add_argument(
        "--authority", action="append", default=[], help="kill-switch authority DID (repeatable)"
    )
    p.add_argument("--seed", type=_seed, help="the crew identity's seed (hex), for a stable DID")
    p.add_argument(
        "--stop-on-stdin-eof",
        action="store_true",
        help="also leave when stdin closes (so a supervising process that dies stops it)",
    )
    return p


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set ``stop`` at end of stdin (a daemon thread: it never holds the process up)."""

    def read() -> None:
        with contextlib.suppress(Exception):
            while sys.stdin.read(4096):
                pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read, name="stdin-eof", daemon=True).start()


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


def build_crew(members: Sequence[tuple[str, tuple[str, ...]]], script: str | None) -> Crew:
    """One agent per member, each with the demo tools and its own scripted LLM."""
    agents: list[BaseAgent] = []
    for role, _ in members:
        llm: ScriptedLLM = load_script(script) if script else analyst_llm()
        agents.append(
            Agent(
                role=role,
                goal="Do the tasks other crews send",
                backstory="A worker crew on the mesh.",
                llm=llm,
                tools=demo_tools(),
            )
        )
    tasks = [Task(description="Stand by.", expected_output="Nothing.", agent=agents[0])]
    return Crew(agents=agents, tasks=tasks)


async def serve(args: argparse.Namespace) -> int:
    members = list(args.member)
    crew = build_crew(members, args.script)
    policy = CompiledPolicy.from_file(args.policy) if args.policy else demo_policy()
    config = CrewMeshConfig(
        policy=policy,
        name=args.name,
        mesh=args.mesh,
        capabilities=dict(members),
        tools=DEMO_TOOLS,
        egress=offline_egress(),
        anchors=tuple(args.anchor),
        authorities=tuple(args.authority),
    )
    identity = AgentIdentity.from_seed(args.seed) if args.seed else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with MeshCrew(crew, config, nats_url=args.nats, identity=identity) as mesh:
        _emit("ready", crew=mesh.did, members={m.role: m.did for m in mesh.roster})
        if args.stop_on_stdin_eof:
            _watch_stdin(loop, stop)
        await stop.wait()
        await mesh.settle(timeout=5.0)
        report = mesh.report()
        _emit(
            "stats",
            served=report.served,
            rejected=report.rejected,
            refused=report.refused,
            receipts=report.receipts,
            decisions=[asdict(d) for d in report.decisions],
        )
    _emit("left")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return asyncio.run(serve(args))
    except (IntegrationError, PolicyLoadError, AgentMeshError) as exc:
        print(f"error: {exc.code}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
