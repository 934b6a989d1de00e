"""A node's trust service: engine, ledger, live fold and periodic recompute."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from agentmesh.audit import AuditSink
from agentmesh.errors import NodeStateError
from agentmesh.transport.base import Transport
from agentmesh.trustnet.interceptor import ReceiptInterceptor
from agentmesh.trustnet.ledger import ReceiptLedger
from iatp.clock import Clock, SystemClock
from iatp.identity import AgentIdentity
from trust.config import TrustConfig
from trust.engine import TrustEngine

logger = logging.getLogger(__name__)


class MeshTrust:
    """``async with MeshTrust(transport, identity, pre_trusted=...) as trust:``.

    On start it binds the receipt stream, folds everything already stored (a late
    joiner catches up here), then follows new receipts. Recomputes happen every
    ``recompute_interval`` seconds of wall-clock time (fresh decay, but each node at
    its own moments) and/or every ``recompute_every`` folded receipts (deterministic:
    every node passes through the same engine states; see :class:`ReceiptLedger`).
    ``trust.engine`` answers ``score``/``ring``; ``trust.interceptor`` turns this
    node's handled messages into receipts
    (``node.add_interceptor(trust.interceptor, stage=Stage.TRUST)``).
    """

    def __init__(
        self,
        transport: Transport,
        identity: AgentIdentity,
        *,
        mesh: str = "agentmesh",
        pre_trusted: Iterable[str] = (),
        config: TrustConfig | None = None,
        clock: Clock | None = None,
        audit: AuditSink | None = None,
        recompute_interval: float | None = 5.0,
        recompute_every: int | None = None,
        catch_up_timeout: float = 30.0,
        engine: TrustEngine | None = None,
    ) -> None:
        self.transport = transport
        self.identity = identity
        self.mesh = mesh
        self.clock: Clock = clock or SystemClock()
        # ``engine``: one made beforehand (e.g. already handed to a ring enforcer);
        # then ``pre_trusted`` and ``config`` are the engine's own.
        # Not ``engine or ...``: an engine with no evidence yet has len() 0, so it is falsy.
        self.engine = (
            engine
            if engine is not None
            else TrustEngine(pre_trusted=pre_trusted, clock=self.clock, config=config)
        )
        self._audit = audit
        self.recompute_interval = recompute_interval
        self.recompute_every = recompute_every
        self.catch_up_timeout = catch_up_timeout
        self._ledger: ReceiptLedger | None = None
        self._interceptor: ReceiptInterceptor | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ledger(self) -> ReceiptLedger:
        if self._ledger is None:
            raise NodeStateError("MeshTrust is not started")
        return self._ledger

    @property
    def interceptor(self) -> ReceiptInterceptor:
        if self._interceptor is None:
            raise NodeStateError("MeshTrust is not started")
        return self._interceptor

    async def start(self) -> None:
        """Bind the stream, catch up, recompute and start following.

        Raises:
            TransportError: the stream could not be bound or read.
            TimeoutError: catching up took longer than ``catch_up_timeout``.
        """
        self._ledger = await ReceiptLedger.open(
            self.transport,
            self.engine,
            mesh=self.mesh,
            node=self.identity.did,
            audit=self._audit,
            clock=self.clock,
            recompute_every=self.recompute_every,
        )
        self._interceptor = ReceiptInterceptor(
            self.identity, self._ledger, clock=self.clock, background=True
        )
        await self._ledger.catch_up(timeout=self.catch_up_timeout)
        self._tasks = [
            asyncio.create_task(self._ledger.follow(), name="trust-follow"),
            asyncio.create_task(self._interceptor.run(), name="trust-publish"),
        ]
        if self.recompute_interval is not None:
            self.engine.recompute()
            self._tasks.append(asyncio.create_task(self._recompute_loop(), name="trust-recompute"))

    async def _recompute_loop(self) -> None:
        interval = self.recompute_interval or 5.0
        while True:
            await asyncio.sleep(interval)
            self.engine.recompute()

    async def aclose(self) -> None:
        """Publish what is queued (best effort), stop following and recomputing (idempotent)."""
        if self._interceptor is not None and self._tasks:
            try:
                await self._interceptor.flush(timeout=2.0)
            except TimeoutError:
                logger.warning("trust: receipts still queued at close")
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._ledger is not None:
            await self._ledger.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
