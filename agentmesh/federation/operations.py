"""What an organization's authority does to federate (the ``agentmesh federation`` CLI).

Offline (files in the mesh directory, no server needed): :func:`link_mesh`,
:func:`unlink_mesh`, :func:`issue_member`, :func:`revoke_member`. Online (as the
mesh authority on the running server): :func:`push_links` hands the server the
new account JWTs, :func:`publish_federation` stores agreements, revocation
notices and the organization's status list in the federation bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentmesh.broker.authority import MeshAuthority, read_jwt, write_server_config
from agentmesh.broker.config import MeshSecurityConfig
from agentmesh.broker.credentials import creds_file
from agentmesh.broker.links import LeafRemote, MeshLinks
from agentmesh.broker.revocation_sync import broker_revocations, push_account_jwt
from agentmesh.broker.session import AuthoritySession
from agentmesh.federation.agreement import (
    AgreementRevocation,
    FederationAgreement,
    decode_revocation,
    revoke_agreement,
)
from agentmesh.federation.errors import AgreementError
from agentmesh.federation.link import compile_link, leaf_permissions, remove_link
from agentmesh.federation.membership import issue_membership
from agentmesh.federation.orgdir import OrgDirectory
from agentmesh.federation.status import StatusList, issue_status_list
from agentmesh.federation.store import (
    agreement_key,
    federation_bucket,
    revocation_key,
    status_key,
)
from agentmesh.transport.base import Transport
from iatp.clock import SystemClock
from iatp.identity import AgentIdentity


@dataclass(frozen=True, slots=True)
class LinkResult:
    """What :func:`link_mesh` wrote."""

    links: MeshLinks
    server_config: Path
    issued_leaf_jwt: Path | None = None
    leaf_creds: Path | None = None


def _authority(mesh_directory: Path, authority: AgentIdentity) -> MeshAuthority:
    return MeshAuthority(
        MeshSecurityConfig.load(mesh_directory), authority, directory=mesh_directory
    )


def link_mesh(
    mesh_directory: str | Path,
    authority: AgentIdentity,
    agreement: FederationAgreement,
    *,
    listen: str | None = None,
    connect: str | None = None,
    leaf_jwt: str | None = None,
) -> LinkResult:
    """Compile ``agreement`` into this mesh's broker link (one of ``listen`` or ``connect``).

    ``listen``: this server accepts the partner's leaf connection on HOST:PORT and
    the partner's leaf user JWT is written to hand over. ``connect``: this server
    connects to the partner's ``nats-leaf://HOST:PORT`` with ``leaf_jwt`` (issued by
    the partner) and this organization's link key.

    Raises:
        AgreementError: not signed by both, or this authority is not a party.
        MeshSecurityError: the directory is not this authority's mesh.
    """
    base = Path(mesh_directory)
    powers = _authority(base, authority)
    agreement.check_signatures()
    mine = agreement.party_of_authority(authority.did)
    if mine is None or mine.org != powers.config.mesh:
        raise AgreementError(
            f"this mesh ({powers.config.mesh}) and its authority are not a party to {agreement.id}"
        )
    if (listen is None) == (connect is None) or (connect is not None and leaf_jwt is None):
        raise AgreementError("link with --listen HOST:PORT, or --connect URL with --leaf-jwt")
    org = OrgDirectory(base)
    theirs = agreement.other(mine.org)
    if org.link_identity().did != mine.link_key:
        raise AgreementError(
            f"the agreement names link key {mine.link_key}, but this mesh's is "
            f"{org.link_identity().did} ('agentmesh federation link-key')"
        )
    links = MeshLinks.load(base)
    remote = None
    creds_path = None
    if connect is not None and leaf_jwt is not None:
        creds_path = org.save_leaf_creds(theirs.org, creds_file(org.link_identity(), leaf_jwt))
        remote = LeafRemote(
            partner=theirs.org, url=connect, account="", credentials=str(creds_path)
        )
    links = compile_link(
        links, agreement, mine.org, mesh_account=powers.config.account, listen=listen
    )
    link = links.account(theirs.org)
    assert link is not None
    if remote is not None:
        remote = remote.model_copy(update={"account": link.account})
        links = links.model_copy(
            update={"remotes": (*(r for r in links.remotes if r.partner != theirs.org), remote)}
        )
    links.save(base)
    issued = None
    if listen is not None:
        publish, subscribe = leaf_permissions(agreement, mine.org)
        token = powers.issue_leaf_user(link, theirs.link_key, publish=publish, subscribe=subscribe)
        issued = org.save_issued_leaf_jwt(theirs.org, token)
    org.save_agreement(agreement)
    return LinkResult(links, write_server_config(powers, base), issued, creds_path)


def unlink_mesh(mesh_directory: str | Path, authority: AgentIdentity, partner: str) -> MeshLinks:
    """Remove the broker link to ``partner`` (push it with :func:`push_links`)."""
    base = Path(mesh_directory)
    powers = _authority(base, authority)
    links = remove_link(MeshLinks.load(base), powers.config.mesh, partner)
    links.save(base)
    write_server_config(powers, base)
    return links


async def push_links(session: AuthoritySession, *, timeout: float = 5.0) -> int:
    """Hand the running server the link accounts and the mesh account (with its revocations).

    Returns the number of JWTs pushed.
    """
    powers = session.powers
    revocations = session.revocation_list()
    await revocations.start(require_complete=False)
    try:
        wanted = broker_revocations(revocations)
    finally:
        await revocations.aclose()
    pushed = 0
    for link in powers.links.accounts:
        await push_account_jwt(session.system, powers.link_account_jwt(link), timeout=timeout)
        pushed += 1
    await push_account_jwt(session.system, powers.account_jwt(wanted), timeout=timeout)
    return pushed + 1


async def publish_federation(
    transport: Transport, mesh: str, org: OrgDirectory, *, timeout: float = 5.0
) -> int:
    """Store this organization's agreements, revocation notices and status list in the bucket."""
    bucket = await transport.key_value(federation_bucket(mesh))
    written = 0
    for agreement in org.agreements():
        await bucket.put(agreement_key(agreement.id), agreement.encode(), timeout=timeout)
        written += 1
    for data in org.revocations():
        notice = decode_revocation(data)
        await bucket.put(revocation_key(notice.agreement_id), data, timeout=timeout)
        written += 1
    status = org.status_list()
    if status is not None:
        await bucket.put(status_key(status.organization), status.encode(), timeout=timeout)
        written += 1
    return written


async def issue_member(
    mesh_directory: str | Path,
    authority: AgentIdentity,
    agent: str,
    *,
    roles: tuple[str, ...] = (),
    capabilities: tuple[str, ...] = (),
    days: float = 30.0,
) -> str:
    """Issue ``agent`` a membership credential (didkit); keeps a copy and its status index.

    The first issue also signs the organization's (empty) status list.
    """
    base = Path(mesh_directory)
    powers = _authority(base, authority)
    org = OrgDirectory(base)
    token = await issue_membership(
        authority,
        org=powers.config.mesh,
        agent=agent,
        status_index=org.status_index(agent),
        roles=roles,
        capabilities=capabilities,
        lifetime_s=days * 86400,
    )
    org.save_membership(agent, token)
    if org.status_list() is None:
        org.save_status_list(
            issue_status_list(authority, version=1, revoked=(), now_ms=SystemClock().now_ms())
        )
    return token


def revoke_member(mesh_directory: str | Path, authority: AgentIdentity, agent: str) -> StatusList:
    """Revoke ``agent``'s membership: a new status list version (publish it to take effect).

    Raises:
        AgreementError: this organization never issued ``agent`` a membership.
    """
    org = OrgDirectory(mesh_directory)
    indices = org.indices()
    if agent not in indices:
        raise AgreementError(f"{agent} holds no membership of this organization")
    held = org.status_list()
    revoked = set(held.revoked) if held is not None else set()
    status = issue_status_list(
        authority,
        version=(held.version if held is not None else 0) + 1,
        revoked=revoked | {indices[agent]},
        now_ms=SystemClock().now_ms(),
    )
    org.save_status_list(status)
    return status


def revoke(
    mesh_directory: str | Path,
    authority: AgentIdentity,
    agreement: FederationAgreement,
    *,
    reason: str,
) -> AgreementRevocation:
    """Sign and keep the revocation of ``agreement`` (publish it to take effect)."""
    notice = revoke_agreement(agreement, authority, reason=reason, now_ms=SystemClock().now_ms())
    OrgDirectory(mesh_directory).save_revocation(notice)
    return notice


def leaf_jwt_of(path: str | Path) -> str:
    """The leaf user JWT a partner issued (a file it handed over)."""
    return read_jwt(path)


__all__ = [
    "LinkResult",
    "issue_member",
    "leaf_jwt_of",
    "link_mesh",
    "publish_federation",
    "push_links",
    "revoke",
    "revoke_member",
    "unlink_mesh",
]
