"""The public description of a secured mesh (``mesh.json``) and its nats-server config.

``agentmesh mesh init`` writes a directory::

    mesh.json            this model: names, public keys, limits (no secrets)
    nats-server.conf     a ready server config: JWT auth, JetStream, limits
    operator.jwt         the operator JWT (self-signed; names the signing key)
    account.jwt          the mesh account's JWT as first issued
    system-account.jwt   the system account's JWT (the authority pushes updates with it)
    authority.jwt        the authority's user JWT in the mesh account
    authority-system.jwt the authority's user JWT in the system account
    operator.key, account.key, system-account.key
                         the three identity keys, encrypted like any keystore
                         (only needed to re-issue the operator or account JWTs)
    jwt/                 the server's account resolver directory
    jetstream/           the server's JetStream store

Every JWT after ``operator.jwt`` is signed by the mesh authority's key, which is
the operator's and both accounts' signing key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentmesh.broker.errors import MeshSecurityError
from agentmesh.broker.jwt import AccountLimits, UserLimits
from agentmesh.broker.links import MeshLinks
from agentmesh.broker.subject_map import StoreQuotas

FORMAT: Literal["agentmesh-mesh-security"] = "agentmesh-mesh-security"
CONFIG_FILE = "mesh.json"
SERVER_CONFIG_FILE = "nats-server.conf"
MiB = 1024 * 1024


class Limits(BaseModel):
    """Broker limits (bytes unless named otherwise). ``-1`` means none."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent_max_payload: int = Field(default=1 * MiB, gt=0)
    agent_max_subscriptions: int = Field(default=128, gt=0)
    account_max_connections: int = Field(default=1024, ge=-1)
    disk_storage: int = Field(default=4096 * MiB, gt=0)
    memory_storage: int = Field(default=256 * MiB, ge=0)
    max_streams: int = Field(default=64, gt=0)
    max_consumers: int = Field(default=8192, gt=0)
    store_bytes: int = Field(default=256 * MiB, gt=0)
    receipts_per_observer: int = Field(default=200_000, gt=0)
    checkpoints_per_node: int = Field(default=100_000, gt=0)

    def account(self) -> AccountLimits:
        return AccountLimits(
            max_connections=self.account_max_connections,
            max_payload=self.agent_max_payload,
            memory_storage=self.memory_storage,
            disk_storage=self.disk_storage,
            max_streams=self.max_streams,
            max_consumers=self.max_consumers,
        )

    def user(self) -> UserLimits:
        return UserLimits(
            max_payload=self.agent_max_payload, max_subscriptions=self.agent_max_subscriptions
        )

    def quotas(self) -> StoreQuotas:
        return StoreQuotas(
            store_bytes=self.store_bytes,
            receipts_per_observer=self.receipts_per_observer,
            checkpoints_per_node=self.checkpoints_per_node,
        )


class MeshSecurityConfig(BaseModel):
    """``mesh.json``: everything public about a secured mesh."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["agentmesh-mesh-security"] = FORMAT
    version: Literal[1] = 1
    mesh: str
    authority_did: str
    operator: str
    account: str
    system_account: str
    host: str = "127.0.0.1"
    port: int = Field(default=4222, ge=0, le=65535)
    limits: Limits = Limits()

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def save(self, directory: Path) -> None:
        (directory / CONFIG_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> MeshSecurityConfig:
        """Read ``DIR/mesh.json``.

        Raises:
            MeshSecurityError: Missing, unreadable or invalid (the message says which field).
        """
        path = Path(directory) / CONFIG_FILE
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise MeshSecurityError(
                f"{path} not found: create the mesh with 'agentmesh mesh init --dir {directory}'"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MeshSecurityError(f"{path} is unreadable: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(root)"
            raise MeshSecurityError(f"{path}: {where}: {first['msg']}") from None


def _size(n: int) -> str:
    return f"{n // MiB}MB" if n % MiB == 0 else str(n)


def render_server_config(
    config: MeshSecurityConfig,
    directory: Path,
    *,
    account_jwt: str,
    system_jwt: str,
    port: int | None = None,
    links: MeshLinks | None = None,
    link_jwts: Mapping[str, str] | None = None,
) -> str:
    """A nats-server 2.9 config: operator mode, full resolver, JetStream, limits.

    ``port`` overrides the configured port (``-1``: a random one, for tests).
    ``links`` adds the federation leaf-node listener and remotes; ``link_jwts``
    (account key -> JWT) preloads the link accounts.
    """
    limits = config.limits
    listen_port = config.port if port is None else port
    base = directory.resolve()
    return f"""# Written by `agentmesh mesh init` for mesh "{config.mesh}".
# Secure mode: every client proves an nkey that a JWT signed by the mesh
# authority names; each agent may only use the subjects docs/broker.md lists.
server_name: "agentmesh-{config.mesh}"
listen: "{config.host}:{listen_port}"
max_payload: {_size(limits.agent_max_payload)}
max_connections: {max(limits.account_max_connections, 64) * 2}
write_deadline: "10s"
# An agent's CONNECT carries its user JWT, whose permissions list its subjects.
max_control_line: 32KB

jetstream {{
  store_dir: "{base / "jetstream"}"
  max_memory_store: {_size(max(limits.memory_storage, MiB))}
  max_file_store: {_size(limits.disk_storage)}
}}

operator: "{base / "operator.jwt"}"
system_account: {config.system_account}

# The authority pushes account updates (revocations) to $SYS.REQ.CLAIMS.UPDATE;
# the server keeps the newest in jwt/ across restarts.
resolver {{
  type: full
  dir: "{base / "jwt"}"
  allow_delete: false
  interval: "2m"
}}

resolver_preload {{
  {config.account}: "{account_jwt}"
  {config.system_account}: "{system_jwt}"{_preloads(link_jwts or {})}
}}
{_leafnodes(links or MeshLinks())}"""


def _preloads(jwts: Mapping[str, str]) -> str:
    return "".join(f'\n  {key}: "{token}"' for key, token in sorted(jwts.items()))


def _leafnodes(links: MeshLinks) -> str:
    """The leafnodes block of federation links (empty without any)."""
    if links.leaf_listen is None and not links.remotes:
        return ""
    lines = [
        "",
        "# Federation links (agentmesh federation link; docs/federation.md).",
        "leafnodes {",
    ]
    if links.leaf_listen is not None:
        lines.append(f'  listen: "{links.leaf_listen}"')
    if links.remotes:
        lines.append("  remotes: [")
        for remote in links.remotes:
            lines.append(
                f'    {{ url: "{remote.url}", credentials: "{remote.credentials}", '
                f"account: {remote.account} }}  # {remote.partner}"
            )
        lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = [
    "CONFIG_FILE",
    "SERVER_CONFIG_FILE",
    "Limits",
    "MeshSecurityConfig",
    "render_server_config",
]
