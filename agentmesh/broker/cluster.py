"""Configs of a local nats-server cluster with replicated JetStream.

``agentmesh mesh cluster-init DIR`` writes one config per server::

    s1.conf, s2.conf, s3.conf   listen, cluster routes, JetStream store and sync
    s1/jetstream/ ...           each server's own store
    cluster.json                the plan (ports, sync), read back by tools and tests

Every server routes to every other (a full mesh of routes, as NATS recommends for
small clusters); JetStream elects a meta leader once a majority is up. Nodes list
every server's client URL (``--nats nats://h:p1,nats://h:p2,nats://h:p3``) and fail
over between them; buckets and streams are created with three replicas on a
cluster (:attr:`agentmesh.transport.nats.NatsConfig.replicas`).

``sync`` is JetStream's ``sync_interval``: ``always`` fsyncs every write before
the acknowledgement (no acknowledged write lost to a power cut of a majority;
costs latency, see ``docs/deployment.md``); a duration (``"1s"``) bounds the
window; ``default`` leaves the server's own (two minutes, and the line is left
out so servers older than 2.10, which do not know the setting, accept the file).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from agentmesh.broker.errors import MeshSecurityError

PLAN_FILE = "cluster.json"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")
MAX_SERVERS = 9


class ClusterConfigError(MeshSecurityError):
    """A cluster plan that cannot work (ports, names, sync setting)."""

    code = "cluster_config"


@dataclass(frozen=True, slots=True)
class ClusterServer:
    """One server of the plan."""

    name: str
    host: str
    client_port: int
    cluster_port: int

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    @property
    def route(self) -> str:
        return f"nats-route://{self.host}:{self.cluster_port}"


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """A cluster of ``len(servers)`` servers named ``cluster`` with one sync setting."""

    cluster: str
    sync: str
    servers: tuple[ClusterServer, ...]

    @property
    def urls(self) -> str:
        """The ``--nats`` value that lists every server."""
        return ",".join(server.url for server in self.servers)

    def config_path(self, directory: Path, server: ClusterServer) -> Path:
        return directory / f"{server.name}.conf"


def plan_cluster(
    *,
    size: int = 3,
    host: str = "127.0.0.1",
    client_ports: list[int] | None = None,
    cluster_ports: list[int] | None = None,
    port: int = 4222,
    cluster_port: int = 6222,
    cluster: str = "agentmesh",
    sync: str = "always",
) -> ClusterPlan:
    """A plan: consecutive ports from ``port`` and ``cluster_port`` unless listed.

    Raises:
        ClusterConfigError: fewer than 3 or more than 9 servers, ports that clash
            or are out of range, a bad cluster name or sync setting.
    """
    if not 3 <= size <= MAX_SERVERS:
        raise ClusterConfigError(
            f"a cluster needs 3..{MAX_SERVERS} servers (JetStream needs a majority), not {size}"
        )
    if not _NAME.match(cluster):
        raise ClusterConfigError(f"cluster name {cluster!r} must be [A-Za-z0-9_-], 1..64 chars")
    if sync not in ("always", "default") and not _DURATION.match(sync):
        raise ClusterConfigError(
            f"sync {sync!r} must be 'always', 'default' or a duration such as '1s'"
        )
    clients = client_ports or [port + i for i in range(size)]
    routes = cluster_ports or [cluster_port + i for i in range(size)]
    if len(clients) != size or len(routes) != size:
        raise ClusterConfigError(f"give {size} client ports and {size} cluster ports")
    every = [*clients, *routes]
    if len(set(every)) != len(every) or not all(0 < p < 65536 for p in every):
        raise ClusterConfigError(f"ports must be distinct and within 1..65535: {every}")
    servers = tuple(ClusterServer(f"s{i + 1}", host, clients[i], routes[i]) for i in range(size))
    return ClusterPlan(cluster, sync, servers)


def render_cluster_server_config(plan: ClusterPlan, server: ClusterServer, store: Path) -> str:
    """One server's config: its listen address, store, sync setting and every route."""
    sync = "" if plan.sync == "default" else f"\n  sync_interval: {plan.sync}"
    return f"""# Written by `agentmesh mesh cluster-init`: {server.name} of cluster {plan.cluster}.
server_name: "{server.name}"
listen: "{server.host}:{server.client_port}"

jetstream {{
  store_dir: "{store}"{sync}
}}
{_cluster_block(plan, server)}"""


def _one_line(text: str, pattern: str, replacement: str) -> str:
    changed, count = re.subn(pattern, lambda _: replacement, text, count=1, flags=re.MULTILINE)
    if count != 1:
        raise ClusterConfigError(
            f"the secured mesh's server config has no line matching {pattern!r}: "
            "re-render it with 'agentmesh mesh init'"
        )
    return changed


def render_secured_cluster_server_config(
    secured: str, plan: ClusterPlan, server: ClusterServer, server_dir: Path
) -> str:
    """The secured mesh's server config (``mesh init``) as one server of the cluster.

    Same operator, accounts, limits and links; this server's own name, listen
    address, JetStream store (with the plan's sync setting) and resolver
    directory; routes to every other server. Routes carry no client identity:
    keep the route ports on a private network (or add cluster TLS).
    """
    sync = "" if plan.sync == "default" else f"\n  sync_interval: {plan.sync}"
    text = _one_line(secured, r"^server_name: .*$", f'server_name: "{server.name}"')
    text = _one_line(text, r"^listen: .*$", f'listen: "{server.host}:{server.client_port}"')
    text = _one_line(text, r"^  store_dir: .*$", f'  store_dir: "{server_dir / "jetstream"}"{sync}')
    text = _one_line(text, r"^  dir: .*$", f'  dir: "{server_dir / "jwt"}"')
    return text + _cluster_block(plan, server)


def _cluster_block(plan: ClusterPlan, server: ClusterServer) -> str:
    routes = "\n".join(f"    {peer.route}" for peer in plan.servers if peer != server)
    return f"""
cluster {{
  name: "{plan.cluster}"
  listen: "{server.host}:{server.cluster_port}"
  routes: [
{routes}
  ]
}}
"""


def write_cluster(directory: Path, plan: ClusterPlan, *, secured: str | None = None) -> list[Path]:
    """Write every server's config (and ``cluster.json``) into ``directory``.

    ``secured`` is a secured mesh's ``nats-server.conf`` (``mesh init``): each
    server then runs it, in operator mode, as a member of the cluster.

    Raises:
        ClusterConfigError: ``directory`` already holds a cluster plan, or
            ``secured`` is not a config ``mesh init`` wrote.
    """
    directory = directory.resolve()
    if (directory / PLAN_FILE).exists():
        raise ClusterConfigError(
            f"{directory} already holds a cluster ({PLAN_FILE}): choose an empty directory"
        )
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    texts = {}
    for server in plan.servers:
        server_dir = directory / server.name
        texts[server] = (
            render_cluster_server_config(plan, server, server_dir / "jetstream")
            if secured is None
            else render_secured_cluster_server_config(secured, plan, server, server_dir)
        )
    for server, text in texts.items():
        for sub in ("jetstream", "jwt"):
            (directory / server.name / sub).mkdir(parents=True, exist_ok=True)
        path = plan.config_path(directory, server)
        path.write_text(text)
        path.chmod(0o600)
        written.append(path)
    (directory / PLAN_FILE).write_text(json.dumps(asdict(plan), indent=2) + "\n")
    return written


def load_cluster(directory: Path) -> ClusterPlan:
    """Read ``cluster.json`` back.

    Raises:
        ClusterConfigError: missing or malformed.
    """
    path = directory / PLAN_FILE
    try:
        raw = json.loads(path.read_text())
        servers = tuple(ClusterServer(**entry) for entry in raw["servers"])
        return ClusterPlan(str(raw["cluster"]), str(raw["sync"]), servers)
    except FileNotFoundError:
        raise ClusterConfigError(
            f"no {PLAN_FILE} in {directory}: run 'agentmesh mesh cluster-init' first"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ClusterConfigError(f"{path} is not a cluster plan: {exc}") from None


__all__ = [
    "PLAN_FILE",
    "ClusterConfigError",
    "ClusterPlan",
    "ClusterServer",
    "load_cluster",
    "plan_cluster",
    "render_cluster_server_config",
    "render_secured_cluster_server_config",
    "write_cluster",
]
