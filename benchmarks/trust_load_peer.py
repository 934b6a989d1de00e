"""The serving process of the trust-memory benchmark: ``python -m benchmarks.trust_load_peer``.

Holds two :class:`MeshNode` servers on one nats-server that answer ``bench.echo``:
``trust`` (with :class:`MeshTrust`: every handled request becomes a signed receipt
published in the background, and the node folds the mesh's receipt stream) and
``plain`` (no trust). Driven like ``benchmarks.mesh_peer``: one JSON line per
command on stdin, one answer line on stdout, the first line is ``{"ready": ...}``,
end of stdin stops it. Commands: ``wait_folded {n, timeout}`` (block until the
trust node folded ``n`` receipts), ``stats`` (folded, remembered receipt ids,
RSS), ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage, Stage
from agentmesh.node.node import MeshNode
from agentmesh.transport.nats import NatsTransport
from agentmesh.trustnet import MeshTrust
from iatp.identity import AgentIdentity
from trust import TrustConfig

ECHO = "bench.echo"


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (Linux ``/proc``), 0 when unknown."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def trust_config(horizon_ms: int, skew_ms: int) -> TrustConfig:
    return TrustConfig(receipt_horizon_ms=horizon_ms, max_future_skew_ms=skew_ms)


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def _echo(message: InboundMessage) -> bytes:
    return message.body


async def run(args: argparse.Namespace) -> None:
    trust_id, plain_id = AgentIdentity.generate(), AgentIdentity.generate()
    config = NodeConfig(mesh=args.mesh)
    async with contextlib.AsyncExitStack() as stack:
        t1 = await stack.enter_async_context(NatsTransport(args.url, name="trust-peer"))
        t2 = await stack.enter_async_context(NatsTransport(args.url, name="plain-peer"))
        trust = await stack.enter_async_context(
            MeshTrust(
                t1,
                trust_id,
                mesh=args.mesh,
                config=trust_config(args.horizon_ms, args.skew_ms),
                stream_max_age=args.stream_max_age or None,
            )
        )
        node = await stack.enter_async_context(MeshNode(trust_id, t1, config=config))
        node.add_interceptor(trust.interceptor, stage=Stage.TRUST)
        node.handle(ECHO, _echo)
        plain = await stack.enter_async_context(MeshNode(plain_id, t2, config=config))
        plain.handle(ECHO, _echo)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        _say(ready=True, pid=os.getpid(), trust=trust_id.did, plain=plain_id.did)
        while line := await reader.readline():
            request = json.loads(line)
            name = request.pop("cmd")
            if name == "quit":
                break
            try:
                if name == "wait_folded":
                    async with asyncio.timeout(request.get("timeout", 60.0)):
                        while trust.ledger.folded < request["n"]:  # noqa: ASYNC110
                            await asyncio.sleep(0.005)
                _say(
                    folded=trust.ledger.folded,
                    remembered=trust.engine.remembered_receipts,
                    agents=len(trust.engine),
                    rss=rss_bytes(),
                )
            except Exception as exc:  # report and keep serving: the benchmark decides
                _say(error=f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trust_load_peer")
    parser.add_argument("--url", required=True)
    parser.add_argument("--mesh", required=True)
    parser.add_argument("--horizon-ms", type=int, default=60_000)
    parser.add_argument("--skew-ms", type=int, default=5_000)
    parser.add_argument("--stream-max-age", type=float, default=0.0)
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
