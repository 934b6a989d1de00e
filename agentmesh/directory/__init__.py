"""The distributed agent directory: cards, discovery, rotations and revocations.

Reads come from a local cache fed by KV watches (never from the network); every
value read from a store is verified again before it is used.
"""

from agentmesh.directory.admission import UNKNOWN_AGENT, AdmissionInterceptor
from agentmesh.directory.cache import CardCache, Rank
from agentmesh.directory.directory import DEFAULT_TTL_MS, Directory
from agentmesh.directory.events import DirectoryEvent, DirectoryEventKind, EventStream
from agentmesh.directory.membership import DirectoryMembership
from agentmesh.directory.revocations import (
    RevocationChange,
    RevocationInterceptor,
    RevocationList,
    RevocationListener,
)
from agentmesh.directory.watcher import WatchedBucket, bucket_name

__all__ = [
    "DEFAULT_TTL_MS",
    "UNKNOWN_AGENT",
    "AdmissionInterceptor",
    "CardCache",
    "Directory",
    "DirectoryEvent",
    "DirectoryEventKind",
    "DirectoryMembership",
    "EventStream",
    "Rank",
    "RevocationChange",
    "RevocationInterceptor",
    "RevocationList",
    "RevocationListener",
    "WatchedBucket",
    "bucket_name",
]
