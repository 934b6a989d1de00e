"""Mesh fidelity across processes: the driver here, the agents in host processes.

:class:`DistributedBackend` starts ``processes`` host processes
(:mod:`simulations.host`), each holding the nodes of the agents with
``index % processes == host`` on a real ``nats-server``. This process keeps the
driver, the mesh authority (it quarantines through the real kill switch), and a
receipt ledger folded into the engine the driver selects with; every host folds
the same stream into its own engine for its own policy's rings. Requests,
receipts, floods, probes and forgeries are carried out by the hosts: a request
from agent 3 to agent 7 is a signed command to 3's host, then a signed request
from 3's node to 7's node in another process.

Process faults: ``kill`` sends ``SIGKILL`` to a host process when its window opens
and starts it again (the same identities, state rebuilt from the store) when it
closes; ``server_restart`` kills the ``nats-server`` the simulation started and
starts it again on the same port and store. Message faults run in the hosts.
Sagas are not split across processes yet (a scenario with sagas is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Self

from agentmesh.errors import RemoteError, RequestTimeout, TransportError
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.transport.factory import make_transport
from simulations.behaviours import Action, Flood, Forge, Probe, Serve
from simulations.driver import Served, SimAgent
from simulations.host import COMMAND, host_identity
from simulations.mesh import MeshBackend
from simulations.model import ROUND_MS
from simulations.server import LocalNatsServer
from simulations.spec import ScenarioError, ScenarioSpec
from trust import Outcome

READY_TIMEOUT = 60.0


class DistributedBackend(MeshBackend):
    """Host processes over a real nats-server (see the module docstring)."""

    def __init__(
        self,
        spec: ScenarioSpec,
        agents: list[SimAgent],
        *,
        nats_url: str,
        processes: int = 3,
        server: LocalNatsServer | None = None,
        request_timeout: float | None = None,
    ) -> None:
        if processes < 2:
            raise ScenarioError("a run across processes needs at least 2 host processes")
        if spec.sagas_per_round:
            raise ScenarioError(
                f"scenario {spec.name!r} runs sagas, which are not split across processes "
                "yet: run it in one process (drop --processes)"
            )
        super().__init__(
            spec,
            agents,
            nats_url=nats_url,
            request_timeout=request_timeout,
            hosted=(),
            hosts=processes,
            server=server,
        )
        self.processes = processes
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.killed: set[int] = set()
        self.kills = 0
        self.interactions = 0
        self._node: MeshNode | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="agentmesh-sim-"))

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        try:
            transport = make_transport(self.nats_url, name="sim-driver")
            await transport.connect()
            self._node = MeshNode(self.authority, transport, config=NodeConfig(mesh=self.mesh))
            await self._node.start()
            (self._workdir / "spec.json").write_text(self.spec.model_dump_json(), encoding="utf-8")
            for host in range(self.processes):
                self._spawn(host)
            for host in range(self.processes):
                await self._wait_ready(host)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for host in list(self.children):
            with contextlib.suppress(Exception):
                await self._command(host, {"op": "stop"}, timeout=5)
        for process in self.children.values():
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
        self.children.clear()
        if self._node is not None:
            with contextlib.suppress(Exception):
                await self._node.aclose()
        await super().__aexit__(*exc_info)
        shutil.rmtree(self._workdir, ignore_errors=True)

    def _spawn(self, host: int) -> None:
        assert self.nats_url is not None
        log = (self._workdir / f"host-{host}.log").open("ab")
        self.children[host] = subprocess.Popen(  # noqa: S603 - this interpreter, our module
            [
                sys.executable,
                "-m",
                "simulations.host",
                "--nats",
                self.nats_url,
                "--spec",
                str(self._workdir / "spec.json"),
                "--mesh",
                self.mesh,
                "--host",
                str(host),
                "--hosts",
                str(self.processes),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()

    async def _wait_ready(self, host: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while True:
            process = self.children[host]
            if process.poll() is not None:
                raise ScenarioError(
                    f"host process {host} exited ({process.returncode}):\n{self._log_tail(host)}"
                )
            try:
                await self._command(host, {"op": "ping"}, timeout=1.0)
                return
            except (RequestTimeout, TransportError, RemoteError):
                if loop.time() > deadline:
                    raise ScenarioError(
                        f"host process {host} did not answer in {READY_TIMEOUT:.0f} s:\n"
                        f"{self._log_tail(host)}"
                    ) from None
                await asyncio.sleep(0.1)

    def _log_tail(self, host: int) -> str:
        path = self._workdir / f"host-{host}.log"
        return path.read_text(encoding="utf-8", errors="replace")[-2000:] if path.exists() else ""

    async def _command(
        self, host: int, order: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """A signed command to ``host``'s control node; its JSON answer."""
        assert self._node is not None
        order = {**order, "round": self.round_no, "now": self.clock.now_ms()}
        reply = await self._node.request(
            host_identity(self.spec.seed, host).did,
            COMMAND,
            json.dumps(order).encode(),
            timeout=timeout if timeout is not None else self.timeout * 4 + 10,
        )
        answer: dict[str, Any] = json.loads(reply.body)
        if "error" in answer:
            raise ScenarioError(f"host {host} refused {order['op']}: {answer['error']}")
        return answer

    def host_of(self, agent: SimAgent | int) -> int:
        index = agent if isinstance(agent, int) else agent.index
        return index % self.processes

    # -- the driver's questions, carried out by the hosts ---------------------------------

    async def request(
        self, round_no: int, requester: SimAgent, provider: SimAgent, *, tag: bytes = b""
    ) -> Served:
        self.round_no = round_no
        self.interactions += 1
        answer = await self._command(
            self.host_of(requester),
            {
                "op": "request",
                "from": requester.index,
                "to": provider.index,
                "tag": f"{round_no}:{self.interactions}",
            },
        )
        return Served(Serve(answer["serve"]), answer["code"])

    async def report(
        self,
        observer: SimAgent,
        subject: SimAgent,
        outcome: Outcome,
        *,
        interaction_id: str | None = None,
    ) -> None:
        self._receipts += 1
        await self._command(
            self.host_of(observer),
            {
                "op": "report",
                "from": observer.index,
                "to": subject.index,
                "outcome": outcome.value,
                "id": interaction_id or f"sim-{self.round_no}-{self._receipts}",
            },
        )

    async def act(self, round_no: int, agent: SimAgent, action: Action) -> list[str]:
        self.round_no = round_no
        host = self.host_of(agent)
        if isinstance(action, Probe):
            order = {"op": "probe", "tool": action.tool, "url": action.url, "cost": action.cost}
            return list((await self._command(host, {**order, "agent": agent.index}))["codes"])
        if isinstance(action, Flood):
            order = {"op": "flood", "target": action.target, "count": action.count}
            return list((await self._command(host, {**order, "agent": agent.index}))["codes"])
        if isinstance(action, Forge):
            return await self._forge_across(agent, action)
        return []

    async def _forge_across(self, agent: SimAgent, forge: Forge) -> list[str]:
        """The forger's host sends; the target's host says what its node rejected."""
        if self.agents[forge.target].crashed:
            return []
        target_host = self.host_of(forge.target)
        ask = {"op": "rejected", "agent": forge.target}
        before = (await self._command(target_host, ask))["rejected"]
        await self._command(
            self.host_of(agent),
            {
                "op": "forge",
                "agent": agent.index,
                "target": forge.target,
                "victim": forge.victim,
                "replay": forge.replay,
            },
        )
        after = before
        for _ in range(50):  # the target verifies on its own schedule: wait for its verdict
            after = (await self._command(target_host, ask))["rejected"]
            if sum(after.values()) > sum(before.values()):
                break
            await asyncio.sleep(0.005)
        codes = [code for code, count in after.items() for _ in range(count - before.get(code, 0))]
        return codes or ["forgery_accepted"]

    async def whitewash(self, agent: SimAgent) -> None:
        for host in self.live_hosts():
            await self._command(
                host, {"op": "whitewash", "agent": agent.index, "generation": agent.generation}
            )

    def _event(self, round_no: int, kind: str, **fields: Any) -> None:
        if self.driver is not None:
            self.driver.recorder.event(round_no, kind, **fields)

    def live_hosts(self) -> list[int]:
        return [h for h in range(self.processes) if h not in self.killed]

    # -- the round's end: trust, quarantines, process and server faults ------------------

    async def end_round(self, round_no: int) -> None:
        await self.settle_round()
        for host in self.live_hosts():
            await self._command(host, {"op": "end_round"}, timeout=60)
        await self.apply_crashes(round_no)
        await self.restart_server(round_no + 1)
        if self.server is not None and self.fault_stats.get("server_restarts"):
            for host in self.live_hosts():
                await self._wait_ready(host)
        self.clock.advance(ROUND_MS)
        self.round_no = round_no + 1
        for host in self.live_hosts():  # every host's clock moves before anyone sends
            await self._command(host, {"op": "tick"})

    async def apply_crashes(self, round_no: int) -> None:
        changes = self.faults.crash_round(round_no)
        back: set[int] = set()
        for fault in self.faults.faults:
            if fault.kind != "kill":
                continue
            host = self.faults.killed_host(fault)
            down = fault.active(round_no + 1)
            if down and host not in self.killed:
                self.children[host].send_signal(signal.SIGKILL)
                await asyncio.to_thread(self.children[host].wait, 10)
                self.killed.add(host)
                self.kills += 1
                self.fault_stats["host_kills"] = self.kills
                self._event(round_no + 1, "host_killed", host=host, pid=self.children[host].pid)
            elif not down and host in self.killed:
                self.killed.discard(host)
                self._spawn(host)
                await self._wait_ready(host)
                back.add(host)
                self._event(round_no + 1, "host_restarted", host=host, pid=self.children[host].pid)
                for agent in self.agents:  # it starts from generation 0: tell it the fresh DIDs
                    if agent.generation:
                        order = {"agent": agent.index, "generation": agent.generation}
                        await self._command(host, {"op": "whitewash", **order})
        for agent, down in changes:
            host = self.host_of(agent)
            if host in self.killed or (host in back and not down):
                continue  # a dead process holds no node; a restarted one started them all
            await self._command(host, {"op": "crash", "agent": agent.index, "down": down})
        for host in back:  # agents a crash fault keeps down stay down after the restart
            for index in self.faults.hosted_by(host):
                if self.faults.crashed_by_crash_fault(index, round_no + 1):
                    await self._command(host, {"op": "crash", "agent": index, "down": True})


__all__ = ["DistributedBackend"]
