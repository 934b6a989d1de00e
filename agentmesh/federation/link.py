"""Compile an agreement into one side's broker links (``agentmesh federation link``).

For organization ``org`` of the agreement and its partner ``P``:

* the mesh account exports ``{org}.agent.{key}.inbox`` and ``.sealed`` of each
  agent ``org`` exports to ``P`` and of its authority (the steward);
* a link account for ``P`` imports them as ``fed.{org}.{key}.inbox|sealed`` and
  exports ``fed.{P}.>``, which the mesh account imports as ``{org}.fed.{P}.>``;
* the leaf connection binds this link account to ``P``'s: either this server
  listens and issues ``P``'s server a leaf user JWT (``P``'s ``link_key``; it may
  publish only ``fed.{org}.>`` and receive only ``fed.{P}.>``, plus replies), or
  this server connects to ``P``'s listener with the JWT ``P`` issued.

Nothing else of either mesh is reachable through the link: the partner's server
sees only the link account, which holds only the imported agent subjects.
"""

from __future__ import annotations

from agentmesh.broker.links import ImportedService, LeafRemote, LinkAccount, MeshLinks
from agentmesh.broker.nkeys import KeyRole, encode_public
from agentmesh.federation.agreement import FederationAgreement
from agentmesh.node.addressing import MeshAddressing
from iatp.identity import AgentIdentity

KINDS = ("inbox", "sealed")


def exported_agents(agreement: FederationAgreement, org: str) -> list[str]:
    """The DIDs ``org`` makes reachable to its partner: its exports and its authority."""
    mine = agreement.party(org)
    return [*(e.agent for e in mine.exports), mine.authority]


def link_account_for(
    agreement: FederationAgreement, org: str, mesh_account: str, account: str
) -> LinkAccount:
    partner = agreement.other(org).org
    imports = tuple(
        ImportedService(
            account=mesh_account,
            subject=f"{org}.agent.{MeshAddressing.agent_key(did)}.{kind}",
            local_subject=f"fed.{org}.{MeshAddressing.agent_key(did)}.{kind}",
        )
        for did in exported_agents(agreement, org)
        for kind in KINDS
    )
    return LinkAccount(
        partner=partner, account=account, exports=(f"fed.{partner}.>",), imports=imports
    )


def new_account_key() -> str:
    """A fresh account public key (its seed is never needed: the authority signs the JWT)."""
    return encode_public(KeyRole.ACCOUNT, AgentIdentity.generate().public_key)


def compile_link(
    links: MeshLinks,
    agreement: FederationAgreement,
    org: str,
    *,
    mesh_account: str,
    listen: str | None = None,
    remote: LeafRemote | None = None,
) -> MeshLinks:
    """``links`` with the link to ``org``'s partner in ``agreement`` added or replaced.

    Keeps the partner's link account key when one exists (an amendment).
    """
    partner = agreement.other(org).org
    held = links.account(partner)
    account = held.account if held is not None else new_account_key()
    link = link_account_for(agreement, org, mesh_account, account)
    accounts = (*(a for a in links.accounts if a.partner != partner), link)
    remotes = tuple(r for r in links.remotes if r.partner != partner)
    if remote is not None:
        remotes = (*remotes, remote)
    listen = listen if listen is not None else links.leaf_listen
    return _rebuilt(links, org, accounts, remotes, listen)


def remove_link(links: MeshLinks, mesh: str, partner: str) -> MeshLinks:
    """``links`` of ``mesh`` without the link to ``partner``: nothing of it crosses any more."""
    accounts = tuple(a for a in links.accounts if a.partner != partner)
    remotes = tuple(r for r in links.remotes if r.partner != partner)
    return _rebuilt(links, mesh, accounts, remotes, links.leaf_listen)


def _rebuilt(
    links: MeshLinks,
    mesh: str,
    accounts: tuple[LinkAccount, ...],
    remotes: tuple[LeafRemote, ...],
    listen: str | None,
) -> MeshLinks:
    exports = sorted({i.subject for a in accounts for i in a.imports})
    imports = tuple(
        ImportedService(
            account=a.account,
            subject=f"fed.{a.partner}.>",
            local_subject=f"{mesh}.fed.{a.partner}.>",
        )
        for a in accounts
    )
    return links.model_copy(
        update={
            "mesh_exports": tuple(exports),
            "mesh_imports": imports,
            "accounts": accounts,
            "remotes": remotes,
            "leaf_listen": listen if accounts else None,
        }
    )


def leaf_permissions(
    agreement: FederationAgreement, org: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(publish, subscribe) of the partner server's leaf user on ``org``'s listener."""
    partner = agreement.other(org).org
    return (f"fed.{org}.>",), (f"fed.{partner}.>",)


__all__ = [
    "compile_link",
    "exported_agents",
    "leaf_permissions",
    "link_account_for",
    "new_account_key",
    "remove_link",
]
