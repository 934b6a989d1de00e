"""The mesh's subject map: every subject and store on the broker, and who may touch it.

One table drives three things, so they cannot drift apart: the permissions in
every user JWT (:func:`permissions_for`), the buckets and streams the authority
provisions with their limits (:func:`mesh_stores`), and the table in
``docs/broker.md`` (:func:`render_subject_map`, checked by a test).

Identity kinds (:class:`Role`):

* ``authority``: the mesh authority. Everything in the mesh account, JetStream
  administration included (create, update, purge, delete).
* ``operator``: a delegated operator. Writes revocations, quarantines, pins and
  kill-switch broadcasts; otherwise an agent; no JetStream administration.
* ``coordinator``: an agent that also runs sagas (writes the saga log and its
  index, leases and active set).
* ``agent``: reads only its own subjects, writes only what it owns.
* ``observer``: reads the directory, trust, audit and saga stores; writes nothing.

``{key}`` in a pattern is the identity's own agent key (``z6Mk...``, the
multibase part of its ``did:key``); a row with ``{key}`` grants nothing under
any other agent's key. The server's rule is: a publish or subscription is
allowed when an allow pattern covers it and no deny pattern does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from agentmesh.audit.witness import stream_name as checkpoint_stream
from agentmesh.broker.jwt import SubjectRules, UserPermissions
from agentmesh.directory.directory import CARD_HISTORY
from agentmesh.directory.watcher import bucket_name
from agentmesh.node.addressing import MeshAddressing, check_name
from agentmesh.node.partitions import KINDS as PARTITIONED_KINDS
from agentmesh.saga.executor import idempotency_bucket
from agentmesh.saga.log import SagaStoreNames
from agentmesh.transport.base import StoreLimits
from agentmesh.trustnet.ledger import receipt_subjects
from agentmesh.trustnet.ledger import stream_name as receipt_stream
from agentmesh.trustnet.snapshots import DEFAULT_CHUNK_BYTES
from agentmesh.trustnet.snapshots import bucket_name as snapshot_bucket
from registry.card import MAX_CARD_BYTES

Direction = Literal["pub", "sub"]
MiB = 1024 * 1024


class Role(enum.Enum):
    """The kinds of identity the broker tells apart (see the module docstring)."""

    AUTHORITY = "authority"
    OPERATOR = "operator"
    COORDINATOR = "coordinator"
    AGENT = "agent"
    OBSERVER = "observer"


ALL = frozenset(Role)
ACTORS = frozenset({Role.OPERATOR, Role.COORDINATOR, Role.AGENT})
"""Identities that take part in the mesh's traffic (not the read-only observer)."""
READERS = frozenset(Role)


@dataclass(frozen=True, slots=True)
class StoreQuotas:
    """Sizes the authority provisions stores with (``agentmesh mesh init`` options)."""

    store_bytes: int = 256 * MiB
    receipts_per_observer: int = 200_000
    checkpoints_per_node: int = 100_000
    max_message_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class Store:
    """One KV bucket or stream of the mesh, with its limits and who reads/writes it.

    Attributes:
        name: The stream name (``KV_<bucket>`` for a bucket).
        bucket: The bucket name, for a KV bucket.
        subjects: The subjects the store captures.
        writes: (roles, pattern) pairs: who may write which of its subjects.
        readers: Roles that may read it (JetStream read API: info, consumers, gets).
        own_keys_only: Readers other than the authority read only their own keys.
    """

    name: str
    what: str
    subjects: str
    limits: StoreLimits
    writes: tuple[tuple[frozenset[Role], str], ...]
    readers: frozenset[Role]
    bucket: str | None = None
    history: int = 1
    own_keys_only: bool = False

    @property
    def is_bucket(self) -> bool:
        return self.bucket is not None


@dataclass(frozen=True, slots=True)
class Grant:
    """One row of the subject map: ``roles`` may ``direction`` on ``pattern``."""

    direction: Direction
    pattern: str
    roles: frozenset[Role]
    what: str


@dataclass(frozen=True, slots=True)
class TopicGrants:
    """Broadcast topics an identity may publish and subscribe to (from its policy)."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for topic in (*self.publish, *self.subscribe):
            check_name(topic, "topic")


@dataclass(frozen=True, slots=True)
class SubjectMap:
    """Every grant and store of one mesh (build with :func:`subject_map`)."""

    mesh: str
    grants: tuple[Grant, ...]
    stores: tuple[Store, ...] = field(default=())


def _kv(
    mesh: str,
    what: str,
    description: str,
    writes: tuple[tuple[frozenset[Role], str], ...],
    limits: StoreLimits,
    readers: frozenset[Role] = READERS,
    history: int = 1,
) -> Store:
    bucket = bucket_name(mesh, what)
    return Store(
        history=history,
        name=f"KV_{bucket}",
        what=description,
        subjects=f"$KV.{bucket}.>",
        limits=limits,
        writes=tuple((roles, f"$KV.{bucket}.{pattern}") for roles, pattern in writes),
        readers=readers,
        bucket=bucket,
    )


def mesh_stores(mesh: str, quotas: StoreQuotas = StoreQuotas()) -> tuple[Store, ...]:
    """The buckets and streams of ``mesh``, with limits and writers.

    Raises:
        ValueError: ``mesh`` is not a single name token (a secured mesh needs one).
    """
    check_single_token(mesh)
    size, card = quotas.store_bytes, StoreLimits(max_bytes=quotas.store_bytes)
    operators = frozenset({Role.OPERATOR})
    saga = SagaStoreNames.of(mesh)
    coordinators = frozenset({Role.COORDINATOR})
    coordinator_readers = frozenset({Role.COORDINATOR, Role.OBSERVER})
    idem = idempotency_bucket(mesh)
    snapshots = snapshot_bucket(mesh)
    return (
        _kv(
            mesh,
            "cards",
            "signed agent cards, one key per agent",
            ((ACTORS, "{key}"),),
            StoreLimits(max_bytes=size, max_value_size=MAX_CARD_BYTES),
            history=CARD_HISTORY,
        ),
        _kv(mesh, "pins", "capability pins (rug-pull holds)", ((operators, ">"),), card),
        _kv(
            mesh,
            "revocations",
            "signed revocations and quarantines (write-once entries)",
            ((operators, ">"),),
            StoreLimits(max_bytes=size, max_value_size=4096, write_once=True, deny_purge=True),
        ),
        _kv(
            mesh,
            "revocation_heads",
            "signed heads of each issuer's revocation log",
            ((operators, ">"),),
            StoreLimits(max_bytes=size, max_value_size=512),
            history=4,
        ),
        _kv(
            mesh,
            "rotations",
            "key rotation statements, one per retired key (write-once)",
            ((ACTORS, "{key}"),),
            StoreLimits(max_bytes=size, max_value_size=4096, write_once=True, deny_purge=True),
        ),
        _kv(
            mesh,
            "federation",
            "federation: agreements, revocation notices, partners' status lists, cards, orders",
            ((operators, ">"),),
            StoreLimits(max_bytes=size, max_value_size=256 * 1024),
        ),
        Store(
            name=receipt_stream(mesh),
            what="signed trust receipts, one subject per observer",
            subjects=receipt_subjects(mesh),
            limits=StoreLimits(
                max_bytes=size,
                max_value_size=quotas.max_message_bytes,
                per_subject_quota=quotas.receipts_per_observer,
                deny_purge=True,
            ),
            writes=((ACTORS, f"trust.{mesh}.receipt.{{key}}"),),
            readers=READERS,
        ),
        Store(
            name=f"KV_{snapshots}",
            what="signed trust snapshots: manifest and body chunks (readers check the signer)",
            subjects=f"$KV.{snapshots}.>",
            limits=StoreLimits(max_bytes=size, max_value_size=DEFAULT_CHUNK_BYTES),
            writes=((operators, f"$KV.{snapshots}.>"),),
            readers=READERS,
            bucket=snapshots,
        ),
        Store(
            name=checkpoint_stream(mesh),
            what="signed audit checkpoints, one subject per node",
            subjects=f"{mesh}.audit.checkpoint.*",
            limits=StoreLimits(
                max_bytes=size,
                max_value_size=quotas.max_message_bytes,
                per_subject_quota=quotas.checkpoints_per_node,
                deny_purge=True,
            ),
            writes=((ACTORS, f"{mesh}.audit.checkpoint.{{key}}"),),
            readers=READERS,
        ),
        Store(
            name=saga.stream,
            what="the saga log (records signed by coordinators)",
            subjects=saga.subjects,
            limits=StoreLimits(
                max_bytes=size, max_value_size=quotas.max_message_bytes, deny_purge=True
            ),
            writes=((coordinators, saga.subjects),),
            readers=coordinator_readers,
        ),
        *(
            Store(
                name=f"KV_{bucket}",
                what=what,
                subjects=f"$KV.{bucket}.>",
                limits=card,
                writes=((coordinators, f"$KV.{bucket}.>"),),
                readers=coordinator_readers,
                bucket=bucket,
            )
            for bucket, what in (
                (saga.index, "saga index (status per saga)"),
                (saga.leases, "saga leases (which coordinator drives a saga)"),
                (saga.active, "unfinished sagas"),
            )
        ),
        Store(
            name=f"KV_{idem}",
            what="agents' signed idempotency records, keys under the agent's key",
            subjects=f"$KV.{idem}.>",
            limits=StoreLimits(max_bytes=size, max_value_size=quotas.max_message_bytes),
            writes=((ACTORS, f"$KV.{idem}.{{key}}.>"),),
            readers=ACTORS | {Role.OBSERVER},
            bucket=idem,
            own_keys_only=True,
        ),
    )


def check_single_token(mesh: str) -> str:
    """``mesh`` if it is one subject token (letters, digits, ``_``, ``-``).

    Raises:
        ValueError: It has dots or other characters.
    """
    check_name(mesh, "mesh name")
    if "." in mesh:
        raise ValueError(f"mesh name {mesh!r} must be a single token (no dots) on a secured broker")
    return mesh


def subject_map(mesh: str, quotas: StoreQuotas = StoreQuotas()) -> SubjectMap:
    """Every grant of ``mesh``: core subjects, then each store's writers and readers."""
    stores = mesh_stores(mesh, quotas)
    m = mesh
    grants: list[Grant] = [
        Grant("sub", f"{m}.agent.{{key}}.>", ALL, "own inbox, handshake, session, sealed subjects"),
        Grant("sub", "_INBOX.{key}.>", ALL, "own reply inboxes and JetStream deliveries"),
        Grant("sub", f"{m}.ctl.>", ALL, "kill-switch and other control broadcasts"),
        Grant("sub", f"{m}.topic.{{topic}}", ACTORS, "topics its grant lists (--topic)"),
        Grant("pub", f"{m}.agent.*.inbox", ACTORS, "signed requests to any agent"),
        Grant("pub", f"{m}.agent.*.handshake", ACTORS, "handshakes with any agent"),
        Grant("pub", f"{m}.agent.*.session", ACTORS, "session messages to any agent"),
        Grant("pub", f"{m}.agent.*.sealed", ACTORS, "sealed (encrypted) messages to any agent"),
        *(
            Grant(
                "pub",
                f"{m}.agent.*.{kind}.*.*",
                ACTORS,
                f"{kind} frames to one member of a partitioned identity (docs/scaleout.md)",
            )
            for kind in PARTITIONED_KINDS
        ),
        Grant(
            "pub",
            f"{m}.fed.*.*.inbox",
            ACTORS,
            "signed requests to another organization's exported agents (federation)",
        ),
        Grant(
            "pub",
            f"{m}.fed.*.*.sealed",
            ACTORS,
            "sealed requests to another organization's exported agents (federation)",
        ),
        Grant("pub", "(reply subject of a received request)", ACTORS, "one reply per request"),
        Grant("pub", f"{m}.topic.{{topic}}", ACTORS, "topics its grant lists (--topic)"),
        Grant("pub", f"{m}.ctl.>", frozenset({Role.OPERATOR}), "kill-switch broadcasts"),
    ]
    for store in stores:
        for roles, pattern in store.writes:
            grants.append(Grant("pub", pattern, roles, f"write: {store.what}"))
        reads = (
            "info and direct gets of its own keys"
            if store.own_keys_only
            else "info, ephemeral consumers, direct gets"
        )
        grants.append(Grant("pub", f"$JS.API.*.{store.name} ...", store.readers, f"read: {reads}"))
    grants.append(
        Grant("pub", "$JS.API.> (create, update, purge, delete)", frozenset(), "JetStream admin")
    )
    return SubjectMap(mesh, tuple(grants), stores)


def _read_api(store: Store, key: str) -> list[str]:
    name = store.name
    if store.own_keys_only:
        return [
            f"$JS.API.STREAM.INFO.{name}",
            f"$JS.API.DIRECT.GET.{name}.$KV.{store.bucket}.{key}.>",
        ]
    return [
        f"$JS.API.STREAM.INFO.{name}",
        f"$JS.API.CONSUMER.CREATE.{name}",
        f"$JS.API.CONSUMER.INFO.{name}.*",
        f"$JS.API.DIRECT.GET.{name}",
        f"$JS.API.DIRECT.GET.{name}.>",
        f"$JS.API.STREAM.MSG.GET.{name}",
    ]


ADMIN_DENY = (
    "$JS.API.STREAM.CREATE.>",
    "$JS.API.STREAM.UPDATE.>",
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.SNAPSHOT.>",
    "$JS.API.STREAM.RESTORE.>",
    "$JS.API.CONSUMER.DELETE.>",
    "$JS.API.CONSUMER.DURABLE.CREATE.>",
    "$JS.API.ACCOUNT.PURGE.>",
    "$SYS.>",
)
"""Denied to every identity but the authority, on top of the allow lists."""


def permissions_for(
    role: Role, did: str, smap: SubjectMap, topics: TopicGrants = TopicGrants()
) -> UserPermissions:
    """The broker permissions of identity ``did`` of kind ``role`` in the mapped mesh.

    Raises:
        InvalidDID: ``did`` is not an Ed25519 did:key.
    """
    if role is Role.AUTHORITY:
        return UserPermissions(SubjectRules(allow=(">",)), SubjectRules(allow=(">",)))
    key = MeshAddressing.agent_key(did)
    publish: list[str] = []
    subscribe: list[str] = []
    for grant in smap.grants:
        if role not in grant.roles or grant.pattern.startswith(("(", "$JS.API.")):
            continue
        target = subscribe if grant.direction == "sub" else publish
        if "{topic}" in grant.pattern:
            chosen = topics.subscribe if grant.direction == "sub" else topics.publish
            target.extend(grant.pattern.replace("{topic}", topic) for topic in chosen)
        else:
            target.append(grant.pattern.replace("{key}", key))
    for store in smap.stores:
        if role in store.readers:
            publish.extend(_read_api(store, key))
    return UserPermissions(
        publish=SubjectRules(allow=tuple(dict.fromkeys(publish)), deny=ADMIN_DENY),
        subscribe=SubjectRules(allow=tuple(dict.fromkeys(subscribe)), deny=("$SYS.>",)),
        responses=1 if role in ACTORS else None,
    )


def inbox_prefix(did: str) -> str:
    """The reply-inbox prefix of ``did`` (the only ``_INBOX`` subjects it may read)."""
    return f"_INBOX.{MeshAddressing.agent_key(did)}"


def render_subject_map(smap: SubjectMap) -> str:
    """The subject map as a markdown table (``docs/broker.md`` embeds it)."""
    roles = [r for r in Role]
    header = "| direction | subject | what | " + " | ".join(r.value for r in roles) + " |"
    lines = [header, "|" + "---|" * (3 + len(roles))]
    for grant in smap.grants:
        marks = ["yes" if (r in grant.roles or r is Role.AUTHORITY) else "-" for r in roles]
        lines.append(
            f"| {grant.direction} | `{grant.pattern}` | {grant.what} | " + " | ".join(marks) + " |"
        )
    return "\n".join(lines) + "\n"


def render_stores(smap: SubjectMap) -> str:
    """The stores and their server-side limits as a markdown table."""
    lines = [
        "| store | subjects | what | limits |",
        "|---|---|---|---|",
    ]
    for store in smap.stores:
        limits = store.limits
        parts = []
        if limits.max_bytes is not None:
            parts.append(f"max {limits.max_bytes // MiB} MiB")
        if limits.max_value_size is not None:
            parts.append(f"values <= {limits.max_value_size} B")
        if limits.write_once:
            parts.append("write-once keys")
        if limits.per_subject_quota is not None:
            parts.append(f"<= {limits.per_subject_quota} per subject")
        if limits.deny_purge:
            parts.append("no purge")
        lines.append(f"| `{store.name}` | `{store.subjects}` | {store.what} | {', '.join(parts)} |")
    return "\n".join(lines) + "\n"


__all__ = [
    "ADMIN_DENY",
    "Grant",
    "Role",
    "Store",
    "StoreQuotas",
    "SubjectMap",
    "TopicGrants",
    "check_single_token",
    "inbox_prefix",
    "mesh_stores",
    "permissions_for",
    "render_stores",
    "render_subject_map",
    "subject_map",
]
