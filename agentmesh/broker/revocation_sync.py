"""Revocation at the broker: the account JWT follows the mesh's revocation list.

The mesh's revocation list (signed entries in KV, :mod:`agentmesh.directory`) is
the source of truth; every node already refuses a revoked or quarantined agent.
:class:`BrokerRevoker` makes the broker refuse it too: it re-issues the mesh
account's JWT with a ``revocations`` entry for each blocked agent's user key and
pushes it to ``$SYS.REQ.CLAIMS.UPDATE``. nats-server then closes that agent's
connections at once and refuses its JWT (every JWT issued at or before the
revocation time) until a release removes the entry. The account JWT is a pure
function of the list, so any authority process can rebuild and re-push it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from agentmesh.broker.authority import MeshAuthority
from agentmesh.broker.errors import ClaimsUpdateFailed
from agentmesh.broker.nkeys import user_nkey_for_did
from agentmesh.directory.revocations import RevocationChange, RevocationList
from agentmesh.errors import TransportError
from agentmesh.transport.base import Transport
from registry.revocation import BLOCKING_KINDS

logger = logging.getLogger(__name__)

CLAIMS_UPDATE_SUBJECT = "$SYS.REQ.CLAIMS.UPDATE"


def broker_revocations(revocations: RevocationList, *, now: float | None = None) -> dict[str, int]:
    """User nkey -> revocation time (unix seconds) for every blocked agent.

    The time is the newest blocking entry's, never in the future (the server
    disconnects a user only once the time has come).
    """
    limit = int(time.time() if now is None else now)
    out: dict[str, int] = {}
    for did, status in revocations.listed().items():
        if status not in BLOCKING_KINDS:
            continue
        newest = max(
            (e.issued_at_ms for e in revocations.entries(did) if e.kind is status), default=None
        )
        at = limit if newest is None else min(newest // 1000, limit)
        out[user_nkey_for_did(did)] = at
    return out


async def push_account_jwt(system: Transport, account_jwt: str, *, timeout: float = 2.0) -> None:
    """Hand an account JWT to the server's resolver.

    Raises:
        ClaimsUpdateFailed: The server answered with an error (or not as expected).
        TransportError: No answer.
    """
    reply = await system.request(CLAIMS_UPDATE_SUBJECT, account_jwt.encode(), timeout=timeout)
    try:
        answer = json.loads(reply.data)
    except ValueError:
        raise ClaimsUpdateFailed(f"unreadable answer: {reply.data[:200]!r}") from None
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict) or data.get("code") != 200:
        raise ClaimsUpdateFailed(f"the server refused the account JWT: {answer}")


class BrokerRevoker:
    """Keeps the broker's revocations equal to the revocation list's blocked agents.

    Args:
        authority: The mesh authority's broker powers (signs the account JWT).
        system: A transport connected to the system account as the authority.
        revocations: The started revocation list to follow.
        on_push: Called with the pushed revocations (user nkey -> time) after each push.
    """

    def __init__(
        self,
        authority: MeshAuthority,
        system: Transport,
        revocations: RevocationList,
        *,
        on_push: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self.authority = authority
        self.system = system
        self.revocations = revocations
        self.pushed: dict[str, int] | None = None
        self.pushes = 0
        self.failures = 0
        self._on_push = on_push
        self._changed = asyncio.Event()
        revocations.add_listener(self._on_change)

    def _on_change(self, change: RevocationChange) -> None:
        self._changed.set()

    async def sync(self, *, force: bool = False, timeout: float = 2.0) -> bool:
        """Push a new account JWT if the blocked set changed (or ``force``); True if pushed.

        Raises:
            ClaimsUpdateFailed: The server refused the update.
            TransportError: The server did not answer.
        """
        wanted = broker_revocations(self.revocations)
        if wanted == self.pushed and not force:
            return False
        await push_account_jwt(self.system, self.authority.account_jwt(wanted), timeout=timeout)
        self.pushed = wanted
        self.pushes += 1
        if self._on_push is not None:
            self._on_push(wanted)
        logger.info("broker revocations now cover %d agent(s)", len(wanted))
        return True

    async def run(self, *, resync_every: float = 30.0) -> None:
        """Sync on every change of the list, and re-push every ``resync_every`` seconds.

        The periodic push repairs a server that restarted from an older account JWT.
        Runs until cancelled; a failed push is logged and retried.
        """
        force = True
        while True:
            self._changed.clear()
            try:
                await self.sync(force=force)
                force = False
            except (ClaimsUpdateFailed, TransportError) as exc:
                self.failures += 1
                logger.warning("broker revocation push failed (retrying): %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 1.0)
                continue
            try:
                await asyncio.wait_for(self._changed.wait(), resync_every)
            except TimeoutError:
                force = True


__all__ = ["CLAIMS_UPDATE_SUBJECT", "BrokerRevoker", "broker_revocations", "push_account_jwt"]
