"""Replies to a node's requests: one inbox subscription, and a wait for a *valid* reply.

A plain request takes the first message that arrives on its reply subject.
Anyone who can publish there (on an open broker: anyone who saw the request go
by) could answer first with junk; the request then fails although the peer did
the work, and a retry would run it twice. Here every message on a request's
reply subject goes through the caller's check (signature or session MAC by the
expected peer, the request's correlation id, validity, replay); what fails is
counted and audited by the caller and the request keeps waiting until a valid
reply or its timeout.

As on NATS, a request to a subject nobody listens on gets a no-responders
status on its reply subject (empty body, ``Status: 503``). Anyone who can publish
to the reply subject could fake one, so it is not believed at once: the request
fails with :class:`~agentmesh.errors.NoResponders` only if no valid reply comes
within ``no_responders_grace`` after it (a real responder would have answered).
Reply subjects end in a random token, so they cannot be guessed from earlier ones.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TypeVar

from agentmesh.errors import NoResponders, RequestTimeout
from agentmesh.transport.base import Message, Subscription, Transport
from iatp.errors import AgentMeshError

T = TypeVar("T")
NO_RESPONDERS_STATUS = "503"


_NO_RESPONDERS = object()
"""What a waiting request's future gets for a no-responders status (checked, not believed)."""


class _Pending:
    __slots__ = ("accept", "future", "no_responders_seen", "subject")

    def __init__(
        self, subject: str, accept: Callable[[Message], object], future: asyncio.Future[object]
    ) -> None:
        self.subject = subject
        self.accept = accept
        self.future = future
        self.no_responders_seen = False


class ReplyInbox:
    """The node's reply subscription (``<inbox prefix>.<id>.*``) and its waiting requests.

    ``accept`` callbacks raise :class:`~iatp.errors.AgentMeshError` for a message
    that is not a valid reply (after recording why); it is then ignored.
    """

    def __init__(self, transport: Transport, *, no_responders_grace: float = 0.25) -> None:
        self._transport = transport
        self._base = transport.new_inbox()
        self._grace = no_responders_grace
        self._pending: dict[str, _Pending] = {}
        self._subscription: Subscription | None = None
        self.junk = 0
        self.late = 0

    async def start(self) -> None:
        """Subscribe (returns once the server has the interest)."""
        self._subscription = await self._transport.subscribe(f"{self._base}.*", self._on_message)

    async def aclose(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await subscription.unsubscribe()

    async def request(
        self, subject: str, data: bytes, accept: Callable[[Message], T], *, timeout: float
    ) -> T:
        """Send ``data`` to ``subject``; return ``accept`` of the first reply it accepts.

        Raises:
            NoResponders: Nobody subscribes to ``subject``.
            RequestTimeout: No acceptable reply within ``timeout`` seconds.
            TransportError: The transport could not send.
        """
        token = os.urandom(9).hex()
        loop = asyncio.get_running_loop()
        pending = _Pending(subject, accept, loop.create_future())
        self._pending[token] = pending
        deadline = loop.time() + timeout
        # One timer that fails the waiting future (cheaper than asyncio.timeout_at
        # on every request); the no-responders grace wait is bounded by it too.
        timer = loop.call_at(deadline, _expire, pending)
        try:
            await self._transport.publish(subject, data, reply=f"{self._base}.{token}")
            first = pending.future
            result = await first
            if result is _NO_RESPONDERS:
                # Believe it only if no valid reply follows (a real responder would answer).
                if pending.future is first:
                    pending.future = loop.create_future()
                grace = min(self._grace, max(0.0, deadline - loop.time()))
                done, _ = await asyncio.wait({pending.future}, timeout=grace)
                if not done:
                    if loop.time() >= deadline:
                        raise TimeoutError
                    raise NoResponders(f"no responders on {subject!r}")
                result = pending.future.result()
            return result  # type: ignore[return-value]
        except TimeoutError:
            raise RequestTimeout(f"no valid reply on {subject!r} within {timeout:g}s") from None
        finally:
            timer.cancel()
            self._pending.pop(token, None)
            future = pending.future
            if not future.cancel() and not future.cancelled():
                future.exception()  # seen: an expiry nobody awaited is not logged as lost

    async def _on_message(self, message: Message) -> None:
        pending = self._pending.get(message.subject.rsplit(".", 1)[-1])
        if pending is None or (pending.future.done() and not self._held_status(pending)):
            self.late += 1  # after the timeout or a valid reply: nothing waits for it
            return
        if not message.data and message.headers.get("Status") == NO_RESPONDERS_STATUS:
            if not pending.no_responders_seen:  # once: more of them prove nothing more
                pending.no_responders_seen = True
                pending.future.set_result(_NO_RESPONDERS)
            return
        try:
            value = pending.accept(message)
        except AgentMeshError:
            self.junk += 1  # the caller counted and audited why; keep waiting
            return
        if pending.future.done():  # holding a no-responders status: the reply wins
            pending.future = asyncio.get_running_loop().create_future()
        pending.future.set_result(value)

    @staticmethod
    def _held_status(pending: _Pending) -> bool:
        future = pending.future
        # (A future failed by its deadline holds a TimeoutError, not a status.)
        return (
            not future.cancelled()
            and future.exception() is None
            and future.result() is _NO_RESPONDERS
        )


def _expire(pending: _Pending) -> None:
    """The request's deadline: its wait ends with TimeoutError (unless it has ended)."""
    if not pending.future.done():
        pending.future.set_exception(TimeoutError())


__all__ = ["ReplyInbox"]
