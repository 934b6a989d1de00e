"""How AutoGen messages travel in IATP envelopes: names, signed headers, bodies. Pure.

An AutoGen message becomes one signed envelope::

    type     "autogen.<TypeName>"          the policy's action (rings hold it as a capability)
    headers  ag_kind      "send" | "publish"
             ag_msg       AutoGen's message id
             ag_sender    "type/key" of the sending agent (absent: sent from outside any agent)
             ag_recipient "type/key" (send only)
             ag_topic     "type/source" (publish only)
             ag_primary   the DID that should act on a publish to an agent type's own topic
    body     msgpack [type_name, data_content_type, payload]   (payload: AutoGen's serializer)

The headers are inside the signature, so who sent what to whom cannot be changed
in transit; the receiver checks that the signer hosts the claimed sender
(:class:`~agentmesh.integrations.autogen.routing.SenderBinding`). Direct messages
go to the recipient host's inbox; publishes are signed broadcasts on one mesh topic
per runtime channel (default ``autogen``), so one subscription carries every
topic of a team and the order a publisher sent in is the order every receiver
sees (nats-py runs each subscription in its own task: two subjects could swap).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import msgpack
from autogen_core import AgentId, TopicId

from agentmesh.integrations.autogen.errors import WireError

MESSAGE_PREFIX = "autogen."
DONE_TYPE = "autogen.~done"
"""One-way control message: the primary host finished a publish it was asked to act on
(``~`` is in no class or protobuf name, so no message type can collide with it)."""
CAPABILITY_PREFIX = "autogen."
MAX_TYPE_NAME = 100
MAX_HEADER = 1024
MAX_BODY_FIELDS = 3
NONE_TYPE = "agentmesh.none"
"""Type name of an empty (``None``) response."""

Kind = Literal["send", "publish"]


def capability_for(agent_type: str) -> str:
    """The directory capability a host of ``agent_type`` offers (card names are ``[a-z0-9_.-]``).

    The readable agent type is the capability's description; the name is a digest so
    that any AutoGen type (``Coder_3f2a...``, dots, capitals) fits the card format.
    """
    return CAPABILITY_PREFIX + hashlib.sha256(agent_type.encode()).hexdigest()[:40]


def envelope_type(type_name: str) -> str:
    """The envelope type (and policy action) of a message of AutoGen type ``type_name``."""
    if not type_name or len(type_name) > MAX_TYPE_NAME:
        raise WireError(f"message type name must be 1..{MAX_TYPE_NAME} characters")
    return MESSAGE_PREFIX + type_name


@dataclass(frozen=True, slots=True)
class Routing:
    """The signed routing headers of one AutoGen message."""

    kind: Kind
    message_id: str
    sender: AgentId | None = None
    recipient: AgentId | None = None
    topic: TopicId | None = None
    primary: str | None = None

    def headers(self) -> dict[str, str]:
        out = {"ag_kind": self.kind, "ag_msg": self.message_id}
        if self.sender is not None:
            out["ag_sender"] = str(self.sender)
        if self.recipient is not None:
            out["ag_recipient"] = str(self.recipient)
        if self.topic is not None:
            out["ag_topic"] = str(self.topic)
        if self.primary is not None:
            out["ag_primary"] = self.primary
        for name, value in out.items():
            if len(value) > MAX_HEADER:
                raise WireError(f"{name} is longer than {MAX_HEADER} characters")
        return out


def parse_routing(headers: tuple[tuple[str, str], ...]) -> Routing:
    """Read and validate the routing headers of an inbound envelope.

    Raises:
        WireError: a header is missing, unknown in this combination, or malformed.
    """
    fields = dict(headers)
    kind = fields.get("ag_kind")
    message_id = fields.get("ag_msg")
    if kind not in ("send", "publish") or not message_id:
        raise WireError("ag_kind must be send or publish, and ag_msg is required")
    sender = _agent_id(fields.get("ag_sender"), "ag_sender")
    if kind == "send":
        recipient = _agent_id(fields.get("ag_recipient"), "ag_recipient")
        if recipient is None or "ag_topic" in fields or "ag_primary" in fields:
            raise WireError("a send names ag_recipient and no topic")
        return Routing("send", message_id, sender, recipient=recipient)
    topic_text = fields.get("ag_topic")
    if topic_text is None or "ag_recipient" in fields:
        raise WireError("a publish names ag_topic and no recipient")
    try:
        topic = TopicId.from_str(topic_text)
    except ValueError:
        raise WireError(f"malformed ag_topic {topic_text[:80]!r}") from None
    return Routing("publish", message_id, sender, topic=topic, primary=fields.get("ag_primary"))


def _agent_id(text: str | None, name: str) -> AgentId | None:
    if text is None:
        return None
    try:
        return AgentId.from_str(text)
    except ValueError:
        raise WireError(f"malformed {name} {text[:80]!r}") from None


def pack_body(type_name: str, content_type: str, payload: bytes) -> bytes:
    return msgpack.packb([type_name, content_type, payload], use_bin_type=True)


def unpack_body(body: bytes) -> tuple[str, str, bytes]:
    """``(type_name, data_content_type, payload)`` of an envelope body.

    Raises:
        WireError: not the three-field msgpack array of strings and bytes.
    """
    try:
        fields = msgpack.unpackb(
            body, raw=False, strict_map_key=True, max_array_len=MAX_BODY_FIELDS, max_map_len=0
        )
    except (ValueError, TypeError, msgpack.UnpackException):
        raise WireError("message body is not valid msgpack") from None
    if not (
        isinstance(fields, list)
        and len(fields) == MAX_BODY_FIELDS
        and isinstance(fields[0], str)
        and isinstance(fields[1], str)
        and isinstance(fields[2], bytes)
        and 0 < len(fields[0]) <= MAX_TYPE_NAME
    ):
        raise WireError("message body must be [type_name, content_type, payload]")
    return fields[0], fields[1], fields[2]


__all__ = [
    "CAPABILITY_PREFIX",
    "DONE_TYPE",
    "MESSAGE_PREFIX",
    "NONE_TYPE",
    "Routing",
    "capability_for",
    "envelope_type",
    "pack_body",
    "parse_routing",
    "unpack_body",
]
