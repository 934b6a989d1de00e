"""Membership status lists: how an organization revokes the credentials it issued.

Each membership credential names an index in its issuer's status list
(``credentialStatus.statusListIndex``). The organization's authority publishes a
signed, versioned list of revoked indices; verifiers in other organizations
honour the newest version they have seen and never go back to an older one (a
replayed old list cannot un-revoke anyone). Wire form, canonical msgpack::

    [organization DID, version, issued_at_ms, [revoked indices, ascending], signature]
    signature = Ed25519_org(STATUS_DOMAIN || msgpack([organization, version,
                                                      issued_at_ms, revoked]))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgpack
from nacl.exceptions import BadSignatureError

from agentmesh.federation.errors import StatusListError
from iatp.did import is_did, verify_key_for_did
from iatp.identity import AgentIdentity

STATUS_DOMAIN = b"agentmesh/1/federation-status\x00"
MAX_STATUS_BYTES = 1 << 20
MAX_REVOKED = 100_000


def _claim(organization: str, version: int, issued_at_ms: int, revoked: list[int]) -> bytes:
    packed: bytes = msgpack.packb([organization, version, issued_at_ms, revoked])
    return STATUS_DOMAIN + packed


@dataclass(frozen=True, slots=True)
class StatusList:
    """A verified status list: which membership indices ``organization`` revoked."""

    organization: str
    version: int
    issued_at_ms: int
    revoked: frozenset[int]
    signature: bytes

    def is_revoked(self, index: int) -> bool:
        return index in self.revoked

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            [
                self.organization,
                self.version,
                self.issued_at_ms,
                sorted(self.revoked),
                self.signature,
            ],
            use_bin_type=True,
        )
        return packed


def issue_status_list(
    authority: AgentIdentity, *, version: int, revoked: Iterable[int], now_ms: int
) -> StatusList:
    """Sign the status list ``version`` of ``authority``'s organization.

    Raises:
        StatusListError: a negative version or index, or too many indices.
    """
    indices = sorted(set(revoked))
    if version < 0 or any(i < 0 for i in indices) or len(indices) > MAX_REVOKED:
        raise StatusListError("versions and indices are >= 0, at most 100000 indices")
    signature = authority.sign(_claim(authority.did, version, now_ms, indices))
    return StatusList(authority.did, version, now_ms, frozenset(indices), signature)


def decode_status_list(data: bytes, *, organization: str | None = None) -> StatusList:
    """Parse and verify a status list (signed by the organization it names).

    Raises:
        StatusListError: malformed, too large, of another organization, or badly signed.
    """
    if len(data) > MAX_STATUS_BYTES:
        raise StatusListError("status list is too large")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise StatusListError(f"status list is not msgpack: {exc}") from None
    if not isinstance(fields, list) or len(fields) != 5:
        raise StatusListError("a status list has five fields")
    org, version, issued, revoked, signature = fields
    if not (isinstance(org, str) and is_did(org)):
        raise StatusListError("the organization is not a did:key")
    if organization is not None and org != organization:
        raise StatusListError(f"a status list of {org}, not of {organization}")
    ints = (version, issued, *revoked) if isinstance(revoked, list) else ()
    if (
        not isinstance(revoked, list)
        or not all(type(i) is int and i >= 0 for i in ints)
        or len(revoked) > MAX_REVOKED
        or revoked != sorted(set(revoked))
        or not isinstance(signature, bytes)
    ):
        raise StatusListError("status list fields have the wrong types or order")
    try:
        verify_key_for_did(org).verify(_claim(org, version, issued, revoked), signature)
    except (BadSignatureError, ValueError):  # PyNaCl raises ValueError for a wrong length
        raise StatusListError(f"status list not signed by {org}") from None
    return StatusList(org, version, issued, frozenset(revoked), signature)


__all__ = [
    "MAX_REVOKED",
    "STATUS_DOMAIN",
    "StatusList",
    "decode_status_list",
    "issue_status_list",
]
