"""Serve the dashboard app with uvicorn on the running event loop.

``async with DashboardServer(app, host="127.0.0.1", port=0) as server:`` starts
serving before it returns (``server.url`` names the bound port) and stops on exit.
Only loopback addresses are accepted unless ``allow_remote`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

from agentmesh.dashboard.errors import DashboardError, RemoteBindRefused
from agentmesh.lifecycle import Lifecycle

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, allow_remote: bool) -> None:
    """Raises: RemoteBindRefused: ``host`` is not loopback and remote use was not allowed."""
    if not allow_remote and not is_loopback(host):
        raise RemoteBindRefused(host)


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the program that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class DashboardServer(Lifecycle):
    """Serve ``app`` on ``host:port`` (``port=0``: any free port) while the context is open.

    Args:
        app: the ASGI app (:func:`~agentmesh.dashboard.app.create_app`).
        host: address to bind (loopback unless ``allow_remote``).
        port: TCP port; 0 picks a free one.
        allow_remote: allow a non-loopback ``host``.
        stop: set on exit, so that event streams end before the server waits for them.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 8787,
        allow_remote: bool = False,
        stop: asyncio.Event | None = None,
    ) -> None:
        check_bind(host, allow_remote=allow_remote)
        self.host = host
        self.stop = stop or asyncio.Event()
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            server_header=False,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self, *, timeout: float = 10.0) -> None:
        """Start serving; returns once the socket listens.

        Raises:
            DashboardError: the server did not start (port taken, address invalid).
        """
        self._task = asyncio.create_task(self._serve(), name="dashboard-http")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._server.started:
            if self._task.done() or loop.time() > deadline:
                await self.aclose()
                raise DashboardError(f"the dashboard could not listen on {self.host}:{self.port}")
            await asyncio.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def _serve(self) -> None:
        try:
            await self._server.serve()
        except SystemExit:  # uvicorn's answer to a failed bind; it would stop the whole loop
            raise DashboardError(
                f"the dashboard could not listen on {self.host}:{self.port}"
            ) from None

    async def aclose(self) -> None:
        """Stop serving (idempotent): end event streams, then close connections."""
        self.stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
        except TimeoutError:
            self._server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except DashboardError as exc:
            logger.debug("dashboard server ended: %s", exc)


__all__ = ["DashboardServer", "check_bind", "is_loopback"]
