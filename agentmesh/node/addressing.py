"""The mesh's subject scheme.

::

    {mesh}.agent.{key}.inbox        signed envelopes addressed to one agent
    {mesh}.agent.{key}.handshake    the three-message IATP handshake
    {mesh}.agent.{key}.session      session frames, encrypted (after a handshake; iatp.md §15)
    {mesh}.agent.{key}.sealed       signed envelopes encrypted to the agent (iatp.md §16)
    {mesh}.topic.{name}             broadcast topics (recipient "topic:{name}")
    {mesh}.ctl.{name}               mesh-wide control (revocations, quarantine, ...)

``{key}`` is the multibase part of the agent's did:key (``z6Mk...``): it is a
single subject token, and a node only ever subscribes to its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from iatp.did import DID_KEY_PREFIX, verify_key_for_did

_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")
TOPIC_RECIPIENT_PREFIX = "topic:"


def check_name(name: str, what: str) -> str:
    if not _NAME.match(name) or len(name) > 128:
        raise ValueError(
            f"{what} {name!r} must be dot-separated tokens of letters, digits, '_' or '-'"
        )
    return name


@dataclass(frozen=True, slots=True)
class MeshAddressing:
    """Subjects of one mesh. ``mesh`` separates independent meshes on one server."""

    mesh: str = "agentmesh"

    def __post_init__(self) -> None:
        check_name(self.mesh, "mesh name")

    @staticmethod
    def agent_key(did: str) -> str:
        verify_key_for_did(did)  # validates (cached: DIDs are immutable names)
        return did[len(DID_KEY_PREFIX) :]

    def inbox(self, did: str) -> str:
        return f"{self.mesh}.agent.{self.agent_key(did)}.inbox"

    def session_inbox(self, did: str) -> str:
        return f"{self.mesh}.agent.{self.agent_key(did)}.session"

    def sealed_inbox(self, did: str) -> str:
        return f"{self.mesh}.agent.{self.agent_key(did)}.sealed"

    def handshake(self, did: str) -> str:
        return f"{self.mesh}.agent.{self.agent_key(did)}.handshake"

    def topic(self, name: str) -> str:
        return f"{self.mesh}.topic.{check_name(name, 'topic')}"

    def control(self, name: str) -> str:
        return f"{self.mesh}.ctl.{check_name(name, 'control subject')}"

    @staticmethod
    def topic_recipient(name: str) -> str:
        return TOPIC_RECIPIENT_PREFIX + name
