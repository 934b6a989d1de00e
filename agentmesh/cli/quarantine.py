"""``agentmesh quarantine`` / ``agentmesh release``: the signed kill switch."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from agentmesh.broker.errors import BrokerError
from agentmesh.cli.connection import (
    JournalFile,
    JwtFile,
    MeshDir,
    journal_path,
    load_or_exit,
    mesh_url,
    nats_option,
    secure_config,
)
from agentmesh.cli.failures import explain
from agentmesh.errors import TransportError
from agentmesh.policy.errors import QuarantineOrderError
from iatp.did import is_did
from iatp.identity import AgentIdentity
from registry.revocation import RevocationKind

if TYPE_CHECKING:
    from agentmesh.transport.nats import NatsConfig

out = Console(emoji=False, highlight=False)

Identity = Annotated[
    Path, typer.Option("--identity", help="The authority's identity file (signs the order).")
]
Nats = Annotated[str | None, nats_option(help="NATS server URL (default: --mesh-dir's).")]
Mesh = Annotated[str, typer.Option("--mesh", help="Mesh name.")]
PassphraseEnv = Annotated[
    str | None, typer.Option("--passphrase-env", metavar="VAR", help="Passphrase variable.")
]


async def _send(
    issuer: AgentIdentity,
    did: str,
    kind: RevocationKind,
    reason: str,
    url: str,
    mesh: str,
    config: NatsConfig | None,
    mesh_dir: Path | None,
    journal: Path | None,
) -> None:
    from agentmesh.directory.revocations import RevocationList
    from agentmesh.policy.killswitch import KillSwitch
    from agentmesh.transport.factory import make_transport
    from registry.revocation import RevocationAuthorities

    transport = make_transport(url, name="kill-switch", config=config)
    await transport.connect(timeout=5.0)
    revocations = RevocationList(
        transport,
        mesh=mesh,
        authorities=RevocationAuthorities(mesh=frozenset({issuer.did})),
        node=issuer.did,
        journal=journal,
    )
    try:
        await revocations.start()
        switch = KillSwitch(transport, revocations, mesh=mesh, node=issuer.did)
        if kind is RevocationKind.QUARANTINED:
            await switch.quarantine(issuer, did, reason)
        else:
            await switch.release(issuer, did, reason)
        await transport.flush()
        if mesh_dir is not None:
            from agentmesh.broker.session import push_revocations

            await push_revocations(mesh_dir, issuer, revocations, url=url)
    finally:
        # The order is out once issue() returned; closing must not hold the command up.
        for closing in (revocations.aclose(), transport.aclose()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing, timeout=3.0)


def _order(
    kind: RevocationKind,
    did: str,
    reason: str,
    identity: Path,
    nats: str | None,
    mesh: str,
    passphrase_env: str | None,
    jwt: Path | None,
    mesh_dir: Path | None,
    journal: Path | None,
) -> None:
    if not is_did(did):
        raise typer.BadParameter(f"{did!r} is not an Ed25519 did:key", param_hint="DID")
    issuer = load_or_exit(identity, passphrase_env)
    config = secure_config(issuer, jwt, mesh_dir)
    url = mesh_url(nats, mesh_dir)
    try:
        log = journal_path(journal, mesh_dir)
        asyncio.run(_send(issuer, did, kind, reason, url, mesh, config, mesh_dir, log))
    except (QuarantineOrderError, TransportError, BrokerError) as exc:
        raise explain(exc) from None
    where = " and the broker" if mesh_dir is not None else ""
    out.print(
        f"{kind.value}: {did} (signed by {issuer.did}); nodes that trust it{where} obey at once"
    )


def quarantine(
    did: Annotated[str, typer.Argument(help="The agent to quarantine.")],
    identity: Identity,
    reason: Annotated[str, typer.Option("--reason", help="Why (audited everywhere).")],
    nats: Nats = None,
    mesh: Mesh = "agentmesh",
    passphrase_env: PassphraseEnv = None,
    jwt: JwtFile = None,
    mesh_dir: MeshDir = None,
    journal: JournalFile = None,
) -> None:
    """Sign a quarantine order: nodes that trust you stop routing to and from DID at once.

    The order is broadcast (running nodes obey within milliseconds) and stored
    (nodes that join or restart later obey it too). Nodes trust the DIDs given
    to 'node run --authority'. With --mesh-dir (a secured mesh, you its authority)
    the broker also disconnects DID and refuses it until released.
    """
    _order(
        RevocationKind.QUARANTINED,
        did,
        reason,
        identity,
        nats,
        mesh,
        passphrase_env,
        jwt,
        mesh_dir,
        journal,
    )


def release(
    did: Annotated[str, typer.Argument(help="The agent to release.")],
    identity: Identity,
    reason: Annotated[str, typer.Option("--reason", help="Why (audited everywhere).")],
    nats: Nats = None,
    mesh: Mesh = "agentmesh",
    passphrase_env: PassphraseEnv = None,
    jwt: JwtFile = None,
    mesh_dir: MeshDir = None,
    journal: JournalFile = None,
) -> None:
    """Sign the release of DID's quarantine (an agent can never release itself)."""
    _order(
        RevocationKind.RELEASED,
        did,
        reason,
        identity,
        nats,
        mesh,
        passphrase_env,
        jwt,
        mesh_dir,
        journal,
    )
