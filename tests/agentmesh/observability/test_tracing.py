"""OpenTelemetry traces: one request through three agents is one trace; context is signed.

Every node here runs in this process with the SDK's in-memory exporter; the
cross-process test (two ``agentmesh node run`` processes over a real nats-server)
is in ``test_tracing_processes.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agentmesh import telemetry
from agentmesh.errors import RemoteError
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage, PassThroughInterceptor, Verdict
from agentmesh.node.node import MeshNode
from agentmesh.observability.tracing import REFUSAL_CODE, MeshTracer, disable_tracing
from agentmesh.policy import (
    CompiledPolicy,
    Governor,
    PolicyDenied,
    PolicyEngine,
    acting_as,
    governed,
)
from agentmesh.saga import SagaStatus
from iatp.envelope import decode_payload, new_envelope, parse_frame, seal_envelope
from iatp.errors import InvalidSignature
from iatp.identity import AgentIdentity
from tests.agentmesh.saga.team import order_saga, standard_team
from tests.conftest import TransportFactory


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracer = MeshTracer.with_exporters([exporter], service_name="test", batch=False)
    previous = telemetry.install_tracer(tracer)
    try:
        yield exporter
    finally:
        telemetry.install_tracer(previous)
        tracer.shutdown()


def by_name(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = by_name(exporter, name)
    assert len(found) == 1, (name, [s.name for s in exporter.get_finished_spans()])
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


class DenyType(PassThroughInterceptor):
    def __init__(self, message_type: str) -> None:
        self.message_type = message_type

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        if message.type == self.message_type:
            return Verdict.deny("test_denied", "this type is refused here")
        return await super().check_inbound(message)


async def three_nodes(factory: TransportFactory, mesh: str) -> list[MeshNode]:
    nodes = []
    for name in ("a", "b", "c"):
        node = MeshNode(
            AgentIdentity.generate(), await factory.new(name), config=NodeConfig(mesh=mesh)
        )
        await node.start()
        nodes.append(node)
    return nodes


async def test_a_request_through_three_agents_is_one_trace(
    spans: InMemorySpanExporter, transport_factory: TransportFactory, uid: str
) -> None:
    a, b, c = await three_nodes(transport_factory, uid)
    try:

        @c.on("work")
        async def work(message: InboundMessage) -> bytes:
            return message.body.upper()

        @b.on("relay")
        async def relay(message: InboundMessage) -> bytes:
            answer = await b.request(c.did, "work", message.body)
            return answer.body

        reply = await a.request(b.did, "relay", b"hello")
        assert reply.body == b"HELLO"
    finally:
        for node in (a, b, c):
            await node.aclose()

    client_a = one(spans, "iatp.request relay")
    receive_b = one(spans, "iatp.receive relay")
    handle_b = one(spans, "iatp.handle relay")
    client_b = one(spans, "iatp.request work")
    receive_c = one(spans, "iatp.receive work")
    handle_c = one(spans, "iatp.handle work")
    chain = [client_a, receive_b, handle_b, client_b, receive_c, handle_c]
    assert len({trace_id(s) for s in chain}) == 1
    for child, parent in zip(chain[1:], chain, strict=False):
        assert parent_of(child) == span_id(parent), (child.name, parent.name)
    assert client_a.attributes is not None
    assert receive_c.attributes is not None
    assert client_a.attributes["agentmesh.node"] == a.did
    assert client_a.attributes["agentmesh.peer"] == b.did
    assert receive_c.attributes["agentmesh.sender"] == b.did
    assert receive_c.attributes["agentmesh.node"] == c.did
    assert all(s.status.status_code is not StatusCode.ERROR for s in chain)


async def test_a_refusal_carries_its_code_on_both_sides(
    spans: InMemorySpanExporter, transport_factory: TransportFactory, uid: str
) -> None:
    a, b, c = await three_nodes(transport_factory, uid)
    try:
        b.add_interceptor(DenyType("secret"))
        with pytest.raises(RemoteError) as refused:
            await a.request(b.did, "secret", b"x")
        assert refused.value.remote_code == "test_denied"
    finally:
        for node in (a, b, c):
            await node.aclose()
    client = one(spans, "iatp.request secret")
    receive = one(spans, "iatp.receive secret")
    assert by_name(spans, "iatp.handle secret") == []  # the handler never ran
    for span in (client, receive):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes[REFUSAL_CODE] == "test_denied"
    assert parent_of(receive) == span_id(client)


async def test_a_one_way_message_and_a_failing_handler(
    spans: InMemorySpanExporter, transport_factory: TransportFactory, uid: str
) -> None:
    a, b, c = await three_nodes(transport_factory, uid)
    try:

        @b.on("boom")
        async def boom(message: InboundMessage) -> bytes:
            raise RuntimeError("broken tool")

        with pytest.raises(RemoteError):
            await a.request(b.did, "boom", b"")
        received = []

        @c.on("note")
        async def note(message: InboundMessage) -> None:
            received.append(message.body)

        await a.send(c.did, "note", b"fyi")
        for _ in range(200):
            if by_name(spans, "iatp.handle note"):
                break
            await _tick()
    finally:
        for node in (a, b, c):
            await node.aclose()
    handle = one(spans, "iatp.handle boom")
    assert handle.status.status_code is StatusCode.ERROR
    assert handle.attributes is not None
    assert handle.attributes[REFUSAL_CODE] == "handler_error"
    producer = one(spans, "iatp.send note")
    consumer = one(spans, "iatp.receive note")
    assert parent_of(consumer) == span_id(producer)
    assert consumer.kind.name == "CONSUMER"
    assert producer.kind.name == "PRODUCER"


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.01)


def test_trace_context_is_a_signed_header_that_cannot_be_moved(
    spans: InMemorySpanExporter,
) -> None:
    """The traceparent sits in the signed payload: splicing it into another message breaks
    that message's signature; without a tracer no trace header is added at all."""
    sender = AgentIdentity.generate()
    tracer = telemetry.tracer
    assert tracer is not None
    with tracer.span("caller"):
        headers = telemetry.with_trace_context(None, tracer)
    assert headers is not None
    assert telemetry.TRACEPARENT in headers
    traced = new_envelope(
        sender=sender.did, type="t", recipient="did:key:zX", body=b"a", now_ms=1, headers=headers
    )
    plain = new_envelope(sender=sender.did, type="t", recipient="did:key:zX", body=b"b", now_ms=1)
    traced_frame = parse_frame(seal_envelope(traced, sender))
    plain_frame = parse_frame(seal_envelope(plain, sender))
    assert telemetry.trace_headers(decode_payload(traced_frame).headers) == headers
    assert telemetry.trace_headers(decode_payload(plain_frame).headers) is None

    # Splice the trace header into the other message's payload, keep its signature.
    fields = msgpack.unpackb(plain_frame.payload, raw=False)
    fields[7] = headers
    forged = msgpack.packb(
        [1, plain_frame.sender, msgpack.packb(fields, use_bin_type=True), plain_frame.signature],
        use_bin_type=True,
    )
    from iatp.envelope import verify_frame

    with pytest.raises(InvalidSignature):
        verify_frame(parse_frame(forged))


def test_without_a_tracer_nothing_is_injected() -> None:
    assert telemetry.tracer is None
    sender = AgentIdentity.generate()
    plain = new_envelope(sender=sender.did, type="t", recipient="did:key:zX", body=b"", now_ms=1)
    assert plain.headers == ()


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(max_size=120), state=st.one_of(st.none(), st.text(max_size=60)))
def test_a_malformed_traceparent_starts_a_new_trace_and_never_raises(
    spans: InMemorySpanExporter, value: str, state: str | None
) -> None:
    tracer = telemetry.tracer
    assert tracer is not None
    carrier = {telemetry.TRACEPARENT: value}
    if state is not None:
        carrier[telemetry.TRACESTATE] = state
    with tracer.span("receive", carrier=carrier) as span:
        span.set_attribute("x", 1)
    done = spans.get_finished_spans()[-1]
    valid = (
        len(value) == 55
        and value.startswith("00-")
        and all(ch in "0123456789abcdef-" for ch in value)
        and value[3:35] != "0" * 32
        and value[36:52] != "0" * 16
    )
    if not valid:
        assert done.parent is None  # a garbage context never becomes a parent


def test_governed_tool_calls_have_spans_with_the_decision(spans: InMemorySpanExporter) -> None:
    policy = {
        "version": 1,
        "name": "tools",
        "rules": [
            {
                "id": "small-pay",
                "effect": "allow",
                "match": {"actions": ["pay"]},
                "when": {"args.amount": {"lt": 100}},
            },
        ],
    }
    governor = Governor(PolicyEngine(CompiledPolicy.from_data(policy)), node="n")

    @governed(governor, "pay")
    def pay(amount: float) -> str:
        return "paid"

    alice = AgentIdentity.generate().did
    with acting_as(alice):
        assert pay(amount=5) == "paid"
        with pytest.raises(PolicyDenied):
            pay(amount=500)
    allowed, denied = by_name(spans, "agentmesh.tool pay")
    assert allowed.attributes is not None
    assert denied.attributes is not None
    assert allowed.attributes["agentmesh.decision"] == "allow"
    assert allowed.attributes["agentmesh.rule"] == "small-pay"
    assert allowed.attributes["agentmesh.agent"] == alice
    assert denied.attributes["agentmesh.decision"] == "deny"
    assert denied.status.status_code is StatusCode.ERROR
    assert denied.attributes[REFUSAL_CODE] == "policy_denied"


async def test_a_saga_and_its_compensations_are_one_trace(
    spans: InMemorySpanExporter, transport_factory: TransportFactory, uid: str
) -> None:
    team = await standard_team(transport_factory, uid)
    team.failing.add("ship")
    try:
        coordinator = await team.coordinator()
        state = await coordinator.run(order_saga(), saga_id="traced")
        assert state.status is SagaStatus.COMPENSATED
    finally:
        await team.aclose()
    run = one(spans, "saga.run order")
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes is not None
    assert run.attributes["saga.status"] == "compensated"
    steps = [s for s in spans.get_finished_spans() if s.name.startswith("saga.step ")]
    compensations = [s for s in spans.get_finished_spans() if s.name.startswith("saga.compensate")]
    assert {s.name for s in steps} >= {"saga.step reserve", "saga.step charge", "saga.step ship"}
    assert {s.name for s in compensations} == {"saga.compensate reserve", "saga.compensate charge"}
    executor_side = by_name(spans, "iatp.handle saga.step")
    assert len(executor_side) >= 5  # three forward steps and two compensations
    everything = [run, *steps, *compensations, *executor_side]
    assert {trace_id(s) for s in everything} == {trace_id(run)}
    for span in (*steps, *compensations):
        assert parent_of(span) == span_id(run)


def test_disable_tracing_uninstalls() -> None:
    exporter = InMemorySpanExporter()
    telemetry.install_tracer(MeshTracer.with_exporters([exporter], batch=False))
    disable_tracing()
    assert telemetry.tracer is None


async def test_receive_spans_carry_the_ring_and_the_policy_decision(
    spans: InMemorySpanExporter, transport_factory: TransportFactory, uid: str
) -> None:
    from agentmesh.node.interceptors import Stage
    from agentmesh.policy import PolicyInterceptor, RingEnforcer, StaticRings

    policy = {
        "version": 1,
        "name": "mesh",
        "rules": [
            {"id": "pay-in", "effect": "allow", "match": {"actions": ["pay"]}},
            {"id": "out", "effect": "allow", "match": {"actions": ["*"], "direction": "outbound"}},
        ],
    }
    a, b, c = await three_nodes(transport_factory, uid)
    try:
        rings = StaticRings({a.did: 2})
        governor = Governor(
            PolicyEngine(CompiledPolicy.from_data(policy)),
            rings=RingEnforcer([rings], {1: ["*"], 2: ["pay"], 3: []}),
        )
        b.add_interceptor(PolicyInterceptor(governor), stage=Stage.POLICY)

        @b.on("pay")
        async def pay(message: InboundMessage) -> bytes:
            return b"ok"

        assert (await a.request(b.did, "pay", b"1")).body == b"ok"
        rings.set(a.did, 3)  # demoted: the next request is refused by the ring
        with pytest.raises(RemoteError):
            await a.request(b.did, "pay", b"2")
    finally:
        for node in (a, b, c):
            await node.aclose()
    allowed, refused = by_name(spans, "iatp.receive pay")
    assert allowed.attributes is not None
    assert refused.attributes is not None
    assert allowed.attributes["agentmesh.ring"] == 2
    assert allowed.attributes["agentmesh.decision"] == "allow"
    assert allowed.attributes["agentmesh.rule"] == "pay-in"
    assert refused.attributes["agentmesh.ring"] == 3
    assert refused.attributes["agentmesh.decision"] == "deny"
    assert refused.attributes[REFUSAL_CODE] == "ring_denied"
    assert refused.status.status_code is StatusCode.ERROR
