"""``agentmesh mesh``: create a secured mesh, issue agents' broker credentials, run its warden.

A secured mesh lets nobody onto the broker without a key its authority named:

    agentmesh identity new --out authority.id
    agentmesh mesh init --dir mesh --identity authority.id
    nats-server -c mesh/nats-server.conf &
    agentmesh mesh provision --dir mesh --identity authority.id
    agentmesh mesh add-agent did:key:z6Mk... --dir mesh --identity authority.id --out alice.jwt
    agentmesh node run --identity alice.id --jwt alice.jwt --nats nats://127.0.0.1:4222
    agentmesh mesh warden --dir mesh --identity authority.id    # broker follows revocations

``agentmesh mesh cluster-init --dir cluster`` writes a local 3-server cluster instead
(replicated JetStream; docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from agentmesh.cli.connection import PassphraseEnv, load_or_exit, nats_option
from agentmesh.cli.failures import failed, usage
from agentmesh.cli.logs import log_reconnects
from agentmesh.cli.passphrase import obtain_passphrase
from iatp.did import is_did
from iatp.errors import AgentMeshError, KeystoreError
from iatp.identity import AgentIdentity
from iatp.keystore import load_identity, read_keystore_did

if TYPE_CHECKING:
    from agentmesh.directory.revocations import RevocationList

app = typer.Typer(
    help="Secure a mesh at the broker: NATS JWT auth from the agents' own DIDs.",
    no_args_is_help=True,
)
out = Console(emoji=False, highlight=False)

Dir = Annotated[Path, typer.Option("--dir", help="The mesh's directory (from 'mesh init').")]
AuthorityId = Annotated[
    Path, typer.Option("--identity", help="The mesh authority's identity file.")
]
NatsUrl = Annotated[
    str | None,
    nats_option(help="Server URL (default: the one in the mesh's mesh.json)."),
]


@app.command("init")
def init(
    directory: Dir,
    identity: AuthorityId,
    mesh: Annotated[str, typer.Option("--mesh", help="Mesh name (one token).")] = "agentmesh",
    host: Annotated[str, typer.Option("--host", help="Address the server listens on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="Client port of the server.")] = 4222,
    max_payload: Annotated[
        int, typer.Option("--max-payload", help="Largest message an agent may send (bytes).")
    ] = 1024 * 1024,
    max_subscriptions: Annotated[
        int, typer.Option("--max-subscriptions", help="Subscriptions per agent connection.")
    ] = 128,
    disk: Annotated[
        int, typer.Option("--disk-mb", help="JetStream disk for the whole mesh (MiB).")
    ] = 4096,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Create a secured mesh: keys, JWTs and a ready nats-server config in DIR.

    The identity becomes the mesh authority: its key signs the account and every
    agent's user JWT, and its revocations also disconnect agents at the broker.
    """
    from agentmesh.broker.authority import init_mesh
    from agentmesh.broker.config import Limits

    try:
        read_keystore_did(identity)  # a missing or foreign file is news before any prompt
        passphrase = obtain_passphrase(passphrase_env, confirm=False)
        authority = load_identity(identity, passphrase)
        limits = Limits(
            agent_max_payload=max_payload,
            agent_max_subscriptions=max_subscriptions,
            disk_storage=disk * 1024 * 1024,
        )
        config = init_mesh(
            directory, authority, passphrase, mesh=mesh, host=host, port=port, limits=limits
        )
    except KeystoreError as exc:
        raise failed(
            exc, "check the passphrase, or create one: 'agentmesh identity new --out FILE'"
        ) from None
    except AgentMeshError as exc:
        raise failed(exc) from None
    except ValueError as exc:  # pydantic validation of the limits
        raise usage(f"invalid limits: {exc}", "see 'agentmesh mesh init --help'") from None
    out.print(f"[green]secured mesh {config.mesh!r}[/] in {directory} (authority {authority.did})")
    out.print("Next:")
    out.print(f"  nats-server -c {directory}/nats-server.conf &")
    out.print(f"  agentmesh mesh provision --dir {directory} --identity {identity}")
    out.print(
        f"  agentmesh mesh add-agent DID --dir {directory} --identity {identity} --out agent.jwt"
    )
    out.print(f"  agentmesh node run --identity agent.id --jwt agent.jwt --nats {config.url}")


@app.command("cluster-init")
def cluster_init(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to write the servers' configs (empty).")
    ],
    servers: Annotated[int, typer.Option("--servers", help="Servers in the cluster (3..9).")] = 3,
    host: Annotated[str, typer.Option("--host", help="Address every server listens on.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="Client port of s1 (s2: +1, ...).")] = 4222,
    cluster_port: Annotated[
        int, typer.Option("--cluster-port", help="Route port of s1 (s2: +1, ...).")
    ] = 6222,
    name: Annotated[str, typer.Option("--name", help="Cluster name.")] = "agentmesh",
    sync: Annotated[
        str,
        typer.Option(
            "--sync",
            help="JetStream fsync: 'always' (every write before its ack), a duration "
            "('1s'), or 'default' (the server's 2 min; for nats-server < 2.10).",
        ),
    ] = "always",
    mesh_dir: Annotated[
        Path | None,
        typer.Option(
            "--mesh-dir",
            help="A secured mesh ('mesh init'): every server runs its config (JWT auth).",
        ),
    ] = None,
) -> None:
    """Write the configs of a local nats-server cluster with replicated JetStream.

    Buckets and streams the mesh creates on it get three replicas; nodes list
    every server in --nats and fail over between them (docs/deployment.md).
    With --mesh-dir the cluster is secured like the mesh's single server.
    """
    from agentmesh.broker.cluster import plan_cluster, write_cluster
    from agentmesh.broker.config import SERVER_CONFIG_FILE

    try:
        secured = None
        if mesh_dir is not None:
            try:
                secured = (mesh_dir / SERVER_CONFIG_FILE).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise usage(
                    f"cannot read {mesh_dir / SERVER_CONFIG_FILE}: {exc}",
                    "create the mesh first: 'agentmesh mesh init --dir DIR --identity FILE'",
                ) from None
        plan = plan_cluster(
            size=servers, host=host, port=port, cluster_port=cluster_port, cluster=name, sync=sync
        )
        written = write_cluster(directory, plan, secured=secured)
    except AgentMeshError as exc:
        raise failed(exc) from None
    out.print(f"[green]cluster {plan.cluster!r}[/]: {len(written)} servers in {directory}")
    out.print("Start each (nats-server >= 2.10 for --sync always or a duration):")
    for path in written:
        out.print(f"  nats-server -c {path} &")
    out.print("Then give every node all of them:")
    out.print(f"  agentmesh node run --identity agent.id --nats {plan.urls}", soft_wrap=True)


@app.command("add-agent")
def add_agent(
    did: Annotated[str, typer.Argument(help="The agent's DID (its key becomes its NATS user).")],
    directory: Dir,
    identity: AuthorityId,
    output: Annotated[Path, typer.Option("--out", help="Where to write the user JWT.")],
    role: Annotated[
        str,
        typer.Option(
            "--role", help="agent, coordinator (runs sagas), operator (revokes) or observer."
        ),
    ] = "agent",
    topic: Annotated[
        list[str] | None, typer.Option("--topic", help="Topic to publish and subscribe to.")
    ] = None,
    publish_topic: Annotated[
        list[str] | None, typer.Option("--publish-topic", help="Topic to publish to only.")
    ] = None,
    subscribe_topic: Annotated[
        list[str] | None, typer.Option("--subscribe-topic", help="Topic to read only.")
    ] = None,
    expires_in: Annotated[
        float | None, typer.Option("--expires-in", help="Seconds until the JWT expires.")
    ] = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Issue DID's broker credential: a user JWT, signed by the authority, naming DID's key.

    The JWT is public (the agent proves its key to the server on every connect);
    give it to the agent's operator with its identity file.
    """
    from agentmesh.broker.authority import MeshAuthority
    from agentmesh.broker.config import MeshSecurityConfig
    from agentmesh.broker.subject_map import Role, TopicGrants

    if not is_did(did):
        raise typer.BadParameter(f"{did!r} is not an Ed25519 did:key", param_hint="DID")
    try:
        kind = Role(role)
    except ValueError:
        raise typer.BadParameter(
            "one of: " + ", ".join(r.value for r in Role if r is not Role.AUTHORITY),
            param_hint="--role",
        ) from None
    if kind is Role.AUTHORITY:
        raise typer.BadParameter(
            "the authority's JWT is written by 'mesh init'", param_hint="--role"
        )
    authority = load_or_exit(identity, passphrase_env)
    try:
        topics = TopicGrants(
            publish=tuple(topic or ()) + tuple(publish_topic or ()),
            subscribe=tuple(topic or ()) + tuple(subscribe_topic or ()),
        )
        powers = MeshAuthority(MeshSecurityConfig.load(directory), authority, directory=directory)
        token = powers.issue_user(did, kind, topics=topics, expires_in=expires_in)
    except AgentMeshError as exc:
        raise failed(exc) from None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--topic") from None
    output.write_text(token + "\n")
    out.print(f"[green]issued[/] {kind.value} credential for {did} -> {output}")


@app.command("provision")
def provision_stores(
    directory: Dir,
    identity: AuthorityId,
    nats: NatsUrl = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Create the mesh's buckets and streams with their limits (only the authority may)."""
    from agentmesh.broker.provision import provision
    from agentmesh.broker.session import authority_session
    from agentmesh.broker.subject_map import render_stores

    authority = load_or_exit(identity, passphrase_env)

    async def work() -> str:
        async with authority_session(directory, authority, url=nats) as session:
            await provision(session.mesh, session.powers.subjects)
            return render_stores(session.powers.subjects)

    try:
        table = asyncio.run(work())
    except AgentMeshError as exc:
        raise failed(exc, "Is the server running with this mesh's nats-server.conf?") from None
    out.print(table)
    out.print("[green]provisioned[/]: every store exists with the limits above")


@app.command("show")
def show(directory: Dir) -> None:
    """The mesh's public configuration and its subject map."""
    from agentmesh.broker.config import MeshSecurityConfig
    from agentmesh.broker.subject_map import render_subject_map, subject_map

    try:
        config = MeshSecurityConfig.load(directory)
    except AgentMeshError as exc:
        raise failed(exc) from None
    table = Table(title=f"secured mesh {config.mesh!r}")
    table.add_column("field")
    table.add_column("value")
    for name, value in config.model_dump(mode="json").items():
        table.add_row(name, json.dumps(value) if isinstance(value, dict) else str(value))
    out.print(table)
    out.print(render_subject_map(subject_map(config.mesh, config.limits.quotas())))


@app.command("subject-map")
def subject_map_command(
    mesh: Annotated[str, typer.Option("--mesh", help="Mesh name.")] = "agentmesh",
) -> None:
    """Print the subject map (identity kind x subject x pub/sub) as markdown."""
    from agentmesh.broker.subject_map import render_stores, render_subject_map, subject_map

    try:
        smap = subject_map(mesh)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--mesh") from None
    typer.echo(render_subject_map(smap))
    typer.echo(render_stores(smap))


@app.command("sync-revocations")
def sync_revocations(
    directory: Dir,
    identity: AuthorityId,
    nats: NatsUrl = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Push the account JWT once, revoking at the broker every revoked or quarantined agent."""
    authority = load_or_exit(identity, passphrase_env)
    try:
        revoked = asyncio.run(_sync_once(directory, authority, nats))
    except AgentMeshError as exc:
        raise failed(exc) from None
    out.print(f"[green]synced[/]: the broker refuses {revoked} agent(s)")


async def _sync_once(directory: Path, authority: AgentIdentity, url: str | None) -> int:
    from agentmesh.broker.revocation_sync import BrokerRevoker
    from agentmesh.broker.session import authority_session

    async with authority_session(directory, authority, url=url) as session:
        revocations = session.revocation_list()
        async with revocations:
            revoker = BrokerRevoker(session.powers, session.system, revocations)
            await revoker.sync(force=True)
            return len(revoker.pushed or {})


@app.command("warden")
def warden(
    directory: Dir,
    identity: AuthorityId,
    nats: NatsUrl = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds.")
    ] = None,
    resync: Annotated[
        float, typer.Option("--resync", help="Seconds between full re-pushes (repairs).")
    ] = 30.0,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Run the authority's broker warden until SIGTERM.

    It keeps the broker's revocations equal to the mesh's revocation list (any
    revocation or quarantine by a trusted issuer disconnects the agent at once;
    a release lets it back), and it pins every agent's first-seen capabilities,
    which on a secured broker only the authority may write. JSON lines on stdout.
    """
    authority = load_or_exit(identity, passphrase_env)
    try:
        code = asyncio.run(_warden(directory, authority, nats, duration, resync))
    except AgentMeshError as exc:
        raise failed(exc) from None
    raise typer.Exit(code)


async def _keep_log(revocations: RevocationList, authority: AgentIdentity, every: float) -> None:
    """Re-sign and re-announce the authority's revocation head; restore removed entries."""
    while True:
        await asyncio.sleep(every)
        try:
            restored = await revocations.republish(authority)
        except AgentMeshError as exc:
            _emit("revocation_log_repair_failed", error=exc.code, detail=str(exc))
            continue
        if restored:
            _emit("revocation_log_repaired", restored=restored)


def _emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, sort_keys=True) + "\n")
    sys.stdout.flush()


async def _warden(
    directory: Path,
    authority: AgentIdentity,
    url: str | None,
    duration: float | None,
    resync: float,
) -> int:
    from agentmesh.broker.revocation_sync import BrokerRevoker
    from agentmesh.broker.session import authority_session
    from agentmesh.directory import Directory
    from agentmesh.node.runner import install_stop_signals

    stop = asyncio.Event()
    install_stop_signals(stop)
    log_reconnects()
    async with authority_session(directory, authority, url=url) as session:
        revocations = session.revocation_list()
        authority_did = frozenset({authority.did})
        directory_view = Directory(
            session.mesh,
            mesh=session.powers.config.mesh,
            revocations=revocations,
            pin_signer=authority,
            pin_authorities=authority_did,
        )
        async with revocations:
            await directory_view.start()
            revoker = BrokerRevoker(
                session.powers,
                session.system,
                revocations,
                on_push=lambda pushed: _emit("broker_revocations", revoked=sorted(pushed)),
            )
            await revoker.sync(force=True)
            _emit(
                "warden_ready", mesh=session.powers.config.mesh, revoked=len(revoker.pushed or {})
            )
            task = asyncio.create_task(revoker.run(resync_every=resync))
            keeper = asyncio.create_task(_keep_log(revocations, authority, resync))
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=duration)
            finally:
                for running in (task, keeper):
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
                await directory_view.aclose()
            _emit("warden_stopped", pushes=revoker.pushes, failures=revoker.failures)
    return 0
