"""The steward as a process (``agentmesh federation steward``): connect, publish, courier.

Connects to the organization's own server as its authority, publishes the
organization's agreements, revocation notices and status list from the mesh
directory into the federation bucket, then runs a :class:`FederationSteward`
(see :mod:`agentmesh.federation.steward`) until ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from agentmesh.broker.session import authority_session
from agentmesh.directory.directory import Directory
from agentmesh.federation.operations import publish_federation
from agentmesh.federation.orgdir import OrgDirectory
from agentmesh.federation.runtime import NodeFederation
from agentmesh.federation.steward import FederationSteward
from agentmesh.federation.store import federation_bucket
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from iatp.identity import AgentIdentity

Emit = Callable[..., None]


async def run_steward(
    mesh_directory: str | Path,
    authority: AgentIdentity,
    *,
    url: str | None = None,
    stop: asyncio.Event,
    emit: Emit,
    resync_every: float = 10.0,
    report_every: float = 5.0,
) -> None:
    """Run the steward of the mesh in ``mesh_directory`` until ``stop`` is set."""
    org = OrgDirectory(mesh_directory)
    async with authority_session(mesh_directory, authority, url=url) as session:
        mesh = session.powers.config.mesh
        transport = session.mesh
        written = await publish_federation(transport, mesh, org)
        emit("published", mesh=mesh, values=written)
        directory = Directory(transport, mesh=mesh, node=authority.did)
        revocations = session.revocation_list()
        await revocations.start(require_complete=False)
        await directory.start()
        node = MeshNode(authority, transport, config=NodeConfig(mesh=mesh))
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(revocations.aclose)
            stack.push_async_callback(directory.aclose)
            federation = await stack.enter_async_context(
                NodeFederation(
                    transport, authority, mesh=mesh, organization=authority.did, directory=directory
                )
            )
            federation.install(node)

            def card(did: str) -> bytes | None:
                found = directory.lookup(did)
                return None if found is None else found.encode()

            steward = FederationSteward(
                node,
                federation,
                await transport.key_value(federation_bucket(mesh)),
                revocations,
                memberships=org.memberships,
                cards=card,
                resync_every=resync_every,
            )
            await stack.enter_async_context(node)
            await stack.enter_async_context(steward)
            emit(
                "steward",
                mesh=mesh,
                partners=[p.theirs.org for p in federation.view.partnerships()],
            )
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), report_every)
                emit(
                    "stats",
                    shipped=steward.shipped,
                    stored=steward.stored,
                    refused=dict(steward.refused),
                    partners=[p.theirs.org for p in federation.view.partnerships()],
                )


__all__ = ["run_steward"]
