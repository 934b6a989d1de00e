"""The link compiler, and the broker pieces it feeds: service claims, leaf users, leafnodes."""

from __future__ import annotations

from pathlib import Path

from agentmesh.broker.config import MeshSecurityConfig, render_server_config
from agentmesh.broker.credentials import creds_file
from agentmesh.broker.jwt import (
    AccountLimits,
    ServiceExport,
    ServiceImport,
    UserPermissions,
    account_claims,
    decode_jwt,
    encode_jwt,
    user_claims,
)
from agentmesh.broker.links import ImportedService, LeafRemote, MeshLinks
from agentmesh.broker.nkeys import KeyRole, decode_public, decode_seed, encode_public
from agentmesh.federation import Export, FederationAgreement
from agentmesh.federation.link import (
    compile_link,
    exported_agents,
    leaf_permissions,
    remove_link,
)
from iatp.identity import AgentIdentity
from tests.agentmesh.federation.test_agreement import (
    A_AUTH,
    A_NODE,
    A_OTHER,
    C_AUTH,
    C_LINK,
    make_agreement,
)

MESH_ACCOUNT = encode_public(KeyRole.ACCOUNT, AgentIdentity.from_seed(b"m" * 32).public_key)
LISTEN = "127.0.0.1:7422"


def key(identity: AgentIdentity) -> str:
    return identity.did.removeprefix("did:key:")


def exports_of(*identities: AgentIdentity) -> tuple[Export, ...]:
    return tuple(Export(agent=i.did, operations=("quote.*",)) for i in identities)


def subjects(org: str, *identities: AgentIdentity) -> list[str]:
    return sorted(
        f"{org}.agent.{key(i)}.{kind}" for i in identities for kind in ("inbox", "sealed")
    )


def gamma_agreement() -> FederationAgreement:
    return make_agreement(
        agreement_id="acme-gamma",
        partner=("gamma", C_AUTH, C_LINK),
        a_exports=exports_of(A_OTHER),
    )


def test_a_two_party_link_carries_only_the_exported_agents_and_the_authority() -> None:
    agreement = make_agreement(a_exports=exports_of(A_NODE, A_OTHER))
    assert exported_agents(agreement, "acme") == [A_NODE.did, A_OTHER.did, A_AUTH.did]
    links = compile_link(MeshLinks(), agreement, "acme", mesh_account=MESH_ACCOUNT, listen=LISTEN)
    assert list(links.mesh_exports) == subjects("acme", A_NODE, A_OTHER, A_AUTH)
    assert len(links.accounts) == 1
    link = links.accounts[0]
    assert link.partner == "beta"
    assert decode_public(link.account, KeyRole.ACCOUNT)[0] is KeyRole.ACCOUNT
    assert link.exports == ("fed.beta.>",)
    assert set(link.imports) == {
        ImportedService(
            account=MESH_ACCOUNT,
            subject=f"acme.agent.{key(i)}.{kind}",
            local_subject=f"fed.acme.{key(i)}.{kind}",
        )
        for i in (A_NODE, A_OTHER, A_AUTH)
        for kind in ("inbox", "sealed")
    }
    assert links.mesh_imports == (
        ImportedService(
            account=link.account, subject="fed.beta.>", local_subject="acme.fed.beta.>"
        ),
    )
    assert links.leaf_listen == LISTEN
    assert links.remotes == ()


def test_an_amendment_keeps_the_link_account_and_drops_what_is_no_longer_exported() -> None:
    v1 = make_agreement(a_exports=exports_of(A_NODE, A_OTHER))
    first = compile_link(MeshLinks(), v1, "acme", mesh_account=MESH_ACCOUNT, listen=LISTEN)
    v2 = make_agreement(version=2, a_exports=exports_of(A_NODE))
    second = compile_link(first, v2, "acme", mesh_account=MESH_ACCOUNT)
    assert [a.account for a in second.accounts] == [a.account for a in first.accounts]
    assert list(second.mesh_exports) == subjects("acme", A_NODE, A_AUTH)
    assert second.leaf_listen == LISTEN
    fresh = compile_link(MeshLinks(), v1, "acme", mesh_account=MESH_ACCOUNT)
    assert fresh.accounts[0].account != first.accounts[0].account


def test_remove_link_removes_only_that_partner() -> None:
    remote = LeafRemote(
        partner="gamma", url="nats-leaf://10.0.0.2:7422", account="X", credentials="/c"
    )
    links = compile_link(
        MeshLinks(), make_agreement(), "acme", mesh_account=MESH_ACCOUNT, listen=LISTEN
    )
    links = compile_link(
        links,
        gamma_agreement(),
        "acme",
        mesh_account=MESH_ACCOUNT,
        remote=remote,
    )
    assert {a.partner for a in links.accounts} == {"beta", "gamma"}
    assert links.remotes == (remote,)
    gamma = links.account("gamma")
    without_beta = remove_link(links, "acme", "beta")
    assert without_beta.accounts == (gamma,)
    assert list(without_beta.mesh_exports) == subjects("acme", A_OTHER, A_AUTH)
    assert [i.local_subject for i in without_beta.mesh_imports] == ["acme.fed.gamma.>"]
    assert without_beta.remotes == (remote,)
    assert without_beta.leaf_listen == LISTEN
    empty = remove_link(without_beta, "acme", "gamma")
    assert (empty.accounts, empty.mesh_exports, empty.mesh_imports, empty.remotes) == (
        (),
        (),
        (),
        (),
    )
    assert empty.leaf_listen is None


def test_leaf_permissions_of_the_partner_server() -> None:
    assert leaf_permissions(make_agreement(), "acme") == (("fed.acme.>",), ("fed.beta.>",))
    assert leaf_permissions(make_agreement(), "beta") == (("fed.beta.>",), ("fed.acme.>",))


def test_account_claims_carry_service_exports_and_imports() -> None:
    links = compile_link(MeshLinks(), make_agreement(), "acme", mesh_account=MESH_ACCOUNT)
    claims = account_claims(
        MESH_ACCOUNT,
        name="mesh acme",
        signing_keys=(),
        limits=AccountLimits(),
        exports=links.export_claims(),
        imports=links.import_claims(),
    )
    token = decode_jwt(encode_jwt(claims, A_AUTH, KeyRole.OPERATOR), kind="account")
    inbox = f"acme.agent.{key(A_NODE)}.inbox"
    assert {
        "name": inbox,
        "subject": inbox,
        "type": "service",
        "response_type": "Singleton",
    } in token.nats["exports"]
    assert len(token.nats["exports"]) == 4
    assert token.nats["imports"] == [
        {
            "name": "acme.fed.beta.>",
            "account": links.accounts[0].account,
            "subject": "fed.beta.>",
            "local_subject": "acme.fed.beta.>",
            "type": "service",
        }
    ]
    bare = account_claims(MESH_ACCOUNT, name="m", signing_keys=(), limits=AccountLimits())
    assert "exports" not in bare["nats"]
    assert "imports" not in bare["nats"]


def test_service_claims_default_their_name_and_keep_an_explicit_one() -> None:
    assert ServiceExport("a.b", name="svc").to_claims()["name"] == "svc"
    assert ServiceImport("ACC", "a.>", "b.>").to_claims()["name"] == "b.>"


def test_a_leaf_user_may_only_connect_as_a_leafnode() -> None:
    claims = user_claims(
        "UKEY",
        name="leaf beta",
        issuer_account=MESH_ACCOUNT,
        permissions=UserPermissions(),
        connection_types=("LEAFNODE",),
    )
    assert claims["nats"]["allowed_connection_types"] == ["LEAFNODE"]
    plain = user_claims(
        "UKEY", name="u", issuer_account=MESH_ACCOUNT, permissions=UserPermissions()
    )
    assert "allowed_connection_types" not in plain["nats"]


def config() -> MeshSecurityConfig:
    account = encode_public(KeyRole.ACCOUNT, AgentIdentity.from_seed(b"s" * 32).public_key)
    return MeshSecurityConfig(
        mesh="acme",
        authority_did=A_AUTH.did,
        operator=encode_public(KeyRole.OPERATOR, A_AUTH.public_key),
        account=MESH_ACCOUNT,
        system_account=account,
    )


def test_server_config_renders_the_leafnodes_block_and_preloads_link_jwts(tmp_path: Path) -> None:
    remote = LeafRemote(
        partner="beta", url="nats-leaf://10.0.0.2:7422", account="ALINK", credentials="/k/b.creds"
    )
    links = MeshLinks(leaf_listen=LISTEN, remotes=(remote,))
    text = render_server_config(
        config(),
        tmp_path,
        account_jwt="a.j.w",
        system_jwt="s.j.w",
        links=links,
        link_jwts={"ALINK": "l.j.w"},
    )
    assert "leafnodes {" in text
    assert f'  listen: "{LISTEN}"' in text
    assert (
        '{ url: "nats-leaf://10.0.0.2:7422", credentials: "/k/b.creds", account: ALINK }  # beta'
        in text
    )
    preload = text[
        text.index("resolver_preload {") : text.index("}", text.index("resolver_preload {"))
    ]
    assert '  ALINK: "l.j.w"' in preload
    assert f'  {MESH_ACCOUNT}: "a.j.w"' in preload
    plain = render_server_config(config(), tmp_path, account_jwt="a.j.w", system_jwt="s.j.w")
    assert "leafnodes" not in plain


def test_creds_file_holds_the_jwt_and_the_user_seed() -> None:
    text = creds_file(A_NODE, "h.p.s")
    lines = text.splitlines()
    assert lines[:4] == [
        "-----BEGIN NATS USER JWT-----",
        "h.p.s",
        "------END NATS USER JWT------",
        "",
    ]
    assert lines[4] == "-----BEGIN USER NKEY SEED-----"
    assert lines[6] == "------END USER NKEY SEED------"
    assert text.endswith("------END USER NKEY SEED------\n")
    assert decode_seed(lines[5]) == (KeyRole.USER, A_NODE.seed())
