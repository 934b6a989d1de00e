"""Traces across processes: two ``agentmesh node run`` processes over a real nats-server.

Process A sends signed echo requests to process B; each writes its spans with
``--trace-file`` (the SDK's batch processor behind a JSON-lines exporter). Every
request is one trace: B's receive span is the child of A's request span, carried
by the signed ``traceparent`` envelope header.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from agentmesh.observability.tracing import read_trace_file
from iatp.identity import AgentIdentity
from tests.agentmesh.node.test_cross_process import start_agent
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

REQUESTS = 3


async def test_one_trace_per_request_across_two_processes(tmp_path: Path) -> None:
    a_id, b_id = AgentIdentity.generate(), AgentIdentity.generate()
    a_spans, b_spans = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    with NatsServerProcess() as server:
        b = await start_agent(
            server.url, tmp_path, b_id, [], 0, "--admit", a_id.did, "--trace-file", str(b_spans)
        )
        await b.next_event("ready")
        a = await start_agent(
            server.url,
            tmp_path,
            a_id,
            [b_id.did],
            REQUESTS,
            "--admit",
            b_id.did,
            "--trace-file",
            str(a_spans),
            "--duration",
            "0",
        )
        try:
            tracing = await a.next_event("tracing")
            assert tracing["exporters"] == ["JsonLinesSpanExporter"]
            done = await a.next_event("requests_done")
            assert done["failures"] == 0
            assert await asyncio.wait_for(a.process.wait(), 30) == 0
        finally:
            if a.process.returncode is None:
                a.process.kill()
            b.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(b.process.wait(), 30)

    sent = [s for s in read_trace_file(a_spans) if s["name"] == "iatp.request mesh.echo"]
    received = [s for s in read_trace_file(b_spans) if s["name"] == "iatp.receive mesh.echo"]
    handled = [s for s in read_trace_file(b_spans) if s["name"] == "iatp.handle mesh.echo"]
    assert len(sent) == REQUESTS
    assert len(received) == len(handled) == REQUESTS
    by_parent = {s["parent_span_id"]: s for s in received}
    for request in sent:
        assert request["kind"] == "client"
        assert request["attributes"]["agentmesh.node"] == a_id.did  # type: ignore[index]
        receive = by_parent[request["span_id"]]  # B's span is the child of A's
        assert receive["trace_id"] == request["trace_id"]
        assert receive["kind"] == "server"
        assert receive["attributes"]["agentmesh.sender"] == a_id.did  # type: ignore[index]
        assert receive["service"] != request["service"]
    assert len({s["trace_id"] for s in sent}) == REQUESTS  # one trace per request
    for handle in handled:
        assert handle["parent_span_id"] in {s["span_id"] for s in received}
