"""Capability pins in KV: the first-seen fingerprint of every agent's capabilities.

Stored in ``{mesh}_registry_pins`` with create-if-absent (the first writer wins,
so every node compares against the same pin, and a restarted node remembers it);
re-approval overwrites. See :mod:`registry.pins` for the rules.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Coroutine

from pydantic import JsonValue

from agentmesh.directory.reporting import Reporter
from agentmesh.directory.watcher import WatchedBucket, bucket_name
from agentmesh.errors import KeyExists, TransportError
from agentmesh.node.addressing import MeshAddressing
from agentmesh.transport.base import KVEntry, KVOperation, Transport
from iatp.errors import AgentMeshError
from registry.card import AgentCard, canonical_json
from registry.errors import InvalidCard
from registry.pins import CapabilityDriftEvent, CapabilityPins, PinKey

Spawn = Callable[[Coroutine[object, object, None], str], None]


def pin_key(key: PinKey) -> str:
    """The KV key of a pin: ``{agent key}.{sha256(name@version)[:16]}``."""
    did, name, version = key
    digest = hashlib.sha256(f"{name}@{version}".encode()).hexdigest()[:16]
    return f"{MeshAddressing.agent_key(did)}.{digest}"


class PinStore:
    """Pins mirrored from the bucket; ``on_pin_changed(did)`` when a stored pin moved."""

    def __init__(
        self,
        transport: Transport,
        mesh: str,
        reporter: Reporter,
        spawn: Spawn,
        on_pin_changed: Callable[[str], None],
        *,
        write: bool = True,
    ) -> None:
        self.pins = CapabilityPins()
        self._write = write
        self._reporter = reporter
        self._spawn = spawn
        self._on_pin_changed = on_pin_changed
        self._bucket = WatchedBucket(transport, bucket_name(mesh, "pins"), self._on_entry)

    async def start(self, *, timeout: float) -> None:
        await self._bucket.start(timeout=timeout)

    async def aclose(self) -> None:
        await self._bucket.aclose()

    def observe(self, card: AgentCard) -> list[CapabilityDriftEvent]:
        """Pin what is new (stored in the background) and return the drifts found."""
        new, drifts = self.pins.observe(card)
        for key in new if self._write else ():
            self._spawn(self._create(key, self._record(key)), "pin")
        for drift in drifts:
            detail = f"{drift.name}@{drift.version} {drift.pinned[:12]} -> {drift.seen[:12]}"
            self._reporter.record("registry_drift", "capability_drift", card.did, detail)
        return drifts

    async def approve(self, card: AgentCard, *, timeout: float) -> None:
        """Re-pin ``card``'s descriptors here and in the store (every node follows)."""
        for key in self.pins.approve(card):
            await self._bucket.kv.put(pin_key(key), self._record(key), timeout=timeout)
        self._reporter.record("registry", "approved", card.did, "capability descriptors approved")

    def _record(self, key: PinKey) -> bytes:
        did, name, version = key
        record: dict[str, JsonValue] = {"did": did, "name": name, "version": version}
        record["fingerprint"] = self.pins.pinned(did, name, version) or ""
        return canonical_json(record)

    async def _create(self, key: PinKey, value: bytes) -> None:
        with contextlib.suppress(KeyExists, TransportError):
            await self._bucket.kv.create(pin_key(key), value)

    def _on_entry(self, item: KVEntry) -> None:
        if item.operation is KVOperation.DELETE:
            return  # a deleted pin stays pinned on the nodes that saw it
        try:
            record = json.loads(item.value)
            did, name, version = record["did"], record["name"], record["version"]
            fingerprint = record["fingerprint"]
            if pin_key((did, name, version)) != item.key or not isinstance(fingerprint, str):
                raise ValueError("pin stored under another key")
        except (ValueError, KeyError, TypeError, AgentMeshError):
            error = InvalidCard("malformed capability pin")
            self._reporter.refuse("registry_rejected", error, None, item.key)
            return
        if self.pins.pinned(did, name, version) != fingerprint:
            self.pins.pin(did, name, version, fingerprint)
            self._on_pin_changed(did)
