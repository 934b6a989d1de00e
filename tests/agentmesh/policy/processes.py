"""Run ``agentmesh node run`` processes and follow their JSON-lines events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from iatp.identity import AgentIdentity
from iatp.keystore import save_identity

PASSPHRASE = "correct horse battery staple"
Event = dict[str, object]


class NodeProcess:
    """One node process; a background task collects its events."""

    def __init__(self, process: asyncio.subprocess.Process, identity: AgentIdentity, audit: Path):
        self.process = process
        self.identity = identity
        self.did = identity.did
        self.audit = audit
        self.events: list[Event] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            with contextlib.suppress(json.JSONDecodeError):
                self.events.append(json.loads(line))

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e["event"] == name]

    async def wait_for(
        self, predicate: Callable[[], bool], what: str, timeout: float = 20.0
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline or (self.process.returncode is not None and not predicate()):
                raise AssertionError(f"{what} did not happen; events: {self.events[-12:]}")
            await asyncio.sleep(0.02)

    async def event(self, name: str, timeout: float = 20.0) -> Event:
        await self.wait_for(lambda: bool(self.named(name)), f"event {name!r}", timeout)
        return self.named(name)[0]

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.terminate()
        code = await asyncio.wait_for(self.process.wait(), 15)
        await self._reader
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()


def key_file(tmp: Path, identity: AgentIdentity) -> Path:
    path = tmp / f"{identity.did[-10:]}.id"
    if not path.exists():
        save_identity(identity, path, PASSPHRASE)
    return path


async def start_node(
    url: str, mesh: str, tmp: Path, identity: AgentIdentity, *options: str
) -> NodeProcess:
    audit = tmp / f"{identity.did[-10:]}.audit.jsonl"
    args = [
        sys.executable,
        "-m",
        "agentmesh",
        "node",
        "run",
        "--identity",
        str(key_file(tmp, identity)),
        "--passphrase-env",
        "AGENT_PASS",
        "--nats",
        url,
        "--mesh",
        mesh,
        "--audit-log",
        str(audit),
        *options,
    ]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, env={**os.environ, "AGENT_PASS": PASSPHRASE}
    )
    return NodeProcess(process, identity, audit)


async def run_cli(*args: str, timeout: float = 30.0) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "faulthandler",
        "-m",
        "agentmesh",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "AGENT_PASS": PASSPHRASE, "COLUMNS": "200"},
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.send_signal(signal.SIGABRT)  # faulthandler prints where it hangs
        out, _ = await process.communicate()
        raise AssertionError(f"agentmesh {args[0]} hung:\n{out.decode()[-3000:]}") from None
    assert process.returncode is not None
    return process.returncode, out.decode()
