"""ReplyInbox: the wait for a valid reply, its deadline and a (faked) no-responders status.

Run on both transports. The deadline is one timer per request; these tests pin
what it must do: end the wait with RequestTimeout, leave nothing pending, and
bound the no-responders grace as well.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from agentmesh.errors import NoResponders, RequestTimeout
from agentmesh.node.replies import ReplyInbox
from agentmesh.transport.base import Message, Transport
from iatp.errors import InvalidSignature


def accept_ok(message: Message) -> bytes:
    if message.data != b"ok":
        raise InvalidSignature("not the reply we wait for")
    return message.data


async def started(transport: Transport) -> ReplyInbox:
    inbox = ReplyInbox(transport, no_responders_grace=0.5)
    await inbox.start()
    return inbox


async def test_a_valid_reply_ends_the_wait_and_junk_does_not(
    transport: Transport, uid: str
) -> None:
    async def answer(message: Message) -> None:
        assert message.reply is not None
        await transport.publish(message.reply, b"junk")
        await transport.publish(message.reply, b"ok")

    await transport.subscribe(f"{uid}.svc", answer)
    inbox = await started(transport)
    assert await inbox.request(f"{uid}.svc", b"q", accept_ok, timeout=5.0) == b"ok"
    assert inbox.junk == 1
    assert inbox._pending == {}
    await inbox.aclose()


async def test_silence_ends_with_request_timeout_on_time(transport: Transport, uid: str) -> None:
    async def ignore(message: Message) -> None:
        return None

    await transport.subscribe(f"{uid}.svc", ignore)
    inbox = await started(transport)
    start = time.monotonic()
    with pytest.raises(RequestTimeout):
        await inbox.request(f"{uid}.svc", b"q", accept_ok, timeout=0.2)
    assert 0.15 <= time.monotonic() - start < 2.0
    assert inbox._pending == {}
    await inbox.aclose()


async def test_only_junk_ends_with_request_timeout(transport: Transport, uid: str) -> None:
    async def junk(message: Message) -> None:
        assert message.reply is not None
        await transport.publish(message.reply, b"junk")

    await transport.subscribe(f"{uid}.svc", junk)
    inbox = await started(transport)
    with pytest.raises(RequestTimeout):
        await inbox.request(f"{uid}.svc", b"q", accept_ok, timeout=0.2)
    assert inbox.junk == 1


async def test_a_faked_status_is_not_believed_before_the_grace(
    transport: Transport, uid: str
) -> None:
    """A fake no-responders status, then the real reply: the reply wins."""

    async def fake_then_answer(message: Message) -> None:
        assert message.reply is not None
        await transport.publish(message.reply, b"", headers={"Status": "503"})
        await asyncio.sleep(0.05)
        await transport.publish(message.reply, b"ok")

    await transport.subscribe(f"{uid}.svc", fake_then_answer)
    inbox = await started(transport)
    assert await inbox.request(f"{uid}.svc", b"q", accept_ok, timeout=5.0) == b"ok"


async def test_a_status_alone_is_believed_after_the_grace(transport: Transport, uid: str) -> None:
    async def fake(message: Message) -> None:
        assert message.reply is not None
        await transport.publish(message.reply, b"", headers={"Status": "503"})

    await transport.subscribe(f"{uid}.svc", fake)
    inbox = await started(transport)
    with pytest.raises(NoResponders):
        await inbox.request(f"{uid}.svc", b"q", accept_ok, timeout=5.0)


async def test_the_deadline_cuts_the_grace_short(transport: Transport, uid: str) -> None:
    """Grace 0.5 s, deadline 0.2 s: the request ends at its deadline, as a timeout."""

    async def fake(message: Message) -> None:
        assert message.reply is not None
        await transport.publish(message.reply, b"", headers={"Status": "503"})

    await transport.subscribe(f"{uid}.svc", fake)
    inbox = await started(transport)
    start = time.monotonic()
    with pytest.raises(RequestTimeout):
        await inbox.request(f"{uid}.svc", b"q", accept_ok, timeout=0.2)
    assert time.monotonic() - start < 0.45


async def test_a_cancelled_request_leaves_nothing_behind(transport: Transport, uid: str) -> None:
    async def ignore(message: Message) -> None:
        return None

    await transport.subscribe(f"{uid}.svc", ignore)
    inbox = await started(transport)
    task = asyncio.create_task(inbox.request(f"{uid}.svc", b"q", accept_ok, timeout=0.3))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inbox._pending == {}
    # The inbox still serves the next request (nothing of the cancelled one lingers).
    with pytest.raises(RequestTimeout):
        await inbox.request(f"{uid}.svc", b"q", accept_ok, timeout=0.1)
    assert inbox._pending == {}


async def test_a_reply_after_the_deadline_fired_is_counted_late(
    transport: Transport, uid: str
) -> None:
    """The deadline has failed the wait but the request has not cleaned up yet."""
    inbox = await started(transport)
    loop = asyncio.get_running_loop()
    seen: list[Message] = []

    async def answer_late(message: Message) -> None:
        seen.append(message)

    await transport.subscribe(f"{uid}.svc", answer_late)
    task = asyncio.create_task(inbox.request(f"{uid}.svc", b"q", accept_ok, timeout=0.1))
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.01)
    (pending,) = inbox._pending.values()
    pending.future.set_exception(TimeoutError())  # what the deadline timer does
    reply = seen[0].reply
    assert reply is not None
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    await inbox._on_message(Message(reply, b"ok"))  # arrives in between: late, not a crash
    assert inbox.late == 1
    with pytest.raises(RequestTimeout):
        await task
    assert errors == []
