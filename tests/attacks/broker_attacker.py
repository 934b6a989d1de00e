"""A plain nats-py client, as an attacker would hold one: no agentmesh code on its path.

It connects with whatever credentials it stole or made up, tries one thing, and
reports what the server said (``errors``) and whether it is still connected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import nats
from nats.aio.client import Client

from agentmesh.broker.nkeys import KeyRole, encode_seed
from agentmesh.broker.subject_map import inbox_prefix
from iatp.identity import AgentIdentity

T = TypeVar("T")


@dataclass
class Attacker:
    nc: Client
    errors: list[str] = field(default_factory=list)

    def refused(self) -> bool:
        """Whether the server reported a permissions violation (or closed us)."""
        return any("permissions violation" in e.lower() for e in self.errors) or self.nc.is_closed

    async def settle(self) -> None:
        """Everything sent so far reached the server and its answers arrived."""
        if self.nc.is_connected:
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)

    async def attempt(self, work: Awaitable[T], timeout: float = 1.5) -> T | None:
        """Run ``work``; a refused or unanswered request gives None instead of raising."""
        try:
            return await asyncio.wait_for(work, timeout)
        except Exception:
            return None


@contextlib.asynccontextmanager
async def attacker(
    url: str,
    *,
    identity: AgentIdentity | None = None,
    user_jwt: str | None = None,
    allow_reconnect: bool = False,
) -> AsyncIterator[Attacker]:
    """A connected raw client (with an nkey and JWT when given)."""
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error))

    options: dict[str, object] = {
        "servers": [url],
        "error_cb": on_error,
        "allow_reconnect": allow_reconnect,
        "connect_timeout": 2,
        "max_reconnect_attempts": 1,
    }
    if identity is not None:
        options["nkeys_seed_str"] = encode_seed(KeyRole.USER, identity.seed())
        options["inbox_prefix"] = inbox_prefix(identity.did)
    if user_jwt is not None:
        token = user_jwt.encode()
        options["user_jwt_cb"] = lambda: token
    nc = await nats.connect(**options)  # type: ignore[arg-type]
    try:
        yield Attacker(nc, errors)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
