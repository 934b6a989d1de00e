"""Metrics of a running node process: ``agentmesh node run --metrics-port 0`` scraped over HTTP.

Process B serves metrics on a free loopback port (named by its ``metrics`` event);
process A handshakes with it and sends signed echo requests over a real
nats-server. The scrape must show what B really saw: the requests on its inbox,
their verification times, the handshake, the replies it sent, and its watched
directory buckets caught up.
"""

from __future__ import annotations

import asyncio
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from iatp.identity import AgentIdentity
from tests.agentmesh.node.test_cross_process import start_agent
from tests.natsserver import NatsServerProcess

pytestmark = pytest.mark.nats

REQUESTS = 3


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_node_process_serves_its_metrics(tmp_path: Path) -> None:
    a_id, b_id = AgentIdentity.generate(), AgentIdentity.generate()
    with NatsServerProcess() as server:
        b = await start_agent(
            server.url, tmp_path, b_id, [], 0, "--admit", a_id.did, "--metrics-port", "0"
        )
        try:
            event = await b.next_event("metrics")
            assert event["host"] == "127.0.0.1"
            port = event["port"]
            assert isinstance(port, int)
            assert port > 0
            await b.next_event("ready")
            before = await asyncio.to_thread(scrape, port)
            assert before[("agentmesh_node_info", (("did", b_id.did), ("mesh", "xproc")))] == 1
            assert before[("agentmesh_messages_received_total", (("kind", "inbox"),))] == 0

            a = await start_agent(
                server.url,
                tmp_path,
                a_id,
                [b_id.did],
                REQUESTS,
                "--admit",
                b_id.did,
                "--duration",
                "0",
            )
            try:
                done = await a.next_event("requests_done")
                assert done["failures"] == 0
                assert await asyncio.wait_for(a.process.wait(), 30) == 0
            finally:
                if a.process.returncode is None:
                    a.process.kill()

            after = await asyncio.to_thread(scrape, port)
            inbox = after[("agentmesh_messages_received_total", (("kind", "inbox"),))]
            assert inbox >= REQUESTS
            assert after[("agentmesh_messages_sent_total", (("kind", "reply"),))] >= REQUESTS
            assert after[("agentmesh_messages_received_total", (("kind", "handshake"),))] >= 1
            assert after[("agentmesh_messages_handled_total", ())] >= REQUESTS
            # Every signed frame b received was timed from arrival to verdict.
            assert after[("agentmesh_verify_seconds_count", ())] == inbox
            assert after[("agentmesh_verify_seconds_bucket", (("le", "+Inf"),))] == inbox
            assert 0 < after[("agentmesh_verify_seconds_sum", ())] < inbox
            # b mirrors the mesh's directory buckets, caught up with the server.
            lags = {
                dict(labels)["bucket"]: value
                for (name, labels), value in after.items()
                if name == "agentmesh_watch_lag"
            }
            assert "xproc_registry_cards" in lags
            assert set(lags.values()) == {0.0}
            cards = after[("agentmesh_watch_revision", (("bucket", "xproc_registry_cards"),))]
            assert cards >= 2  # b's card and a's
        finally:
            if b.process.returncode is None:
                b.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(b.process.wait(), 30) == 0
    with pytest.raises(urllib.error.URLError):  # the endpoint left with the process
        await asyncio.to_thread(scrape, port)


RESILIENCE = """
version: 1
breakers:
  failure_threshold: 3
  cool_down_ms: 5000
slos:
  - capability: mesh.echo
    success_rate: 0.99
    latency:
      threshold_ms: 500
      objective: 0.95
    window_s: 600
"""


async def test_breakers_and_slos_of_a_node_process_are_scraped(tmp_path: Path) -> None:
    """``node run --resilience FILE --metrics-port 0``: B's SLO on mesh.echo counts A's
    requests, and A's breaker on B is closed after its successful requests."""
    a_id, b_id = AgentIdentity.generate(), AgentIdentity.generate()
    guards = tmp_path / "resilience.yaml"
    guards.write_text(RESILIENCE, encoding="utf-8")
    with NatsServerProcess() as server:
        b = await start_agent(
            server.url,
            tmp_path,
            b_id,
            [],
            0,
            "--admit",
            a_id.did,
            "--metrics-port",
            "0",
            "--resilience",
            str(guards),
        )
        a = None
        try:
            b_port = (await b.next_event("metrics"))["port"]
            await b.next_event("ready")
            a = await start_agent(
                server.url,
                tmp_path,
                a_id,
                [b_id.did],
                REQUESTS,
                "--admit",
                b_id.did,
                "--metrics-port",
                "0",
                "--resilience",
                str(guards),
            )
            a_port = (await a.next_event("metrics"))["port"]
            assert (await a.next_event("requests_done"))["failures"] == 0
            assert isinstance(a_port, int)
            assert isinstance(b_port, int)
            served = await asyncio.to_thread(scrape, b_port)
            calling = await asyncio.to_thread(scrape, a_port)
        finally:
            for agent in (a, b):
                if agent is not None and agent.process.returncode is None:
                    agent.process.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(agent.process.wait(), 30)
    echo = (("capability", "mesh.echo"),)
    assert served[("agentmesh_slo_events", echo)] == REQUESTS
    assert served[("agentmesh_slo_success_rate", echo)] == 1.0
    assert served[("agentmesh_slo_latency_ok_rate", echo)] == 1.0
    assert served[("agentmesh_slo_error_budget_remaining", echo)] == 1.0
    assert served[("agentmesh_slo_burning", echo)] == 0.0
    assert calling[("agentmesh_circuit_breakers", (("state", "closed"),))] == 1
    assert calling[("agentmesh_circuit_breakers", (("state", "open"),))] == 0
    assert calling[("agentmesh_circuit_rejected_total", ())] == 0
