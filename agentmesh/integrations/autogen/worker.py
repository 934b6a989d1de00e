"""A worker process hosting AgentChat team members on the mesh.

::

    python -m agentmesh.integrations.autogen.worker --nats nats://127.0.0.1:4222 \\
        --team '{"team_id": "review", "manager": "SelectorGroupChatManager", \\
                 "members": ["coder", "reviewer"]}' \\
        --member coder=mypkg.members:coder --policy team.yaml --authority did:key:z6Mk...

Each ``--member NAME=MODULE:FACTORY`` is built by ``FACTORY(spec)`` (a
:class:`MemberSpec`: the member's name, the process's governor for governed
tools, the ``--option`` values) and hosted with :func:`~.team.host_member`: its
own DID and card, its container subscribed to the team's topics. The process
prints JSON lines on stdout: ``{"event": "ready", "runtime": DID, "members":
{NAME: DID}}`` once every member is hosted, and ``{"event": "stats", ...}``
(refusals by code, governor decisions, deliveries) when it stops: on SIGTERM,
SIGINT, or the end of stdin (a parent that dies takes its workers along).
:class:`WorkerProcess` starts one from Python and reads those lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

from autogen_agentchat.base import ChatAgent

from agentmesh.audit import MemoryAuditSink
from agentmesh.integrations.autogen.config import MeshRuntimeConfig
from agentmesh.integrations.autogen.guards import open_guards
from agentmesh.integrations.autogen.runtime import MeshAgentRuntime
from agentmesh.integrations.autogen.team import TeamLayout, host_member
from agentmesh.policy.egress import EgressGuard
from agentmesh.policy.governor import Governor
from agentmesh.transport.factory import make_transport
from iatp.identity import AgentIdentity


@dataclass(frozen=True)
class MemberSpec:
    """What a member factory gets."""

    name: str
    governor: Governor | None
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


MemberFactory = Callable[[MemberSpec], ChatAgent | Awaitable[ChatAgent]]


def load_factory(path: str) -> MemberFactory:
    """``module:attribute`` -> the factory.

    Raises:
        ValueError: not ``module:attribute``, or the attribute is not callable.
        ImportError: the module does not import.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"member factory {path!r} must be module:attribute")
    factory = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(factory):
        raise ValueError(f"{path} is not callable")
    return factory  # type: ignore[no-any-return]


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise SystemExit(f"{what} {value!r} must be KEY=VALUE")
        out[key] = rest
    return out


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def _stopped() -> None:
    """Return on SIGTERM / SIGINT or when stdin closes."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    reader = asyncio.StreamReader()
    with contextlib.suppress(OSError, ValueError):  # stdin may be closed or not a pipe
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

        async def watch_stdin() -> None:
            while await reader.readline():
                pass
            stop.set()

        watcher = asyncio.create_task(watch_stdin())
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({watcher, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        watcher.cancel()
        stop_wait.cancel()
        return
    await stop.wait()


async def serve(arguments: argparse.Namespace) -> int:
    layout = TeamLayout.decode(arguments.team)
    members = {
        name: load_factory(path) for name, path in _pairs(arguments.member, "--member").items()
    }
    options = MappingProxyType(_pairs(arguments.option, "--option"))
    config = MeshRuntimeConfig(mesh=arguments.mesh, channel=arguments.channel)
    identity = AgentIdentity.generate()
    audit = MemoryAuditSink()
    transport = make_transport(arguments.nats, name=f"autogen-worker-{'-'.join(members)}")
    await transport.connect(timeout=10.0)
    try:
        async with (
            open_guards(
                transport,
                identity,
                mesh=arguments.mesh,
                policy=arguments.policy,
                authorities=arguments.authority,
                egress=EgressGuard(),
                audit=audit,
            ) as guards,
            MeshAgentRuntime(
                transport, identity=identity, config=config, guards=guards, audit=audit
            ) as runtime,
        ):
            dids = {}
            for name, factory in members.items():
                made = factory(MemberSpec(name, guards.governor, options))
                agent = await made if inspect.isawaitable(made) else made
                await host_member(runtime, layout, agent)
                dids[name] = runtime.did_of(layout.member_type(name))
            _emit("ready", runtime=runtime.did, members=dids)
            await _stopped()
            with contextlib.suppress(TimeoutError):  # a handler still running: report anyway
                await runtime.idle(timeout=5.0)
            audited = Counter(f"{event.kind}:{event.code}" for event in audit)
            _emit(
                "stats",
                rejected=dict(runtime.rejected()),
                counters=dict(runtime.counters),
                audited=dict(audited),
            )
    finally:
        await transport.aclose()
    return 0


class WorkerProcess:
    """A worker started as a child process, and the JSON-lines events it prints.

    Start several, then wait for each one's ``ready`` (they start in parallel);
    :meth:`stop` collects the ``stats``, :meth:`kill` cleans up after a failure.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def start(
        cls,
        *,
        nats_url: str,
        layout: TeamLayout,
        members: Mapping[str, str],
        mesh: str = "agentmesh",
        channel: str = "autogen",
        policy: str | Path | None = None,
        authorities: Sequence[str] = (),
        options: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Self:
        """Start ``python -m agentmesh.integrations.autogen.worker`` with these arguments.

        Args:
            members: member name -> ``module:factory``.
            env: extra environment variables (on top of this process's).

        Raises:
            OSError: the process could not be started.
        """
        args = ["--nats", nats_url, "--mesh", mesh, "--channel", channel, "--team", layout.encode()]
        for name, factory in members.items():
            args += ["--member", f"{name}={factory}"]
        for key, value in (options or {}).items():
            args += ["--option", f"{key}={value}"]
        if policy is not None:
            args += ["--policy", str(policy)]
        for did in authorities:
            args += ["--authority", did]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agentmesh.integrations.autogen.worker",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def next_event(self, name: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """The next event called ``name`` (earlier ones are kept in :attr:`events`).

        Raises:
            TimeoutError: no such event within ``timeout``.
            EOFError: the worker exited first.
        """
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise EOFError(f"the worker exited before {name!r}")
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # something else printed on stdout
                if not isinstance(event, dict):
                    continue
                self.events.append(event)
                if event.get("event") == name:
                    return event

    async def stop(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """Close its stdin (the worker leaves) and return its ``stats`` event.

        Raises:
            TimeoutError: it did not report or exit within ``timeout``.
            EOFError: it exited without reporting.
        """
        assert self.process.stdin is not None
        self.process.stdin.close()
        stats = await self.next_event("stats", timeout=timeout)
        await asyncio.wait_for(self.process.wait(), timeout)
        return stats

    def kill(self) -> None:
        """Kill the process if it still runs (idempotent)."""
        if self.process.returncode is None:
            self.process.kill()


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(
        prog="python -m agentmesh.integrations.autogen.worker",
        description="Host AgentChat team members on the mesh (see the module docstring).",
    )
    out.add_argument("--nats", required=True, help="nats://HOST:PORT of the mesh's server")
    out.add_argument("--mesh", default="agentmesh")
    out.add_argument("--channel", default="autogen")
    out.add_argument("--team", required=True, help="the team layout as JSON")
    out.add_argument("--member", action="append", default=[], help="NAME=MODULE:FACTORY")
    out.add_argument("--option", action="append", default=[], help="KEY=VALUE for factories")
    out.add_argument("--policy", help="policy file for messages and governed tools")
    out.add_argument("--authority", action="append", default=[], help="kill-switch authority DID")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    if not arguments.member:
        parser().error("at least one --member NAME=MODULE:FACTORY")
    return asyncio.run(serve(arguments))


__all__ = ["MemberFactory", "MemberSpec", "WorkerProcess", "load_factory", "main", "serve"]


if __name__ == "__main__":
    sys.exit(main())
