"""The lab's processes: federated agents and stewards, each in its own process.

:class:`LabProcesses` wraps a :class:`~agentmesh.federation.lab.FederationLab`: it
issues memberships (didkit, in this process), starts agent processes
(``python -m agentmesh.federation.agent_process``) and steward processes (the
real CLI: ``python -m agentmesh federation steward``), talks to them in JSON
lines (:class:`Child`) and stops them all. The federation example and the
cross-organization tests use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentmesh.broker.subject_map import Role
from agentmesh.errors import MeshError
from agentmesh.federation.lab import LAB_PASSPHRASE, FederationLab, LabOrg
from iatp.identity import AgentIdentity

PASSPHRASE_ENV = "AGENTMESH_LAB_PASSPHRASE"  # noqa: S105 - a variable name, not a secret


@dataclass
class Child:
    """A child process speaking JSON lines; stdout is drained all the time."""

    name: str
    process: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    pump: asyncio.Task[None] | None = None
    did: str = ""

    def start_pump(self) -> None:
        async def run() -> None:
            assert self.process.stdout is not None
            while line := await self.process.stdout.readline():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    self.events.append(event)
                    self.queue.put_nowait(event)
            self.queue.put_nowait(None)

        self.pump = asyncio.create_task(run())

    async def next_event(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        while True:
            event = await asyncio.wait_for(self.queue.get(), timeout)
            if event is None:
                self.queue.put_nowait(None)
                raise MeshError(f"{self.name} exited before {name!r}: {self.events[-5:]}")
            if event.get("event") == name:
                return event

    async def ask(self, cmd: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        return await self.next_event("answer", timeout)

    async def close(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump


class LabProcesses:
    """A federation lab plus the processes started in it."""

    def __init__(self, root: Path) -> None:
        self.lab = FederationLab(root)
        self.root = root
        self.children: list[Child] = []
        self.identities: dict[str, AgentIdentity] = {}
        self.agents: dict[str, Child] = {}

    def org(self, name: str) -> LabOrg:
        return self.lab.orgs[name]

    def identity(self, name: str) -> AgentIdentity:
        if name not in self.identities:
            self.identities[name] = AgentIdentity.generate()
        return self.identities[name]

    def did(self, name: str) -> str:
        return self.identity(name).did

    async def membership_file(self, org: str, name: str, **claims: Any) -> Path:
        token = await self.org(org).issue_member(self.did(name), **claims)
        path = self.root / f"{name}.membership"
        path.write_text(token + "\n")
        return path

    async def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
        )
        child = Child(name, process)
        child.start_pump()
        self.children.append(child)
        return child

    async def agent(
        self,
        org: str,
        name: str,
        *,
        membership: Path | None = None,
        options: tuple[str, ...] = (),
        role: Role = Role.AGENT,
    ) -> Child:
        """Start ``name`` as an agent of ``org``; returns once it is ready."""
        lab_org = self.org(org)
        identity = self.identity(name)
        args = [
            "-m",
            "agentmesh.federation.agent_process",
            "--nats",
            lab_org.url,
            "--mesh",
            org,
            "--jwt",
            str(lab_org.save_user_jwt(identity.did, role)),
            "--organization",
            lab_org.did,
            *(("--membership", str(membership)) if membership is not None else ()),
            *options,
        ]
        child = await self._spawn(name, args, {"FED_SEED": identity.seed().hex()})
        ready = await child.next_event("ready", timeout=60)
        child.did = ready["did"]
        self.agents[name] = child
        return child

    async def steward(self, org: str, *, resync: float = 5.0) -> Child:
        """Start ``org``'s steward with the real CLI; returns once it runs."""
        lab_org = self.org(org)
        args = [
            "-m",
            "agentmesh",
            "federation",
            "steward",
            "--mesh-dir",
            str(lab_org.directory),
            "--identity",
            str(lab_org.save_authority()),
            "--passphrase-env",
            PASSPHRASE_ENV,
            "--resync",
            str(resync),
        ]
        child = await self._spawn(f"steward-{org}", args, {PASSPHRASE_ENV: LAB_PASSPHRASE})
        await child.next_event("steward", timeout=60)
        return child

    async def close(self) -> None:
        for child in reversed(self.children):
            await child.close()
        self.children.clear()
        self.lab.stop()


__all__ = ["PASSPHRASE_ENV", "Child", "LabProcesses"]
