"""The durable saga log: a stream of records, an index and ownership leases.

Three pieces, all through the transport seam (JetStream on NATS, the embedded
stream and KV otherwise):

* stream ``SAGA-<mesh>``, subject ``saga.<mesh>.log.<saga id>``: every record, in
  order, de-duplicated by ``<saga id>.<record number>`` (the fencing rule: a number
  is stored once; a replica whose append comes back ``duplicate`` lost the race);
* KV ``saga-index-<mesh>``: per saga its name, definition, status and the stream
  sequence of its last status change (for ``agentmesh saga list`` and recovery);
* KV ``saga-lease-<mesh>``: which coordinator replica drives the saga, until when;
* KV ``saga-active-<mesh>``: one empty key per saga that has not ended, so the
  recovery scan costs one ``keys()`` however many sagas have finished.

A replica that takes a saga over first appends a ``saga.resumed`` marker and reads
the saga's records up to that marker's sequence, so it never misses a record that
an earlier owner wrote just before it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from agentmesh.errors import KeyExists, KeyNotFound, RevisionMismatch
from agentmesh.saga.definition import SagaDefinition, validate_token
from agentmesh.saga.errors import SagaLogCorrupt, SagaNotFound, SagaOwnershipLost
from agentmesh.saga.records import (
    RecordKind,
    SagaRecord,
    open_record,
    pack,
    seal_record,
    unpack,
)
from agentmesh.saga.state import SagaState, SagaStatus
from agentmesh.transport.base import KeyValue, Stream, Transport
from iatp.clock import Clock, SystemClock
from iatp.identity import AgentIdentity

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SagaStoreNames:
    """Names of a mesh's saga stream and buckets (coordinators write them)."""

    stream: str
    subjects: str
    index: str
    leases: str
    active: str

    @classmethod
    def of(cls, mesh: str) -> SagaStoreNames:
        return cls(
            stream=f"SAGA-{mesh}",
            subjects=f"saga.{mesh}.log.>",
            index=f"saga-index-{mesh}",
            leases=f"saga-lease-{mesh}",
            active=f"saga-active-{mesh}",
        )


@dataclass(frozen=True, slots=True)
class SagaIndexEntry:
    """A saga as the index knows it (a cache of the log's status changes)."""

    saga_id: str
    name: str
    status: str
    definition: dict[str, Any]
    last_seq: int
    updated_ms: int
    coordinator: str


@dataclass(frozen=True, slots=True)
class Lease:
    """Ownership of one saga until ``expires_ms``.

    ``fresh``: the lease key was created by this acquisition, so no replica has
    ever driven the saga (every record is written under a lease): its log is empty.
    """

    saga_id: str
    owner: str
    revision: int
    expires_ms: int
    fresh: bool = False


class SagaLog:
    """Append, read, index and lease sagas of one mesh. Build with :meth:`open`."""

    def __init__(
        self,
        stream: Stream,
        index: KeyValue,
        leases: KeyValue,
        active: KeyValue,
        *,
        mesh: str,
        clock: Clock | None = None,
        trusted: frozenset[str] | None = None,
    ) -> None:
        self.stream = stream
        self.index = index
        self.leases = leases
        self.active = active
        self.mesh = mesh
        self.clock: Clock = clock or SystemClock()
        self.trusted = trusted
        self.rejected_records = 0

    @classmethod
    async def open(
        cls,
        transport: Transport,
        *,
        mesh: str = "agentmesh",
        clock: Clock | None = None,
        trusted: frozenset[str] | None = None,
    ) -> SagaLog:
        """Create-or-bind the saga stream and buckets of ``mesh`` on ``transport``.

        ``trusted``: coordinator DIDs whose records this log accepts (``None``: any
        valid signature).

        Raises:
            SagaDefinitionError: ``mesh`` is not a name token.
            TransportError: the stream or a bucket could not be created.
        """
        validate_token(mesh, what="mesh name")
        names = SagaStoreNames.of(mesh)
        stream = await transport.stream(names.stream, [names.subjects])
        index = await transport.key_value(names.index)
        leases = await transport.key_value(names.leases)
        active = await transport.key_value(names.active)
        return cls(stream, index, leases, active, mesh=mesh, clock=clock, trusted=trusted)

    def subject(self, saga_id: str) -> str:
        return f"saga.{self.mesh}.log.{saga_id}"

    # -- records -----------------------------------------------------------------------------

    async def append(
        self, record: SagaRecord, identity: AgentIdentity, *, timeout: float = 5.0
    ) -> int:
        """Sign ``record`` with ``identity`` (its coordinator) and store it; returns its sequence.

        Raises:
            SagaOwnershipLost: that record number is stored already (another replica).
            TransportError: the stream did not acknowledge.
        """
        ack = await self.stream.append(
            self.subject(record.saga_id),
            seal_record(record, identity),
            msg_id=record.msg_id,
            timeout=timeout,
        )
        if ack.duplicate:
            raise SagaOwnershipLost(
                f"record {record.number} of {record.saga_id} was written by another replica",
                saga_id=record.saga_id,
            )
        return ack.seq

    async def mark_resumed(
        self, saga_id: str, identity: AgentIdentity, *, timeout: float = 5.0
    ) -> int:
        """Append a signed ``saga.resumed`` marker; returns its sequence (a read barrier)."""
        marker = SagaRecord(saga_id, 0, RecordKind.SAGA_RESUMED, self.clock.now_ms(), identity.did)
        ack = await self.stream.append(
            self.subject(saga_id), seal_record(marker, identity), timeout=timeout
        )
        return ack.seq

    async def read(
        self,
        saga_id: str,
        *,
        until_seq: int | None = None,
        idle: float = 0.25,
        timeout: float = 10.0,
    ) -> list[SagaRecord]:
        """The saga's records in stream order.

        Reads at least up to ``until_seq``; then keeps reading while records arrive
        within ``idle`` seconds (``idle=0`` stops right at ``until_seq``).

        Records that fail to open (forged, damaged, untrusted signer) are skipped
        and counted in ``rejected_records``: an injected record cannot stall a saga.

        Raises:
            SagaLogCorrupt: ``until_seq`` was not reached within ``timeout``.
        """
        validate_token(saga_id, what="saga id")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reached = not until_seq
        records: list[SagaRecord] = []
        reader = self.stream.read(subject=self.subject(saga_id))
        try:
            while True:
                wait = idle if reached else deadline - loop.time()
                if reached and idle <= 0:
                    break
                if wait <= 0:
                    raise SagaLogCorrupt(
                        f"the log of {saga_id} ends before seq {until_seq}", saga_id=saga_id
                    )
                try:
                    message = await asyncio.wait_for(anext(reader), wait)
                except TimeoutError:
                    if reached:
                        break
                    continue
                except StopAsyncIteration:
                    break
                try:
                    records.append(open_record(message.data, seq=message.seq, trusted=self.trusted))
                except SagaLogCorrupt as exc:  # forged or damaged: never applied
                    self.rejected_records += 1
                    logger.warning("saga log %s: skipped a record: %s", saga_id, exc)
                if until_seq and message.seq >= until_seq:
                    reached = True
        finally:
            with contextlib.suppress(Exception):
                await reader.aclose()
        return records

    async def load(self, saga_id: str, *, timeout: float = 10.0) -> SagaState:
        """Read-only view of a saga (for the CLI and tests).

        Raises:
            SagaNotFound: no such saga.
            SagaLogCorrupt, IllegalTransition: the log is damaged.
        """
        entry = await self.entry(saga_id)
        records = await self.read(saga_id, until_seq=entry.last_seq, timeout=timeout)
        return SagaState.fold(saga_id, records)

    # -- index -------------------------------------------------------------------------------

    async def register(self, saga_id: str, definition: SagaDefinition, coordinator: str) -> bool:
        """Put the saga in the index before anything is logged; False when it exists."""
        validate_token(saga_id, what="saga id")
        entry = SagaIndexEntry(
            saga_id,
            definition.name,
            SagaStatus.RUNNING.value,
            definition.model_dump(mode="json"),
            0,
            self.clock.now_ms(),
            coordinator,
        )
        try:
            await self.index.create(saga_id, _pack_entry(entry))
        except KeyExists:
            if not SagaStatus.terminal_value((await self.entry(saga_id)).status):
                await self._mark_active(saga_id)
            return False
        await self._mark_active(saga_id)
        return True

    async def _mark_active(self, saga_id: str) -> None:
        with contextlib.suppress(KeyExists):
            await self.active.create(saga_id, b"")

    async def entry(self, saga_id: str) -> SagaIndexEntry:
        """Raises: SagaNotFound, SagaLogCorrupt."""
        validate_token(saga_id, what="saga id")
        try:
            found = await self.index.get(saga_id)
        except KeyNotFound:
            raise SagaNotFound(
                f"no saga {saga_id!r} in mesh {self.mesh!r}", saga_id=saga_id
            ) from None
        return _unpack_entry(saga_id, found.value)

    async def record_status(self, state: SagaState, last_seq: int, coordinator: str) -> None:
        """Update the index after a status change (best effort: the log is the truth)."""
        assert state.definition is not None
        entry = SagaIndexEntry(
            state.saga_id,
            state.definition.name,
            state.status.value,
            state.definition.model_dump(mode="json"),
            last_seq,
            self.clock.now_ms(),
            coordinator,
        )
        try:
            await self.index.put(state.saga_id, _pack_entry(entry))
            if state.status.terminal:
                await self.active.delete(state.saga_id)
        except Exception:
            logger.warning("saga index update failed for %s", state.saga_id, exc_info=True)

    async def entries(self) -> list[SagaIndexEntry]:
        """Every saga of the mesh, sorted by id."""
        result = []
        for key in await self.index.keys():
            with contextlib.suppress(KeyNotFound):
                result.append(_unpack_entry(key, (await self.index.get(key)).value))
        return result

    async def unfinished(self) -> list[str]:
        """Ids of sagas that have not ended (one read of the small ``active`` bucket)."""
        return await self.active.keys()

    # -- leases ------------------------------------------------------------------------------

    async def acquire(self, saga_id: str, owner: str, *, ttl: float) -> Lease | None:
        """Take the saga's lease if it is free, expired or already ours; else None."""
        now = self.clock.now_ms()
        expires = now + int(ttl * 1000)
        value = pack({"owner": owner, "expires_ms": expires})
        try:
            revision = await self.leases.create(saga_id, value)
            return Lease(saga_id, owner, revision, expires, fresh=True)
        except KeyExists:
            pass
        try:
            current = await self.leases.get(saga_id)
        except KeyNotFound:
            return None  # deleted just now: the next round will create it
        held = unpack(current.value)
        if held["owner"] != owner and held["expires_ms"] > now:
            return None
        try:
            revision = await self.leases.update(saga_id, value, last_revision=current.revision)
        except RevisionMismatch:
            return None
        return Lease(saga_id, owner, revision, expires)

    async def renew(self, lease: Lease, *, ttl: float) -> Lease:
        """Raises: SagaOwnershipLost: someone else holds the lease now."""
        expires = self.clock.now_ms() + int(ttl * 1000)
        try:
            revision = await self.leases.update(
                lease.saga_id,
                pack({"owner": lease.owner, "expires_ms": expires}),
                last_revision=lease.revision,
            )
        except (RevisionMismatch, KeyNotFound) as exc:
            raise SagaOwnershipLost(
                f"lease of {lease.saga_id} was taken over", saga_id=lease.saga_id
            ) from exc
        return Lease(lease.saga_id, lease.owner, revision, expires)

    async def release(self, lease: Lease) -> None:
        """Expire the lease now so another replica need not wait (best effort)."""
        with contextlib.suppress(Exception):
            await self.leases.update(
                lease.saga_id,
                pack({"owner": lease.owner, "expires_ms": 0}),
                last_revision=lease.revision,
            )


def _pack_entry(entry: SagaIndexEntry) -> bytes:
    return pack(
        {
            "name": entry.name,
            "status": entry.status,
            "definition": entry.definition,
            "last_seq": entry.last_seq,
            "updated_ms": entry.updated_ms,
            "coordinator": entry.coordinator,
        }
    )


def _unpack_entry(saga_id: str, data: bytes) -> SagaIndexEntry:
    try:
        raw = unpack(data)
        return SagaIndexEntry(
            saga_id,
            str(raw["name"]),
            str(raw["status"]),
            dict(raw["definition"]),
            int(raw["last_seq"]),
            int(raw["updated_ms"]),
            str(raw["coordinator"]),
        )
    except Exception as exc:
        raise SagaLogCorrupt(
            f"index entry of {saga_id} is damaged: {exc}", saga_id=saga_id
        ) from exc


__all__ = ["Lease", "SagaIndexEntry", "SagaLog"]
