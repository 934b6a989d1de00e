"""The federation bucket of a mesh: what its nodes know about federation.

One KV bucket per mesh (``{mesh}_registry_federation``; written by the mesh
authority and its steward, read by every node). Every value is self-verifying:
nodes check each against the agreement and the signing organization, so a
forged or stale value written by someone else is refused, never believed.

========================================  ==============================================
key                                       value
========================================  ==============================================
``agreement.{id}``                        the agreement, both signatures (canonical JSON)
``revocation.{id}``                       a party's signed revocation notice (JSON)
``status.{org key}``                      an organization's signed status list (msgpack)
``card.{org key}.{agent key}``            a partner agent's card and membership credential
``quarantine.{org key}.{agent key}``      a partner authority's newest order about its agent
========================================  ==============================================

``{org key}`` and ``{agent key}`` are the multibase parts of the DIDs.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from agentmesh.directory.watcher import bucket_name
from agentmesh.federation.errors import FederationError
from agentmesh.node.addressing import MeshAddressing

MAX_PARTNER_CARD_BYTES = 32 * 1024


def federation_bucket(mesh: str) -> str:
    return bucket_name(mesh, "federation")


def key_of(did: str) -> str:
    return MeshAddressing.agent_key(did)


def agreement_key(agreement_id: str) -> str:
    return f"agreement.{agreement_id}"


def revocation_key(agreement_id: str) -> str:
    return f"revocation.{agreement_id}"


def status_key(organization: str) -> str:
    return f"status.{key_of(organization)}"


def card_key(organization: str, agent: str) -> str:
    return f"card.{key_of(organization)}.{key_of(agent)}"


def quarantine_key(organization: str, agent: str) -> str:
    return f"quarantine.{key_of(organization)}.{key_of(agent)}"


@dataclass(frozen=True, slots=True)
class PartnerCardRecord:
    """A partner agent's signed card and the membership credential its organization issued."""

    card: bytes
    membership: str

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb([self.card, self.membership], use_bin_type=True)
        return packed


def decode_partner_card(data: bytes) -> PartnerCardRecord:
    """Raises: FederationError: not a [card bytes, credential] pair."""
    if len(data) > MAX_PARTNER_CARD_BYTES:
        raise FederationError("partner card record is too large")
    try:
        fields = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise FederationError("partner card record is not msgpack") from None
    if (
        not isinstance(fields, list)
        or len(fields) != 2
        or not isinstance(fields[0], bytes)
        or not isinstance(fields[1], str)
    ):
        raise FederationError("partner card record is not [card, credential]")
    return PartnerCardRecord(fields[0], fields[1])


__all__ = [
    "PartnerCardRecord",
    "agreement_key",
    "card_key",
    "decode_partner_card",
    "federation_bucket",
    "key_of",
    "quarantine_key",
    "revocation_key",
    "status_key",
]
