"""The mesh authority's broker powers: create a secured mesh, issue credentials.

The authority's one Ed25519 key (its ``did:key``) is the NATS operator's signing
key and the signing key of the mesh account and of the system account. So the
same key that signs revocations and quarantines on the mesh also issues every
agent's broker credential (a user JWT naming the agent's own key) and re-issues
the account JWT that tells the server whom to disconnect.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from agentmesh.broker.config import (
    SERVER_CONFIG_FILE,
    Limits,
    MeshSecurityConfig,
    render_server_config,
)
from agentmesh.broker.errors import InvalidJWT, MeshSecurityError
from agentmesh.broker.jwt import (
    AccountLimits,
    ServiceExport,
    SubjectRules,
    Token,
    UserLimits,
    UserPermissions,
    account_claims,
    decode_jwt,
    encode_jwt,
    operator_claims,
    user_claims,
)
from agentmesh.broker.links import LinkAccount, MeshLinks
from agentmesh.broker.nkeys import KeyRole, encode_public, user_nkey_for_did
from agentmesh.broker.subject_map import (
    Role,
    SubjectMap,
    TopicGrants,
    check_single_token,
    permissions_for,
    subject_map,
)
from iatp.identity import AgentIdentity
from iatp.keystore import save_identity

ROLE_TAG = "agentmesh-role:"
MESH_TAG = "agentmesh-mesh:"
AUTHORITY_JWT = "authority.jwt"
AUTHORITY_SYSTEM_JWT = "authority-system.jwt"


def role_of(user_jwt: str) -> Role:
    """The identity kind a user JWT was issued for (its ``agentmesh-role:`` tag).

    Raises:
        InvalidJWT: Not a user JWT, or without a known role tag.
    """
    token = decode_jwt(user_jwt, kind="user")
    tags = token.nats.get("tags", [])
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, str) and tag.startswith(ROLE_TAG):
            try:
                return Role(tag[len(ROLE_TAG) :])
            except ValueError:
                break
    raise InvalidJWT("the user JWT names no agentmesh role")


class MeshAuthority:
    """Issues the broker credentials of one secured mesh.

    Args:
        config: The mesh's ``mesh.json``.
        identity: The mesh authority's identity (its DID must be ``config.authority_did``).

    Raises:
        MeshSecurityError: ``identity`` is not this mesh's authority.
    """

    def __init__(
        self,
        config: MeshSecurityConfig,
        identity: AgentIdentity,
        *,
        directory: str | Path | None = None,
    ) -> None:
        if identity.did != config.authority_did:
            raise MeshSecurityError(
                f"{identity.did} is not the authority of mesh {config.mesh!r} "
                f"({config.authority_did})"
            )
        self.config = config
        self.identity = identity
        self.directory = None if directory is None else Path(directory)
        self.subjects: SubjectMap = subject_map(config.mesh, config.limits.quotas())

    @property
    def signing_key(self) -> str:
        """The authority's key as an account signing key (``A...``)."""
        return encode_public(KeyRole.ACCOUNT, self.identity.public_key)

    @property
    def operator_signing_key(self) -> str:
        """The authority's key as an operator signing key (``O...``)."""
        return encode_public(KeyRole.OPERATOR, self.identity.public_key)

    def issue_user(
        self,
        did: str,
        role: Role,
        *,
        topics: TopicGrants | None = None,
        expires_in: float | None = None,
        name: str | None = None,
        system: bool = False,
    ) -> str:
        """The user JWT of ``did`` as a ``role`` in the mesh account (or the system account).

        Raises:
            InvalidDID: ``did`` is not an Ed25519 did:key.
        """
        if system:
            permissions = UserPermissions()
            limits = UserLimits()
            account = self.config.system_account
        else:
            permissions = permissions_for(role, did, self.subjects, topics or TopicGrants())
            limits = UserLimits() if role is Role.AUTHORITY else self.config.limits.user()
            account = self.config.account
        expires = None if expires_in is None else int(time.time() + expires_in)
        claims = user_claims(
            user_nkey_for_did(did),
            name=name or f"{role.value} {did[-12:]}",
            issuer_account=account,
            permissions=permissions,
            limits=limits,
            expires_at=expires,
            tags=(ROLE_TAG + role.value, MESH_TAG + self.config.mesh),
        )
        return encode_jwt(claims, self.identity, KeyRole.ACCOUNT)

    @property
    def links(self) -> MeshLinks:
        """The mesh's federation links (``links.json``; read afresh: a link may be added live)."""
        return MeshLinks() if self.directory is None else MeshLinks.load(self.directory)

    def account_jwt(
        self, revocations: Mapping[str, int] | None = None, *, links: MeshLinks | None = None
    ) -> str:
        """The mesh account's JWT, revoking ``revocations`` (user nkey -> unix time).

        The server applies every valid push in the order it receives them (the
        account JWT is a function of the revocation list and the links, so the
        newest push is the newest list). It carries the services the mesh's
        federation links export and import (``links``, default :attr:`links`).
        """
        issued = int(time.time())
        links = self.links if links is None else links
        claims = account_claims(
            self.config.account,
            name=f"mesh {self.config.mesh}",
            signing_keys=(self.signing_key,),
            limits=self.config.limits.account(),
            revocations=revocations,
            exports=links.export_claims(),
            imports=links.import_claims(),
        )
        return encode_jwt(claims, self.identity, KeyRole.OPERATOR, issued_at=issued)

    def link_account_jwt(self, link: LinkAccount) -> str:
        """The JWT of a link account: its services, one leaf connection, no JetStream."""
        claims = account_claims(
            link.account,
            name=f"link {self.config.mesh} <-> {link.partner}",
            signing_keys=(self.signing_key,),
            limits=AccountLimits(
                max_connections=0, max_leaf_nodes=1, max_streams=0, max_consumers=0
            ),
            exports=tuple(ServiceExport(subject) for subject in link.exports),
            imports=tuple(i.claim() for i in link.imports),
        )
        return encode_jwt(claims, self.identity, KeyRole.OPERATOR)

    def issue_leaf_user(
        self,
        link: LinkAccount,
        partner_link_did: str,
        *,
        publish: tuple[str, ...],
        subscribe: tuple[str, ...],
    ) -> str:
        """The user JWT a partner's server presents on its leaf connection into ``link``.

        It may only connect as a leaf node, publish ``publish`` (plus replies) into
        the link account and receive ``subscribe`` (plus replies).
        """
        replies = ("_R_.>",)
        claims = user_claims(
            user_nkey_for_did(partner_link_did),
            name=f"leaf {link.partner}",
            issuer_account=link.account,
            permissions=UserPermissions(
                SubjectRules(allow=(*publish, *replies)),
                SubjectRules(allow=(*subscribe, *replies)),
            ),
            connection_types=("LEAFNODE",),
            tags=(ROLE_TAG + "leaf", MESH_TAG + self.config.mesh),
        )
        return encode_jwt(claims, self.identity, KeyRole.ACCOUNT)

    def system_account_jwt(self) -> str:
        claims = account_claims(
            self.config.system_account,
            name="SYS",
            signing_keys=(self.signing_key,),
            limits=AccountLimits(max_leaf_nodes=0),
        )
        return encode_jwt(claims, self.identity, KeyRole.OPERATOR)

    def verify_user(self, user_jwt: str) -> Token:
        """Check that ``user_jwt`` was issued by this authority for this mesh's account.

        Raises:
            InvalidJWT: It was not (or it expired).
        """
        token = decode_jwt(user_jwt, kind="user", issuers=frozenset({self.signing_key}))
        if token.nats.get("issuer_account") != self.config.account:
            raise InvalidJWT("the user JWT belongs to another account")
        return token


def init_mesh(
    directory: Path,
    authority: AgentIdentity,
    passphrase: str,
    *,
    mesh: str = "agentmesh",
    host: str = "127.0.0.1",
    port: int = 4222,
    limits: Limits | None = None,
) -> MeshSecurityConfig:
    """Create a secured mesh in ``directory`` (see :mod:`agentmesh.broker.config`).

    Raises:
        MeshSecurityError: ``directory`` already holds a mesh, or ``mesh`` is not one token.
    """
    try:
        check_single_token(mesh)
    except ValueError as exc:
        raise MeshSecurityError(str(exc)) from None
    if (directory / "mesh.json").exists():
        raise MeshSecurityError(f"{directory} already holds a mesh (mesh.json exists)")
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("jwt", "jetstream"):
        (directory / sub).mkdir(exist_ok=True)
    operator, account, system = (AgentIdentity.generate() for _ in range(3))
    config = MeshSecurityConfig(
        mesh=mesh,
        authority_did=authority.did,
        operator=encode_public(KeyRole.OPERATOR, operator.public_key),
        account=encode_public(KeyRole.ACCOUNT, account.public_key),
        system_account=encode_public(KeyRole.ACCOUNT, system.public_key),
        host=host,
        port=port,
        limits=limits or Limits(),
    )
    powers = MeshAuthority(config, authority)
    operator_jwt = encode_jwt(
        operator_claims(
            config.operator,
            name=f"agentmesh {mesh}",
            signing_keys=(powers.operator_signing_key,),
            system_account=config.system_account,
        ),
        operator,
        KeyRole.OPERATOR,
    )
    account_jwt = powers.account_jwt()
    system_jwt = powers.system_account_jwt()
    files = {
        "operator.jwt": operator_jwt,
        "account.jwt": account_jwt,
        "system-account.jwt": system_jwt,
        AUTHORITY_JWT: powers.issue_user(authority.did, Role.AUTHORITY, name="mesh authority"),
        AUTHORITY_SYSTEM_JWT: powers.issue_user(
            authority.did, Role.AUTHORITY, name="mesh authority (system)", system=True
        ),
    }
    for name, text in files.items():
        (directory / name).write_text(text + "\n")
    for name, key in (("operator", operator), ("account", account), ("system-account", system)):
        save_identity(key, directory / f"{name}.key", passphrase)
    config.save(directory)
    server_conf = render_server_config(
        config, directory, account_jwt=account_jwt, system_jwt=system_jwt
    )
    target = directory / SERVER_CONFIG_FILE
    target.write_text(server_conf)
    os.chmod(target, 0o600)
    return config


def read_jwt(path: str | Path) -> str:
    """The JWT in a file written by ``mesh init`` or ``mesh add-agent``.

    Raises:
        MeshSecurityError: The file is missing or holds no JWT.
    """
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise MeshSecurityError(f"cannot read the JWT in {path}: {exc}") from None
    if text.count(".") != 2 or " " in text:
        raise MeshSecurityError(f"{path} does not hold a JWT")
    return text


def write_server_config(powers: MeshAuthority, directory: str | Path) -> Path:
    """Re-render ``DIR/nats-server.conf`` with the mesh's current links (``links.json``).

    The mesh account JWT preloaded in it carries the links' exports and imports
    but keeps the issue time of the first ``account.jwt``, so a JWT the authority
    pushed since (with revocations) stays the newer one in the server's resolver.
    The link accounts' JWTs are preloaded too.
    """
    base = Path(directory)
    links = MeshLinks.load(base)
    first = decode_jwt(read_jwt(base / "account.jwt"), kind="account")
    issued = first.claims.get("iat")
    claims = account_claims(
        powers.config.account,
        name=f"mesh {powers.config.mesh}",
        signing_keys=(powers.signing_key,),
        limits=powers.config.limits.account(),
        exports=links.export_claims(),
        imports=links.import_claims(),
    )
    preload = encode_jwt(
        claims,
        powers.identity,
        KeyRole.OPERATOR,
        issued_at=issued if isinstance(issued, int) else None,
    )
    text = render_server_config(
        powers.config,
        base,
        account_jwt=preload,
        system_jwt=read_jwt(base / "system-account.jwt"),
        links=links,
        link_jwts={link.account: powers.link_account_jwt(link) for link in links.accounts},
    )
    target = base / SERVER_CONFIG_FILE
    target.write_text(text)
    os.chmod(target, 0o600)
    return target


__all__ = [
    "AUTHORITY_JWT",
    "AUTHORITY_SYSTEM_JWT",
    "MESH_TAG",
    "ROLE_TAG",
    "MeshAuthority",
    "init_mesh",
    "read_jwt",
    "role_of",
    "write_server_config",
]
