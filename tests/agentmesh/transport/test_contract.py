"""The transport contract: one behaviour suite, run on InMemoryTransport and on NATS.

Every test takes the ``transport`` (or ``transport_factory``) fixture, which is
parametrized over ``memory`` and ``nats`` (the latter against a real nats-server).
Subjects, buckets and streams are prefixed with ``uid`` because the NATS server is
shared by the whole session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from agentmesh.errors import (
    InvalidSubject,
    KeyExists,
    KeyNotFound,
    KeyValueError,
    NoResponders,
    NotConnected,
    PayloadTooLarge,
    RequestTimeout,
    RevisionMismatch,
    StreamError,
    TransportError,
)
from agentmesh.transport import (
    DurableConsumer,
    KeyValue,
    KVOperation,
    Message,
    StoreLimits,
    Stream,
    Subscription,
    Transport,
)
from tests.agentmesh.transport.waiting import Recorder, eventually, take
from tests.conftest import TransportFactory

# -- lifecycle -----------------------------------------------------------------------


async def test_transport_satisfies_protocols(transport: Transport, uid: str) -> None:
    assert isinstance(transport, Transport)
    assert transport.is_connected
    assert transport.max_payload >= 1024 * 1024
    subscription = await transport.subscribe(f"{uid}.x", Recorder())
    assert isinstance(subscription, Subscription)
    assert subscription.subject == f"{uid}.x"
    kv = await transport.key_value(uid)
    assert isinstance(kv, KeyValue)
    stream = await transport.stream(uid, [f"{uid}.s.>"])
    assert isinstance(stream, Stream)
    consumer = await stream.consumer("durable")
    assert isinstance(consumer, DurableConsumer)
    assert consumer.name == "durable"


async def test_aclose_is_idempotent_and_final(
    transport_factory: TransportFactory, uid: str
) -> None:
    transport = await transport_factory.new()
    kv = await transport.key_value(uid)
    stream = await transport.stream(uid, [f"{uid}.s.>"])
    await transport.aclose()
    await transport.aclose()
    assert not transport.is_connected
    with pytest.raises(NotConnected):
        await transport.publish(f"{uid}.x", b"late")
    with pytest.raises(NotConnected):
        await transport.subscribe(f"{uid}.x", Recorder())
    with pytest.raises(NotConnected):
        await transport.request(f"{uid}.x", b"late", timeout=0.5)
    with pytest.raises(NotConnected):
        await transport.flush()
    with pytest.raises(NotConnected):
        await transport.key_value(uid)
    with pytest.raises(NotConnected):
        await kv.put("k", b"v")
    with pytest.raises(NotConnected):
        await stream.append(f"{uid}.s.a", b"v")
    with pytest.raises(NotConnected):
        await transport.connect()


async def test_concurrent_aclose_calls_all_return(
    transport_factory: TransportFactory,
) -> None:
    transport = await transport_factory.new()
    await asyncio.gather(transport.aclose(), transport.aclose(), transport.aclose())
    assert not transport.is_connected


async def test_context_manager_connects_and_closes(
    transport_factory: TransportFactory, uid: str
) -> None:
    async with transport_factory.build("ctx") as opened:
        assert opened.is_connected
        await opened.publish(f"{uid}.x", b"hello")
    assert not opened.is_connected


async def test_not_connected_before_connect(transport_factory: TransportFactory) -> None:
    transport = transport_factory.build("unconnected")
    assert not transport.is_connected
    with pytest.raises(NotConnected):
        await transport.publish("a.b", b"x")
    with pytest.raises(NotConnected):
        await transport.key_value("bucket")
    await transport.aclose()
    with pytest.raises(NotConnected):
        await transport.connect()


# -- publish / subscribe --------------------------------------------------------------


async def test_publish_reaches_subscriber(transport: Transport, uid: str) -> None:
    recorder = Recorder()
    await transport.subscribe(f"{uid}.greet", recorder)
    await transport.publish(f"{uid}.greet", b"hello")
    (message,) = await recorder.wait_for(1)
    assert message.subject == f"{uid}.greet"
    assert message.data == b"hello"
    assert message.reply is None
    assert dict(message.headers) == {}


async def test_subscriber_on_another_transport_receives(
    transport_factory: TransportFactory, uid: str
) -> None:
    alice = await transport_factory.new("alice")
    bob = await transport_factory.new("bob")
    recorder = Recorder()
    await bob.subscribe(f"{uid}.to.bob", recorder)
    await alice.publish(f"{uid}.to.bob", b"hi bob")
    (message,) = await recorder.wait_for(1)
    assert message.data == b"hi bob"


async def test_empty_payload_and_binary_payload(transport: Transport, uid: str) -> None:
    recorder = Recorder()
    await transport.subscribe(f"{uid}.bin", recorder)
    blob = bytes(range(256)) * 4
    await transport.publish(f"{uid}.bin", b"")
    await transport.publish(f"{uid}.bin", blob)
    await recorder.wait_for(2)
    assert recorder.payloads == [b"", blob]


async def test_headers_pass_through(transport: Transport, uid: str) -> None:
    recorder = Recorder()
    await transport.subscribe(f"{uid}.h", recorder)
    headers = {"X-Trace-Id": "abc-123", "Agent-Did": "did:key:z6MkTest"}
    await transport.publish(f"{uid}.h", b"x", headers=headers)
    (message,) = await recorder.wait_for(1)
    assert dict(message.headers) == headers


async def test_malformed_header_is_rejected(transport: Transport, uid: str) -> None:
    with pytest.raises(TransportError):
        await transport.publish(f"{uid}.h", b"x", headers={"bad name": "v"})
    with pytest.raises(TransportError):
        await transport.publish(f"{uid}.h", b"x", headers={"X-Ok": "two\r\nlines"})


async def test_reply_subject_is_delivered(transport: Transport, uid: str) -> None:
    recorder = Recorder()
    await transport.subscribe(f"{uid}.r", recorder)
    await transport.publish(f"{uid}.r", b"x", reply=f"{uid}.answers")
    (message,) = await recorder.wait_for(1)
    assert message.reply == f"{uid}.answers"


async def test_single_token_wildcard(transport: Transport, uid: str) -> None:
    recorder = Recorder()
    await transport.subscribe(f"{uid}.*.x", recorder)
    for subject in (f"{uid}.a.x", f"{uid}.a.b.x", f"{uid}.x", f"{uid}.a.y", f"{uid}.b.x"):
        await transport.publish(subject, b"")
    # The last publish matches; ordering means nothing else can still be in flight.
    await recorder.wait_for(2)
    await transport.flush()
    await asyncio.sleep(0.05)
    assert recorder.subjects == [f"{uid}.a.x", f"{uid}.b.x"]


async def test_tail_wildcard_needs_at_least_one_token(transport: Transport, uid: str) -> None:
    recorder = Recorder()
    await transport.subscribe(f"{uid}.events.>", recorder)
    for subject in (f"{uid}.events", f"{uid}.events.a", f"{uid}.other.a", f"{uid}.events.a.b.c"):
        await transport.publish(subject, b"")
    await recorder.wait_for(2)
    await transport.flush()
    await asyncio.sleep(0.05)
    assert recorder.subjects == [f"{uid}.events.a", f"{uid}.events.a.b.c"]


async def test_overlapping_subscriptions_each_get_a_copy(transport: Transport, uid: str) -> None:
    exact, star, tail = Recorder(), Recorder(), Recorder()
    await transport.subscribe(f"{uid}.a.b", exact)
    await transport.subscribe(f"{uid}.a.*", star)
    await transport.subscribe(f"{uid}.>", tail)
    await transport.publish(f"{uid}.a.b", b"one")
    for recorder in (exact, star, tail):
        await recorder.wait_for(1)
        assert recorder.payloads == [b"one"]


async def test_order_is_kept_and_handlers_run_one_at_a_time(transport: Transport, uid: str) -> None:
    seen: list[int] = []
    running = 0
    overlap = False
    done = asyncio.Event()

    async def handler(message: Message) -> None:
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        await asyncio.sleep(0)  # give a concurrent call the chance to show up
        seen.append(int(message.data))
        running -= 1
        if len(seen) == 200:
            done.set()

    await transport.subscribe(f"{uid}.seq", handler)
    for i in range(200):
        await transport.publish(f"{uid}.seq", str(i).encode())
    await asyncio.wait_for(done.wait(), 5)
    assert seen == list(range(200))
    assert not overlap


async def test_failing_handler_does_not_end_the_subscription(
    transport: Transport, uid: str
) -> None:
    recorder = Recorder()

    async def handler(message: Message) -> None:
        if message.data == b"boom":
            raise RuntimeError("handler failure")
        await recorder(message)

    await transport.subscribe(f"{uid}.f", handler)
    await transport.publish(f"{uid}.f", b"boom")
    await transport.publish(f"{uid}.f", b"fine")
    await recorder.wait_for(1)
    assert recorder.payloads == [b"fine"]


async def test_unsubscribe_stops_delivery_and_is_idempotent(transport: Transport, uid: str) -> None:
    gone, kept = Recorder(), Recorder()
    subscription = await transport.subscribe(f"{uid}.u", gone)
    await transport.subscribe(f"{uid}.u", kept)
    await transport.publish(f"{uid}.u", b"1")
    await gone.wait_for(1)
    await subscription.unsubscribe()
    await subscription.unsubscribe()
    await transport.publish(f"{uid}.u", b"2")
    await kept.wait_for(2)
    await transport.flush()
    await asyncio.sleep(0.05)
    assert gone.payloads == [b"1"]


async def test_unsubscribe_from_inside_the_handler(transport: Transport, uid: str) -> None:
    got: list[bytes] = []
    subscription: Subscription | None = None
    first = asyncio.Event()

    async def handler(message: Message) -> None:
        got.append(message.data)
        assert subscription is not None
        await subscription.unsubscribe()
        first.set()

    subscription = await transport.subscribe(f"{uid}.once", handler)
    for payload in (b"1", b"2", b"3"):
        await transport.publish(f"{uid}.once", payload)
    await asyncio.wait_for(first.wait(), 5)
    await transport.flush()
    await asyncio.sleep(0.1)
    assert got == [b"1"]


# -- queue groups ---------------------------------------------------------------------


async def test_queue_group_delivers_each_message_to_exactly_one_member(
    transport_factory: TransportFactory, uid: str
) -> None:
    node_a = await transport_factory.new("a")
    node_b = await transport_factory.new("b")
    members = [Recorder() for _ in range(3)]
    plain = Recorder()
    await node_a.subscribe(f"{uid}.work", members[0], queue="workers")
    await node_a.subscribe(f"{uid}.work", members[1], queue="workers")
    await node_b.subscribe(f"{uid}.*", members[2], queue="workers")
    await node_b.subscribe(f"{uid}.work", plain)
    total = 90
    for i in range(total):
        await node_a.publish(f"{uid}.work", str(i).encode())
    await plain.wait_for(total)
    await eventually(lambda: sum(len(m.messages) for m in members) >= total)
    await node_a.flush()
    await asyncio.sleep(0.05)
    received = sorted(int(p) for m in members for p in m.payloads)
    assert received == list(range(total))  # every message exactly once in the group
    assert sum(1 for m in members if m.messages) >= 2  # and actually spread


async def test_each_queue_group_gets_every_message(transport: Transport, uid: str) -> None:
    group_a, group_b = Recorder(), Recorder()
    await transport.subscribe(f"{uid}.jobs", group_a, queue="a")
    await transport.subscribe(f"{uid}.jobs", group_b, queue="b")
    for i in range(10):
        await transport.publish(f"{uid}.jobs", str(i).encode())
    await group_a.wait_for(10)
    await group_b.wait_for(10)
    assert group_a.payloads == group_b.payloads


# -- request / reply ------------------------------------------------------------------


async def _serve_upper(transport: Transport, subject: str) -> Subscription:
    async def responder(message: Message) -> None:
        assert message.reply is not None
        headers = {"Served-By": "upper", **dict(message.headers)}
        await transport.publish(message.reply, message.data.upper(), headers=headers)

    return await transport.subscribe(subject, responder, queue="upper")


async def test_request_reply(transport_factory: TransportFactory, uid: str) -> None:
    server = await transport_factory.new("server")
    client = await transport_factory.new("client")
    await _serve_upper(server, f"{uid}.upper")
    reply = await client.request(f"{uid}.upper", b"ping", timeout=2.0, headers={"X-Req": "1"})
    assert reply.data == b"PING"
    assert dict(reply.headers) == {"Served-By": "upper", "X-Req": "1"}


async def test_concurrent_requests_get_their_own_replies(transport: Transport, uid: str) -> None:
    await _serve_upper(transport, f"{uid}.upper")
    words = [f"word{i}".encode() for i in range(20)]
    replies = await asyncio.gather(
        *(transport.request(f"{uid}.upper", w, timeout=2.0) for w in words)
    )
    assert [r.data for r in replies] == [w.upper() for w in words]


async def test_request_timeout(transport: Transport, uid: str) -> None:
    async def silent(message: Message) -> None:
        return None

    await transport.subscribe(f"{uid}.silent", silent)
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        await transport.request(f"{uid}.silent", b"anyone?", timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 2.0


async def test_no_responders_is_immediate(transport: Transport, uid: str) -> None:
    started = time.monotonic()
    with pytest.raises(NoResponders):
        await transport.request(f"{uid}.nobody", b"hello?", timeout=5.0)
    assert time.monotonic() - started < 1.0


async def test_new_inbox_is_unique_and_subscribable(transport: Transport) -> None:
    inboxes = {transport.new_inbox() for _ in range(100)}
    assert len(inboxes) == 100
    recorder = Recorder()
    inbox = next(iter(inboxes))
    await transport.subscribe(inbox, recorder)
    await transport.publish(inbox, b"direct")
    await recorder.wait_for(1)


# -- limits and validation ------------------------------------------------------------


async def test_payload_limit(transport: Transport, uid: str) -> None:
    limit = transport.max_payload
    recorder = Recorder()
    await transport.subscribe(f"{uid}.big", recorder)
    await transport.publish(f"{uid}.big", b"x" * limit)
    await recorder.wait_for(1, timeout=10)
    with pytest.raises(PayloadTooLarge):
        await transport.publish(f"{uid}.big", b"x" * (limit + 1))
    with pytest.raises(PayloadTooLarge):
        await transport.request(f"{uid}.big", b"x" * (limit + 1), timeout=1.0)
    kv = await transport.key_value(uid)
    with pytest.raises(PayloadTooLarge):
        await kv.put("big", b"x" * (limit + 1))


@pytest.mark.parametrize(
    "subject", ["", "a..b", ".a", "a.", "a b", "a\tb", "a.*", "a.>", "*", ">", "a.b*"]
)
async def test_invalid_publish_subjects(transport: Transport, subject: str) -> None:
    with pytest.raises(InvalidSubject):
        await transport.publish(subject, b"x")
    with pytest.raises(InvalidSubject):
        await transport.request(subject, b"x", timeout=0.5)


@pytest.mark.parametrize("subject", ["", "a..b", "a.>.b", "a*", "a.b>", "a b", "a.\n"])
async def test_invalid_subscribe_subjects(transport: Transport, subject: str) -> None:
    with pytest.raises(InvalidSubject):
        await transport.subscribe(subject, Recorder())


async def test_invalid_queue_and_reply(transport: Transport, uid: str) -> None:
    with pytest.raises(InvalidSubject):
        await transport.subscribe(f"{uid}.q", Recorder(), queue="two words")
    with pytest.raises(InvalidSubject):
        await transport.publish(f"{uid}.q", b"x", reply=f"{uid}.*")


# -- key-value ------------------------------------------------------------------------


async def test_kv_put_get_and_revisions(transport: Transport, uid: str) -> None:
    kv = await transport.key_value(uid)
    assert kv.bucket == uid
    first = await kv.put("agents.alice", b"v1")
    second = await kv.put("agents.bob", b"v1")
    third = await kv.put("agents.alice", b"v2")
    assert first < second < third  # one counter per bucket
    entry = await kv.get("agents.alice")
    assert (entry.bucket, entry.key, entry.value, entry.revision) == (
        uid,
        "agents.alice",
        b"v2",
        third,
    )
    assert entry.operation is KVOperation.PUT
    with pytest.raises(KeyNotFound):
        await kv.get("agents.carol")


async def test_kv_bucket_is_shared_between_transports(
    transport_factory: TransportFactory, uid: str
) -> None:
    one = await (await transport_factory.new("one")).key_value(uid)
    two = await (await transport_factory.new("two")).key_value(uid)
    revision = await one.put("k", b"from one")
    entry = await two.get("k")
    assert (entry.value, entry.revision) == (b"from one", revision)


async def test_kv_create_is_exclusive(transport: Transport, uid: str) -> None:
    kv = await transport.key_value(uid)
    revision = await kv.create("lock", b"me")
    with pytest.raises(KeyExists):
        await kv.create("lock", b"you")
    assert (await kv.get("lock")).revision == revision


async def test_kv_update_is_compare_and_set(transport: Transport, uid: str) -> None:
    kv = await transport.key_value(uid)
    revision = await kv.put("counter", b"1")
    newer = await kv.update("counter", b"2", last_revision=revision)
    assert newer > revision
    with pytest.raises(RevisionMismatch) as caught:
        await kv.update("counter", b"3", last_revision=revision)
    assert caught.value.expected == revision
    assert (await kv.get("counter")).value == b"2"
    with pytest.raises(RevisionMismatch):
        await kv.update("never-written", b"x", last_revision=7)
    assert await kv.update("fresh", b"x", last_revision=0) > 0


async def test_kv_concurrent_updates_one_winner(
    transport_factory: TransportFactory, uid: str
) -> None:
    kvs = [await (await transport_factory.new(f"n{i}")).key_value(uid) for i in range(3)]
    base = await kvs[0].put("leader", b"none")
    results = await asyncio.gather(
        *(kv.update("leader", f"node{i}".encode(), last_revision=base) for i, kv in enumerate(kvs)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, int)]
    assert len(winners) == 1
    assert all(isinstance(r, RevisionMismatch) for r in results if not isinstance(r, int))


async def test_kv_delete_then_create_again(transport: Transport, uid: str) -> None:
    kv = await transport.key_value(uid)
    await kv.put("session", b"open")
    await kv.delete("session")
    with pytest.raises(KeyNotFound):
        await kv.get("session")
    assert await kv.keys() == []
    revision = await kv.create("session", b"reopened")
    assert (await kv.get("session")).revision == revision


async def test_kv_keys_sorted_and_live_only(transport: Transport, uid: str) -> None:
    kv = await transport.key_value(uid)
    assert await kv.keys() == []
    for key in ("b", "a.x", "c", "a.y"):
        await kv.put(key, b"v")
    await kv.put("a.x", b"v2")
    await kv.delete("c")
    assert await kv.keys() == ["a.x", "a.y", "b"]


@pytest.mark.parametrize("key", ["", "a..b", ".a", "a.", "a b", "a/b", "a*", "a.>", "ü"])
async def test_kv_invalid_keys(transport: Transport, uid: str, key: str) -> None:
    kv = await transport.key_value(uid)
    with pytest.raises(InvalidSubject):
        await kv.put(key, b"v")
    with pytest.raises(InvalidSubject):
        await kv.get(key)


async def test_kv_invalid_bucket_and_history(transport: Transport, uid: str) -> None:
    with pytest.raises(InvalidSubject):
        await transport.key_value("bad.bucket")
    with pytest.raises(KeyValueError):
        await transport.key_value(f"{uid}h", history=65)


async def test_kv_watch_snapshot_then_live(transport: Transport, uid: str) -> None:
    kv = await transport.key_value(uid, history=5)
    await kv.put("a", b"1")
    await kv.put("b", b"1")
    await kv.put("a", b"2")
    await kv.put("gone", b"x")
    await kv.delete("gone")
    async with contextlib.aclosing(kv.watch()) as watch:
        snapshot = await take(watch, 2)
        assert [(e.key, e.value) for e in snapshot] == [("b", b"1"), ("a", b"2")]
        await kv.put("c", b"1")
        await kv.delete("a")
        put, deleted = await take(watch, 2)
        assert (put.key, put.value, put.operation) == ("c", b"1", KVOperation.PUT)
        assert (deleted.key, deleted.operation) == ("a", KVOperation.DELETE)
        assert snapshot[-1].revision < put.revision < deleted.revision


async def test_kv_keys_lists_every_live_key_from_a_fresh_client(
    transport_factory: TransportFactory, uid: str
) -> None:
    """A complete listing every time, also when the last messages are still in flight."""
    writer = await (await transport_factory.new("w")).key_value(uid, history=1)
    for index in range(200):
        await writer.put(f"k{index:03d}", b"v")
    for index in range(0, 200, 7):
        await writer.delete(f"k{index:03d}")
    expected = sorted(f"k{i:03d}" for i in range(200) if i % 7)
    for _ in range(5):
        reader = await (await transport_factory.new("r")).key_value(uid, history=1)
        assert await reader.keys(timeout=5) == expected


async def test_kv_watch_on_ready_means_no_write_is_missed(
    transport_factory: TransportFactory, uid: str
) -> None:
    """Every write made after ``on_ready`` reaches the watch, even two to one key at once."""
    watcher_side = await (await transport_factory.new("w")).key_value(uid, history=1)
    writer_side = await (await transport_factory.new("p")).key_value(uid, history=1)
    ready = asyncio.Event()
    seen: list[tuple[str, bytes]] = []

    async def follow() -> None:
        async with contextlib.aclosing(watcher_side.watch(on_ready=ready.set)) as watch:
            async for entry in watch:
                seen.append((entry.key, entry.value))

    task = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(ready.wait(), 5)
        assert seen == []  # called before any entry
        for value in (b"1", b"2", b"3"):  # history=1: a late consumer would see only b"3"
            await writer_side.put("k", value)
        await eventually(lambda: len(seen) >= 3)
        assert seen == [("k", b"1"), ("k", b"2"), ("k", b"3")]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_kv_watch_pattern_and_empty_bucket(
    transport_factory: TransportFactory, uid: str
) -> None:
    watcher_side = await (await transport_factory.new("w")).key_value(uid)
    writer_side = await (await transport_factory.new("p")).key_value(uid)
    async with contextlib.aclosing(watcher_side.watch("agents.*")) as watch:
        first = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(0.2)  # the watch is running before anything is written
        await writer_side.put("other.x", b"no")
        await writer_side.put("agents.x.y", b"no")
        await writer_side.put("agents.x", b"yes")
        entry = await asyncio.wait_for(first, 5)
        assert (entry.key, entry.value) == ("agents.x", b"yes")


async def test_kv_watch_sees_every_change_in_order(transport: Transport, uid: str) -> None:
    # History covers the 20 writes: with history 1, NATS keeps only the newest value
    # of a key, and a watch that lags (a busy CI core) may see only the newest of
    # values overwritten in a burst (see KeyValue.watch).
    kv = await transport.key_value(uid, history=32)
    ready = asyncio.Event()
    async with contextlib.aclosing(kv.watch("k", on_ready=ready.set)) as watch:
        first = asyncio.ensure_future(anext(watch))  # runs the watch up to on_ready
        # Not a sleep: under load the watch's consumer can come after the first puts,
        # and a watch starts from the last value per key.
        await asyncio.wait_for(ready.wait(), 10)
        revisions = [await kv.put("k", str(i).encode()) for i in range(20)]
        # The watch buffers: the deadline starts after the writes (CI runs on 2 busy cores).
        entries = [await asyncio.wait_for(first, 10), *await take(watch, 19, timeout=10)]
    assert [e.revision for e in entries] == revisions
    assert [e.value for e in entries] == [str(i).encode() for i in range(20)]


async def test_kv_watch_ends_when_transport_closes(
    transport_factory: TransportFactory, uid: str
) -> None:
    transport = await transport_factory.new("closing")
    kv = await transport.key_value(uid)
    await kv.put("a", b"1")
    watch = kv.watch()
    assert (await anext(watch)).key == "a"
    waiting = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.05)
    await transport.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)


async def test_kv_ttl_expires_entries(transport: Transport, uid: str) -> None:
    kv = await transport.key_value(uid, ttl=0.5)
    await kv.put("ephemeral", b"v")
    assert (await kv.get("ephemeral")).value == b"v"
    async with asyncio.timeout(10):
        while True:
            try:
                await kv.get("ephemeral")
            except KeyNotFound:
                break
            await asyncio.sleep(0.1)
    assert await kv.keys() == []
    assert await kv.create("ephemeral", b"again") > 0


# -- streams --------------------------------------------------------------------------


async def test_stream_append_and_last_seq(transport: Transport, uid: str) -> None:
    stream = await transport.stream(uid, [f"{uid}.audit.>"])
    assert stream.name == uid
    assert await stream.last_seq() == 0
    acks = [await stream.append(f"{uid}.audit.e", str(i).encode()) for i in range(3)]
    assert [(a.stream, a.seq, a.duplicate) for a in acks] == [
        (uid, 1, False),
        (uid, 2, False),
        (uid, 3, False),
    ]
    assert await stream.last_seq() == 3


async def test_stream_deduplicates_msg_ids(transport: Transport, uid: str) -> None:
    stream = await transport.stream(uid, [f"{uid}.ev.>"], duplicate_window=60)
    first = await stream.append(f"{uid}.ev.a", b"once", msg_id="evt-1")
    again = await stream.append(f"{uid}.ev.a", b"once", msg_id="evt-1")
    other = await stream.append(f"{uid}.ev.a", b"twice", msg_id="evt-2")
    assert (first.seq, first.duplicate) == (1, False)
    assert (again.seq, again.duplicate) == (1, True)
    assert (other.seq, other.duplicate) == (2, False)
    assert await stream.last_seq() == 2
    async with contextlib.aclosing(stream.read()) as reader:
        stored = await take(reader, 2)
    assert [(m.msg_id, m.data) for m in stored] == [("evt-1", b"once"), ("evt-2", b"twice")]


async def test_stream_rejects_foreign_subjects_and_overlaps(transport: Transport, uid: str) -> None:
    stream = await transport.stream(uid, [f"{uid}.mine.>"])
    with pytest.raises(StreamError):
        await stream.append(f"{uid}.theirs.x", b"x")
    with pytest.raises(InvalidSubject):
        await stream.append(f"{uid}.mine.*", b"x")
    with pytest.raises(StreamError):
        await transport.stream(f"{uid}b", [f"{uid}.mine.x"])
    with pytest.raises(InvalidSubject):
        await transport.stream("bad.name", [f"{uid}.other"])


async def test_stream_is_create_or_bind(transport_factory: TransportFactory, uid: str) -> None:
    one = await (await transport_factory.new("one")).stream(uid, [f"{uid}.log.>"])
    await one.append(f"{uid}.log.a", b"1")
    two = await (await transport_factory.new("two")).stream(uid, [f"{uid}.log.>"])
    assert await two.last_seq() == 1


async def test_stream_appends_reach_core_subscribers(transport: Transport, uid: str) -> None:
    recorder = Recorder()
    await transport.subscribe(f"{uid}.log.>", recorder)
    stream = await transport.stream(uid, [f"{uid}.log.>"])
    await stream.append(f"{uid}.log.a", b"stored and routed")
    (message,) = await recorder.wait_for(1)
    assert message.data == b"stored and routed"


async def test_core_publish_is_captured_by_stream(transport: Transport, uid: str) -> None:
    stream = await transport.stream(uid, [f"{uid}.cap.>"])
    await transport.publish(f"{uid}.cap.x", b"captured")
    async with contextlib.aclosing(stream.read()) as reader:
        (message,) = await take(reader, 1)
    assert (message.seq, message.subject, message.data) == (1, f"{uid}.cap.x", b"captured")


async def test_stream_read_stored_then_live(transport: Transport, uid: str) -> None:
    stream = await transport.stream(uid, [f"{uid}.r.>"])
    for i in range(3):
        await stream.append(f"{uid}.r.a", str(i).encode(), msg_id=f"id{i}")
    async with contextlib.aclosing(stream.read()) as reader:
        stored = await take(reader, 3)
        assert [(m.seq, m.data, m.msg_id) for m in stored] == [
            (1, b"0", "id0"),
            (2, b"1", "id1"),
            (3, b"2", "id2"),
        ]
        assert all(m.stream == uid and m.subject == f"{uid}.r.a" for m in stored)
        live = asyncio.ensure_future(take(reader, 2))
        await asyncio.sleep(0.05)
        await stream.append(f"{uid}.r.b", b"3")
        await stream.append(f"{uid}.r.a", b"4")
        assert [(m.seq, m.data) for m in await asyncio.wait_for(live, 5)] == [(4, b"3"), (5, b"4")]


async def test_stream_read_from_sequence_with_filter(transport: Transport, uid: str) -> None:
    stream = await transport.stream(uid, [f"{uid}.r.>"])
    for i in range(6):
        await stream.append(f"{uid}.r.{'even' if i % 2 == 0 else 'odd'}", str(i).encode())
    async with contextlib.aclosing(stream.read(start_seq=4)) as reader:
        assert [m.seq for m in await take(reader, 3)] == [4, 5, 6]
    async with contextlib.aclosing(stream.read(start_seq=2, subject=f"{uid}.r.even")) as reader:
        assert [m.data for m in await take(reader, 2)] == [b"2", b"4"]


async def test_stream_read_ends_when_transport_closes(
    transport_factory: TransportFactory, uid: str
) -> None:
    transport = await transport_factory.new("closing")
    stream = await transport.stream(uid, [f"{uid}.r.>"])
    reader = stream.read()
    waiting = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0.1)
    await transport.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)


async def test_durable_consumer_fetch_and_ack(transport: Transport, uid: str) -> None:
    stream = await transport.stream(uid, [f"{uid}.jobs.>"])
    for i in range(5):
        await stream.append(f"{uid}.jobs.x", str(i).encode())
    consumer = await stream.consumer("workers")
    batch = await consumer.fetch(3, timeout=2.0)
    assert [m.seq for m in batch] == [1, 2, 3]
    for message in batch:
        await consumer.ack(message)
    rest = await consumer.fetch(10, timeout=1.0)
    assert [m.seq for m in rest] == [4, 5]
    for message in rest:
        await consumer.ack(message)
    started = time.monotonic()
    assert await consumer.fetch(1, timeout=0.3) == []
    assert time.monotonic() - started < 2.0


async def test_durable_consumer_waits_for_new_messages(transport: Transport, uid: str) -> None:
    stream = await transport.stream(uid, [f"{uid}.jobs.>"])
    consumer = await stream.consumer("waiter")
    pending = asyncio.ensure_future(consumer.fetch(1, timeout=3.0))
    await asyncio.sleep(0.1)
    await stream.append(f"{uid}.jobs.x", b"late")
    (message,) = await asyncio.wait_for(pending, 5)
    assert message.data == b"late"


async def test_durable_consumer_redelivers_unacked(transport: Transport, uid: str) -> None:
    stream = await transport.stream(uid, [f"{uid}.jobs.>"])
    await stream.append(f"{uid}.jobs.x", b"work")
    consumer = await stream.consumer("slow", ack_wait=0.5)
    (first,) = await consumer.fetch(1, timeout=2.0)
    assert await consumer.fetch(1, timeout=0.1) == []  # not yet: still within ack_wait
    (again,) = await consumer.fetch(1, timeout=3.0)
    assert (again.seq, again.data) == (first.seq, b"work")
    await consumer.ack(again)
    assert await consumer.fetch(1, timeout=0.7) == []  # acked: never again


async def test_durable_position_survives_new_consumer_object(
    transport_factory: TransportFactory, uid: str
) -> None:
    first_node = await transport_factory.new("first")
    stream = await first_node.stream(uid, [f"{uid}.jobs.>"])
    for i in range(4):
        await stream.append(f"{uid}.jobs.x", str(i).encode())
    consumer = await stream.consumer("ledger")
    for message in await consumer.fetch(2, timeout=2.0):
        await consumer.ack(message)
    await first_node.aclose()

    second_node = await transport_factory.new("second")
    same = await (await second_node.stream(uid, [f"{uid}.jobs.>"])).consumer("ledger")
    assert [m.data for m in await same.fetch(5, timeout=2.0)] == [b"2", b"3"]


async def test_durable_consumer_filter(transport: Transport, uid: str) -> None:
    stream = await transport.stream(uid, [f"{uid}.jobs.>"])
    await stream.append(f"{uid}.jobs.a", b"a1")
    await stream.append(f"{uid}.jobs.b", b"b1")
    await stream.append(f"{uid}.jobs.a", b"a2")
    consumer = await stream.consumer("only-a", subject=f"{uid}.jobs.a")
    assert [m.data for m in await consumer.fetch(5, timeout=1.0)] == [b"a1", b"a2"]
    with pytest.raises(StreamError):
        await stream.consumer("only-a", subject=f"{uid}.jobs.b")


async def test_ack_of_unknown_message_is_an_error(transport: Transport, uid: str) -> None:
    stream = await transport.stream(uid, [f"{uid}.jobs.>"])
    await stream.append(f"{uid}.jobs.x", b"x")
    consumer = await stream.consumer("acker")
    (message,) = await consumer.fetch(1, timeout=2.0)
    await consumer.ack(message)
    with pytest.raises(StreamError):
        await consumer.ack(message)
    other = await stream.consumer("other")
    with pytest.raises(StreamError):
        await other.ack(message)


# -- limits set at creation (StoreLimits) ---------------------------------------------------


async def test_write_once_bucket_keeps_every_first_value(transport: Transport, uid: str) -> None:
    kv = await transport.key_value(uid, limits=StoreLimits(write_once=True))
    await kv.put("a.1", b"first")
    for overwrite in (
        kv.put("a.1", b"second"),
        kv.create("a.1", b"second"),
        kv.delete("a.1"),
    ):
        with pytest.raises(KeyExists):
            await overwrite
    assert (await kv.get("a.1")).value == b"first"
    await kv.put("a.2", b"other key")  # only the written key is closed
    assert await kv.keys() == ["a.1", "a.2"]


async def test_bucket_value_size_limit(transport: Transport, uid: str) -> None:
    kv = await transport.key_value(uid, limits=StoreLimits(max_value_size=100))
    await kv.put("k", b"x" * 100)
    with pytest.raises(PayloadTooLarge):
        await kv.put("k", b"x" * 101)
    assert (await kv.get("k")).value == b"x" * 100


async def test_stream_per_subject_quota_refuses_only_the_full_subject(
    transport: Transport, uid: str
) -> None:
    stream = await transport.stream(
        uid, [f"{uid}.*"], limits=StoreLimits(per_subject_quota=2, max_value_size=64)
    )
    await stream.append(f"{uid}.a", b"1")
    await stream.append(f"{uid}.a", b"2")
    with pytest.raises(StreamError, match="quota"):
        await stream.append(f"{uid}.a", b"3")
    await stream.append(f"{uid}.b", b"1")  # another writer's subject is unaffected
    with pytest.raises(PayloadTooLarge):
        await stream.append(f"{uid}.b", b"x" * 65)
    assert await stream.last_seq() == 3


async def test_limits_apply_only_when_a_store_is_created(transport: Transport, uid: str) -> None:
    await transport.key_value(uid)
    kv = await transport.key_value(uid, limits=StoreLimits(write_once=True))
    await kv.put("k", b"1")
    await kv.put("k", b"2")  # the existing bucket kept its (open) configuration
    assert (await kv.get("k")).value == b"2"


async def test_kv_history_lists_revisions_oldest_first(transport: Transport, uid: str) -> None:
    kv = await transport.key_value(uid, history=3)
    assert await kv.history("k") == []
    revisions = [await kv.put("k", str(i).encode()) for i in range(4)]
    await kv.delete("k")
    entries = await kv.history("k")
    assert [e.value for e in entries] == [b"2", b"3", b""]
    assert [e.operation for e in entries] == [KVOperation.PUT, KVOperation.PUT, KVOperation.DELETE]
    assert [e.revision for e in entries][:2] == revisions[2:]
    assert await kv.incarnation() == await kv.incarnation() is not None


async def test_publish_with_a_reply_nobody_receives_gets_a_no_responders_status(
    transport: Transport, uid: str
) -> None:
    inbox = transport.new_inbox()
    recorder = Recorder()
    await transport.subscribe(inbox + ".*", recorder)
    await transport.publish(f"{uid}.nobody", b"x", reply=inbox + ".t1")
    (status,) = await recorder.wait_for(1)
    assert status.data == b""
    assert status.headers.get("Status") == "503"
