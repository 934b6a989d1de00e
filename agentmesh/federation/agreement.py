"""Federation agreements: what two organizations let each other's agents do.

An agreement is a pydantic model, signed by both organizations' authorities over
its canonical bytes::

    AGREEMENT_DOMAIN || canonical_json(agreement without "signatures")

(canonical JSON: sorted keys, no whitespace, UTF-8, as for agent cards). It is in
force between ``not_before_ms`` and ``not_after_ms`` once both signatures verify,
until either authority signs an :class:`AgreementRevocation` for its ``id``; a
revocation ends every version of that id for good, so a replayed agreement is
refused. A later ``version`` of the same id (an amendment, signed again by both)
replaces an earlier one.

Each :class:`Party` names its organization (``org``: its mesh name, one subject
token), its authority DID, the key its server uses on the leaf-node link, what it
**exports** to the other party (named agents, each with the operations the other
party's agents may invoke on it) and the **ceilings** it imposes on the other
party's agents when they call in (ring, rate, daily budget, allowed tools).
"""

from __future__ import annotations

import fnmatch
import hashlib
from typing import Annotated, Literal, Self

from nacl.exceptions import BadSignatureError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentmesh.federation.errors import AgreementError
from iatp.did import is_did, verify_key_for_did
from iatp.identity import AgentIdentity
from registry.card import canonical_json

AGREEMENT_DOMAIN = b"agentmesh/1/federation-agreement\x00"
REVOCATION_DOMAIN = b"agentmesh/1/federation-agreement-revocation\x00"
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
OPERATION = r"^[A-Za-z0-9_.*?-]{1,128}$"
MAX_AGREEMENT_BYTES = 256 * 1024


def _did(value: str) -> str:
    if not is_did(value):
        raise ValueError(f"{value!r} is not an Ed25519 did:key")
    return value


DID = Annotated[str, AfterValidator(_did)]
Millis = Annotated[int, Field(ge=0, lt=2**63)]
Operation = Annotated[str, Field(pattern=OPERATION)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def matches(patterns: tuple[str, ...], operation: str) -> bool:
    """Whether ``operation`` matches one of the glob ``patterns`` (``*``, ``?``)."""
    return any(fnmatch.fnmatchcase(operation, pattern) for pattern in patterns)


class Export(_Model):
    """One agent a party exports, and what the other party's agents may ask of it.

    ``operations`` are glob patterns over the message type, or over the action for
    saga steps (``saga.step`` messages carry an action such as ``payment.charge``).
    ``capabilities`` are the card capabilities the other party may discover it by.
    """

    agent: DID
    operations: tuple[Operation, ...] = Field(min_length=1, max_length=64)
    capabilities: tuple[Annotated[str, Field(pattern=NAME_PATTERN)], ...] = ()

    def allows(self, operation: str) -> bool:
        return matches(self.operations, operation)


class Ceilings(_Model):
    """What a party allows the *other* party's agents when they call in.

    Attributes:
        max_ring: the best (lowest) ring a foreign agent can hold here (1..3).
        rate_per_second, burst: token bucket per calling organization, per node.
        daily_budget: calls per UTC day per calling organization, per node (None: none).
        allowed_tools: operation patterns foreign agents may invoke at all.
    """

    max_ring: int = Field(default=2, ge=1, le=3)
    rate_per_second: float = Field(default=50.0, gt=0, le=1e6)
    burst: int = Field(default=100, ge=1, le=1_000_000)
    daily_budget: int | None = Field(default=None, ge=1)
    allowed_tools: tuple[Operation, ...] = ("*",)


class Party(_Model):
    """One organization of the agreement."""

    org: Annotated[str, Field(pattern=NAME_PATTERN)]
    name: Annotated[str, Field(min_length=1, max_length=128)]
    authority: DID
    link_key: DID
    exports: tuple[Export, ...] = Field(default=(), max_length=1024)
    ceilings: Ceilings = Ceilings()

    def export_for(self, agent: str) -> Export | None:
        return next((e for e in self.exports if e.agent == agent), None)


class FederationAgreement(_Model):
    """A bilateral agreement; see the module docstring for its meaning and bytes."""

    format: Literal["agentmesh-federation-agreement"] = "agentmesh-federation-agreement"
    id: Annotated[str, Field(pattern=NAME_PATTERN)]
    version: int = Field(ge=1, le=1_000_000)
    parties: tuple[Party, Party]
    not_before_ms: Millis
    not_after_ms: Millis
    revocation: Literal["signed-notice"] = "signed-notice"
    signatures: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        a, b = self.parties
        if a.org == b.org or a.authority == b.authority or a.link_key == b.link_key:
            raise ValueError("the two parties need distinct orgs, authorities and link keys")
        if self.not_after_ms <= self.not_before_ms:
            raise ValueError("not_after_ms must be after not_before_ms")
        for party in self.parties:
            agents = [e.agent for e in party.exports]
            if len(set(agents)) != len(agents):
                raise ValueError(f"{party.org} exports an agent twice")
            if a.authority in agents or b.authority in agents:
                raise ValueError("an authority is not an exported agent (its steward is implied)")
        for signer in self.signatures:
            if signer not in (a.authority, b.authority):
                raise ValueError(f"{signer} is not the authority of either party")
        return self

    # -- bytes and signatures -------------------------------------------------------

    def signing_bytes(self) -> bytes:
        return AGREEMENT_DOMAIN + canonical_json(
            self.model_dump(mode="json", exclude={"signatures"})
        )

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the signed bytes: names this exact version."""
        return hashlib.sha256(self.signing_bytes()).hexdigest()

    def signed_by(self, authority: AgentIdentity) -> FederationAgreement:
        """This agreement with ``authority``'s signature added.

        Raises:
            AgreementError: ``authority`` is not one of the two parties' authorities.
        """
        if authority.did not in (p.authority for p in self.parties):
            raise AgreementError(f"{authority.did} is not the authority of either party")
        signature = authority.sign(self.signing_bytes()).hex()
        return self.model_copy(update={"signatures": {**self.signatures, authority.did: signature}})

    def check_signatures(self) -> None:
        """Both authorities signed these bytes.

        Raises:
            AgreementError: a signature is missing or does not verify.
        """
        payload = self.signing_bytes()
        for party in self.parties:
            signature = self.signatures.get(party.authority)
            if signature is None:
                raise AgreementError(
                    f"agreement {self.id} v{self.version} lacks {party.org}'s signature"
                )
            try:
                verify_key_for_did(party.authority).verify(payload, bytes.fromhex(signature))
            except (BadSignatureError, ValueError):
                raise AgreementError(
                    f"{party.org}'s signature on agreement {self.id} v{self.version} is invalid"
                ) from None

    def check_in_force(self, now_ms: int) -> None:
        """Signed by both and within its validity window.

        Raises:
            AgreementError: not fully signed, not yet valid or expired.
        """
        self.check_signatures()
        self.check_window(now_ms)

    def check_window(self, now_ms: int) -> None:
        """Within its validity window (signatures not checked: for agreements verified once).

        Raises:
            AgreementError: not yet valid or expired.
        """
        if now_ms < self.not_before_ms:
            raise AgreementError(f"agreement {self.id} is not valid yet")
        if now_ms >= self.not_after_ms:
            raise AgreementError(f"agreement {self.id} expired")

    # -- queries ---------------------------------------------------------------------

    def party(self, org: str) -> Party:
        """Raises: AgreementError: ``org`` is not a party."""
        for party in self.parties:
            if party.org == org:
                return party
        raise AgreementError(f"{org} is not a party to agreement {self.id}")

    def other(self, org: str) -> Party:
        """The party that is not ``org``. Raises: AgreementError: ``org`` is not a party."""
        mine = self.party(org)
        return self.parties[1] if self.parties[0] is mine else self.parties[0]

    def party_of_authority(self, did: str) -> Party | None:
        return next((p for p in self.parties if p.authority == did), None)

    def encode(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))


def decode_agreement(data: bytes) -> FederationAgreement:
    """Parse an agreement (signatures are checked by :meth:`FederationAgreement.check_signatures`).

    Raises:
        AgreementError: too large, not JSON, or a missing, extra or invalid field.
    """
    if len(data) > MAX_AGREEMENT_BYTES:
        raise AgreementError("agreement is too large")
    try:
        return FederationAgreement.model_validate_json(data)
    except ValidationError as exc:
        raise AgreementError(_first(exc)) from None


def _first(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "agreement"
    return f"{where}: {first['msg']}"


class AgreementRevocation(_Model):
    """One authority's signed notice that agreement ``agreement_id`` ends (every version)."""

    agreement_id: Annotated[str, Field(pattern=NAME_PATTERN)]
    issuer: DID
    reason: Annotated[str, Field(max_length=512)]
    issued_at_ms: Millis
    signature: Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")] = "0" * 128

    def signing_bytes(self) -> bytes:
        return REVOCATION_DOMAIN + canonical_json(
            self.model_dump(mode="json", exclude={"signature"})
        )

    def encode(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))


def revoke_agreement(
    agreement: FederationAgreement, authority: AgentIdentity, *, reason: str, now_ms: int
) -> AgreementRevocation:
    """``authority``'s signed revocation of ``agreement``.

    Raises:
        AgreementError: ``authority`` is not one of the parties' authorities.
    """
    if agreement.party_of_authority(authority.did) is None:
        raise AgreementError(f"{authority.did} is not a party to agreement {agreement.id}")
    unsigned = AgreementRevocation(
        agreement_id=agreement.id, issuer=authority.did, reason=reason, issued_at_ms=now_ms
    )
    return unsigned.model_copy(update={"signature": authority.sign(unsigned.signing_bytes()).hex()})


def decode_revocation(
    data: bytes, agreement: FederationAgreement | None = None
) -> AgreementRevocation:
    """Parse and verify a revocation notice (against ``agreement``'s parties, if given).

    Raises:
        AgreementError: malformed, badly signed, or not by a party of ``agreement``.
    """
    if len(data) > 4096:
        raise AgreementError("revocation notice is too large")
    try:
        notice = AgreementRevocation.model_validate_json(data)
    except ValidationError as exc:
        raise AgreementError(_first(exc)) from None
    try:
        verify_key_for_did(notice.issuer).verify(
            notice.signing_bytes(), bytes.fromhex(notice.signature)
        )
    except (BadSignatureError, ValueError):
        raise AgreementError(
            f"revocation of {notice.agreement_id} is not signed by its issuer"
        ) from None
    if agreement is not None:
        if notice.agreement_id != agreement.id:
            raise AgreementError(f"a revocation of {notice.agreement_id}, not of {agreement.id}")
        if agreement.party_of_authority(notice.issuer) is None:
            raise AgreementError(f"{notice.issuer} is not a party to agreement {agreement.id}")
    return notice


__all__ = [
    "AGREEMENT_DOMAIN",
    "REVOCATION_DOMAIN",
    "AgreementRevocation",
    "Ceilings",
    "Export",
    "FederationAgreement",
    "Party",
    "decode_agreement",
    "decode_revocation",
    "matches",
    "revoke_agreement",
]
