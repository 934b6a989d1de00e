"""The dashboard's web app (Starlette): one page, a read-only JSON API, an event stream.

Routes:

* ``GET /`` the page; ``GET /static/*`` its script, style sheet and icon (everything
  is served from the package: no CDN, no external fetch);
* ``GET /api/state`` the current snapshot (JSON);
* ``GET /api/events`` server-sent events: a ``state`` event with the full snapshot
  whenever it changes (at most once per refresh, about every second);
* ``POST /api/operations`` a signed quarantine or release order
  (:mod:`agentmesh.dashboard.operations`); ``403`` unless the server was started
  with signed actions allowed, and for anything that is not a valid order signed
  by a mesh authority.

Every response carries a strict Content-Security-Policy (scripts, styles and
connections to this origin only) and ``no-store``. Requests whose ``Host`` is not
an allowed name are refused (``400``), which defeats DNS rebinding against a
dashboard bound to loopback; operations posted from another web origin are refused.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Protocol

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentmesh.dashboard.errors import (
    ActionsDisabled,
    CrossOriginRefused,
    OperationNotApplied,
    OperationRefused,
    OperationUnsigned,
)
from agentmesh.dashboard.operations import MAX_DOCUMENT_BYTES
from agentmesh.dashboard.snapshot import Json

STATIC = Path(__file__).with_name("static")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


class StateFeed(Protocol):
    """Where the snapshots come from (:class:`~agentmesh.dashboard.monitor.MeshMonitor`)."""

    @property
    def version(self) -> int: ...

    def snapshot(self) -> Json: ...

    async def changed(self, after: int, *, timeout: float) -> int: ...


class OperationHandler(Protocol):
    """Checks and applies signed operations (an :class:`OperationGate`)."""

    async def submit(self, body: bytes) -> dict[str, object]: ...


def host_name(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8787`` -> ``::1``), lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class GuardMiddleware:
    """Refuses unknown ``Host`` headers and adds the security headers to every response."""

    def __init__(self, app: ASGIApp, allowed_hosts: Sequence[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else frozenset(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if self.allowed is not None and host not in self.allowed:
            response = PlainTextResponse("unknown host", status_code=400)
            await response(scope, receive, self._secure(send))
            return
        await self.app(scope, receive, self._secure(send))

    @staticmethod
    def _secure(send: Send) -> Send:
        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return secured


def _refusal(exc: OperationRefused) -> JSONResponse:
    return JSONResponse({"error": exc.code, "detail": str(exc)}, status_code=403)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a browser's cross-site form or fetch (those send Origin)
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def create_app(
    feed: StateFeed,
    *,
    operations: OperationHandler | None = None,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
    stop: asyncio.Event | None = None,
    heartbeat: float = 15.0,
) -> ASGIApp:
    """The dashboard app over ``feed``.

    Args:
        feed: the snapshots.
        operations: where signed operations go; ``None`` keeps the dashboard read-only
            (every ``POST /api/operations`` is answered ``403 actions_disabled``).
        allowed_hosts: host names the page may be reached by (``None``: any, for a
            dashboard behind a proxy; see ``--allow-remote``).
        stop: set when the server shuts down: event streams end.
        heartbeat: seconds between keep-alive comments on an idle event stream.
    """
    closing = stop or asyncio.Event()

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def state(request: Request) -> Response:
        return JSONResponse(feed.snapshot())

    async def events(request: Request) -> Response:
        # The response watches for the client leaving and cancels this generator.
        async def stream() -> AsyncIterator[ServerSentEvent]:
            version = -1
            while not closing.is_set():
                if feed.version != version:
                    version = feed.version
                    yield ServerSentEvent(
                        data=json.dumps(feed.snapshot(), separators=(",", ":")),
                        event="state",
                        id=str(version),
                    )
                await feed.changed(version, timeout=1.0)

        return EventSourceResponse(stream(), ping=heartbeat, send_timeout=10.0)

    async def operation(request: Request) -> Response:
        try:
            if operations is None:
                raise ActionsDisabled(
                    "this dashboard is read-only (start it with --allow-signed-actions)"
                )
            if not _same_origin(request):
                raise CrossOriginRefused("operations are only taken from this page's origin")
            if request.headers.get("content-type", "").split(";")[0].strip() != (
                "application/json"
            ):
                raise OperationUnsigned("send the signed operation document as application/json")
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise OperationUnsigned("the document is too large")
            result = await operations.submit(body)
        except OperationRefused as exc:
            return _refusal(exc)
        except OperationNotApplied as exc:
            return JSONResponse({"error": exc.code, "detail": str(exc)}, status_code=503)
        return JSONResponse(result)

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Route("/api/state", state, methods=["GET"]),
            Route("/api/events", events, methods=["GET"]),
            Route("/api/operations", operation, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ]
    )
    return GuardMiddleware(app, allowed_hosts)


__all__ = [
    "CSP",
    "LOOPBACK_HOSTS",
    "GuardMiddleware",
    "OperationHandler",
    "StateFeed",
    "create_app",
    "host_name",
]
