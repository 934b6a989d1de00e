"""Create a secured mesh's buckets and streams, with their limits, as the authority.

On a secured broker only the authority may create, update or purge JetStream
stores, so it creates them all once (``agentmesh mesh provision``) and every node
binds to them. An existing store keeps its configuration (provisioning twice
changes nothing).
"""

from __future__ import annotations

from agentmesh.broker.subject_map import Store, SubjectMap
from agentmesh.transport.base import Transport


async def provision(transport: Transport, smap: SubjectMap) -> list[Store]:
    """Create-or-bind every store of ``smap`` on ``transport`` (connected as the authority).

    Raises:
        PermissionDenied: ``transport`` is not the authority's.
        TransportError: The server refused a store (e.g. the account's storage limit).
    """
    for store in smap.stores:
        if store.bucket is not None:
            await transport.key_value(store.bucket, history=store.history, limits=store.limits)
        else:
            await transport.stream(store.name, [store.subjects], limits=store.limits)
    return list(smap.stores)


__all__ = ["provision"]
