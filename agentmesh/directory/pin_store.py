"""Capability pins in KV: the first-seen fingerprint of every agent's capabilities.

Every node pins what it sees first, locally. Pins in ``{mesh}_registry_pins`` are
shared by every node (so all compare against the same pin, and a restarted or
new node remembers it) but count only if signed by a pin authority of the mesh
(:mod:`registry.pin_record`): one unsigned or foreign write must not hold an
honest agent out of discovery, nor lift a hold. A node whose identity is a pin
authority (``signer``) stores first-seen pins with create-if-absent and signs
approvals, which overwrite. See :mod:`registry.pins` for the drift rules.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Coroutine

from agentmesh.directory.reporting import Reporter
from agentmesh.directory.watcher import WatchedBucket, bucket_name
from agentmesh.errors import KeyExists, TransportError
from agentmesh.node.addressing import MeshAddressing
from agentmesh.transport.base import KVEntry, KVOperation, Transport
from iatp.clock import Clock, SystemClock
from iatp.errors import AgentMeshError
from iatp.identity import AgentIdentity
from registry.card import AgentCard
from registry.errors import CardError, InvalidCard, PinNotAuthorized
from registry.pin_record import decode_pin, sign_pin
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
        signer: AgentIdentity | None = None,
        authorities: frozenset[str] = frozenset(),
        clock: Clock | None = None,
    ) -> None:
        self.pins = CapabilityPins()
        self._signer = signer
        self._authorities = authorities | ({signer.did} if signer is not None else set())
        self._clock: Clock = clock or SystemClock()
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
        for key in new if self._signer is not None else ():
            self._spawn(self._create(key, self._record(key)), "pin")
        for drift in drifts:
            detail = f"{drift.name}@{drift.version} {drift.pinned[:12]} -> {drift.seen[:12]}"
            self._reporter.record("registry_drift", "capability_drift", card.did, detail)
        return drifts

    async def approve(self, card: AgentCard, *, timeout: float) -> None:
        """Re-pin ``card``'s descriptors here and, signed, in the store (every node follows).

        Raises:
            PinNotAuthorized: this store has no pin authority's identity to sign with.
        """
        if self._signer is None:
            raise PinNotAuthorized(
                "approving needs a pin authority's identity (the mesh authority's)", did=card.did
            )
        for key in self.pins.approve(card):
            await self._bucket.kv.put(pin_key(key), self._record(key), timeout=timeout)
        self._reporter.record("registry", "approved", card.did, "capability descriptors approved")

    def _record(self, key: PinKey) -> bytes:
        assert self._signer is not None
        did, name, version = key
        return sign_pin(
            self._signer,
            did=did,
            name=name,
            version=version,
            fingerprint=self.pins.pinned(did, name, version) or "",
            issued_at_ms=self._clock.now_ms(),
        ).encode()

    async def _create(self, key: PinKey, value: bytes) -> None:
        with contextlib.suppress(KeyExists, TransportError):
            await self._bucket.kv.create(pin_key(key), value)

    def _on_entry(self, item: KVEntry) -> None:
        if item.operation is KVOperation.DELETE:
            return  # a deleted pin stays pinned on the nodes that saw it
        try:
            record = decode_pin(item.value, authorities=self._authorities)
            if pin_key((record.did, record.name, record.version)) != item.key:
                raise InvalidCard("pin stored under another key", did=record.did)
        except CardError as exc:
            self._reporter.refuse("registry_rejected", exc, exc.did, item.key)
            return
        except AgentMeshError:  # a malformed DID inside a well-formed record
            self._reporter.refuse(
                "registry_rejected", InvalidCard("malformed capability pin"), None, item.key
            )
            return
        did, name, version = record.did, record.name, record.version
        if self.pins.pinned(did, name, version) != record.fingerprint:
            self.pins.pin(did, name, version, record.fingerprint)
            self._on_pin_changed(did)
