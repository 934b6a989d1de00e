"""``agentmesh federation``: agreements between organizations, their links and credentials.

Two organizations, each with its own secured mesh (``agentmesh mesh init``):

    agentmesh federation link-key --mesh-dir acme            # each side: its server's link key
    agentmesh federation propose terms.json --identity acme-authority.id --out agreement.json
    agentmesh federation sign agreement.json --identity globex-authority.id   # the partner
    agentmesh federation show agreement.json
    agentmesh federation link agreement.json --mesh-dir acme --identity ... --listen 0.0.0.0:7422
    agentmesh federation link agreement.json --mesh-dir globex --identity ... \\
        --connect nats-leaf://acme.example:7422 --leaf-jwt globex.jwt   # the JWT acme issued
    agentmesh federation issue-membership did:key:z6Mk... --mesh-dir globex --identity ... \\
        --out bob.membership
    agentmesh federation steward --mesh-dir acme --identity ...          # each side, long-running
    agentmesh federation revoke-membership did:key:z6Mk... --mesh-dir globex --identity ...
    agentmesh federation revoke agreement.json --mesh-dir acme --identity ... --reason breach
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from agentmesh.cli.connection import PassphraseEnv, load_or_exit, nats_option
from agentmesh.cli.failures import CommandFailed, failed, reading, usage
from agentmesh.cli.logs import log_reconnects
from iatp.did import is_did
from iatp.errors import AgentMeshError
from iatp.identity import AgentIdentity

if TYPE_CHECKING:
    from agentmesh.federation.agreement import FederationAgreement

app = typer.Typer(
    help="Federate with other organizations: agreements, links, membership credentials.",
    no_args_is_help=True,
)
out = Console(emoji=False, highlight=False)

MeshDirOpt = Annotated[
    Path, typer.Option("--mesh-dir", help="This organization's mesh directory ('mesh init').")
]
AuthorityId = Annotated[
    Path, typer.Option("--identity", help="This organization's authority identity file.")
]
AgreementFile = Annotated[Path, typer.Argument(help="Agreement file (JSON).")]
Push = Annotated[
    bool,
    typer.Option(
        "--push/--no-push",
        help="Also hand it to the running server now (as the authority; needs the server).",
    ),
]
NatsUrl = Annotated[str | None, nats_option(help="Server URL (default: the mesh's mesh.json).")]


def _agreement(path: Path) -> FederationAgreement:
    from agentmesh.federation.agreement import decode_agreement

    with reading(path, "agreement file"):
        data = path.read_bytes()
    try:
        return decode_agreement(data)
    except AgentMeshError as exc:
        raise failed(exc, f"{path} is not an agreement ('agentmesh federation propose')") from None


@app.command("link-key")
def link_key(mesh_dir: MeshDirOpt) -> None:
    """Print this organization's server link key (a DID; created on first use).

    Name it as your party's link_key in the agreement terms.
    """
    from agentmesh.broker.config import MeshSecurityConfig
    from agentmesh.federation.orgdir import OrgDirectory

    try:
        MeshSecurityConfig.load(mesh_dir)  # a key written anywhere else would be lost
        out.print(OrgDirectory(mesh_dir).link_identity().did)
    except AgentMeshError as exc:
        raise failed(exc) from None


@app.command("propose")
def propose(
    terms: Annotated[Path, typer.Argument(help="Agreement terms (JSON or YAML, no signatures).")],
    identity: AuthorityId,
    output: Annotated[Path, typer.Option("--out", help="Where to write the signed proposal.")],
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Sign agreement terms as one party's authority (the partner signs next).

    Terms are the agreement's fields: id, version, parties (org, name, authority,
    link_key, exports, ceilings), not_before_ms, not_after_ms (docs/federation.md).
    """
    from agentmesh.federation.agreement import FederationAgreement

    try:
        with reading(terms, "terms file"):
            raw = yaml.safe_load(terms.read_text(encoding="utf-8"))
        agreement = FederationAgreement.model_validate_json(json.dumps(raw))
    except (yaml.YAMLError, TypeError) as exc:
        raise usage(
            f"terms file {terms} is not JSON or YAML terms: {exc}", "see docs/federation.md"
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "terms"
        raise CommandFailed(
            f"{where}: {first['msg']}", "see docs/federation.md", reason="agreement_invalid"
        ) from None
    authority = load_or_exit(identity, passphrase_env)
    try:
        signed = agreement.model_copy(update={"signatures": {}}).signed_by(authority)
    except AgentMeshError as exc:
        raise failed(exc, "Sign with the authority one of the parties names.") from None
    output.write_bytes(signed.encode() + b"\n")
    _show(signed)
    out.print(f"proposal written to {output}; the partner runs 'agentmesh federation sign'")


@app.command("sign")
def sign(
    agreement_file: AgreementFile,
    identity: AuthorityId,
    output: Annotated[
        Path | None, typer.Option("--out", help="Where to write it (default: in place).")
    ] = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Add this authority's signature to an agreement (it is in force once both signed)."""
    agreement = _agreement(agreement_file)
    authority = load_or_exit(identity, passphrase_env)
    try:
        signed = agreement.signed_by(authority)
    except AgentMeshError as exc:
        raise failed(exc, "Sign with the authority one of the parties names.") from None
    (output or agreement_file).write_bytes(signed.encode() + b"\n")
    _show(signed)


@app.command("show")
def show(agreement_file: AgreementFile) -> None:
    """Print an agreement: parties, exports, ceilings, validity and signature status."""
    _show(_agreement(agreement_file))


def _show(agreement: FederationAgreement) -> None:
    from agentmesh.federation.errors import AgreementError

    try:
        agreement.check_signatures()
        status = "[green]signed by both[/]"
    except AgreementError as exc:
        status = f"[yellow]{exc}[/]"
    out.print(
        f"[bold]agreement {agreement.id}[/] v{agreement.version}  digest {agreement.digest[:16]}"
    )
    out.print(f"valid {agreement.not_before_ms} .. {agreement.not_after_ms} ms; {status}")
    parties = Table(title="parties")
    for column in ("org", "name", "authority", "link key", "ceilings for the other party"):
        parties.add_column(column)
    for p in agreement.parties:
        c = p.ceilings
        budget = "none" if c.daily_budget is None else str(c.daily_budget)
        parties.add_row(
            p.org,
            p.name,
            p.authority,
            p.link_key,
            f"ring >= {c.max_ring}, {c.rate_per_second:g}/s burst {c.burst}, "
            f"daily {budget}, tools {', '.join(c.allowed_tools)}",
        )
    out.print(parties)
    exports = Table(title="exports")
    for column in ("from", "agent", "operations", "capabilities"):
        exports.add_column(column)
    for p in agreement.parties:
        for e in p.exports:
            exports.add_row(p.org, e.agent, ", ".join(e.operations), ", ".join(e.capabilities))
    out.print(exports)


@app.command("link")
def link(
    agreement_file: AgreementFile,
    mesh_dir: MeshDirOpt,
    identity: AuthorityId,
    listen: Annotated[
        str | None,
        typer.Option("--listen", help="HOST:PORT: this server accepts the partner's leaf link."),
    ] = None,
    connect: Annotated[
        str | None,
        typer.Option("--connect", help="nats-leaf://HOST:PORT: connect to the partner's server."),
    ] = None,
    leaf_jwt: Annotated[
        Path | None,
        typer.Option("--leaf-jwt", help="With --connect: the leaf JWT the partner issued you."),
    ] = None,
    push: Push = False,
    nats: NatsUrl = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Compile the agreement into this mesh's broker link (restart the server for the leaf)."""
    from agentmesh.broker.authority import read_jwt
    from agentmesh.federation.operations import link_mesh

    agreement = _agreement(agreement_file)
    authority = load_or_exit(identity, passphrase_env)
    try:
        token = read_jwt(leaf_jwt) if leaf_jwt is not None else None
        result = link_mesh(
            mesh_dir, authority, agreement, listen=listen, connect=connect, leaf_jwt=token
        )
    except AgentMeshError as exc:
        raise failed(exc) from None
    for account in result.links.accounts:
        out.print(
            f"link {account.partner}: account {account.account[:12]}..., "
            f"{len(account.imports)} subjects exported"
        )
    out.print(f"server config rewritten: {result.server_config} (restart nats-server)")
    if result.issued_leaf_jwt is not None:
        out.print(f"hand the partner its leaf JWT: {result.issued_leaf_jwt}")
    if push:
        _online(mesh_dir, authority, nats)


def _online(mesh_dir: Path, authority: AgentIdentity, nats: str | None) -> None:
    from agentmesh.broker.session import authority_session
    from agentmesh.federation.operations import publish_federation, push_links
    from agentmesh.federation.orgdir import OrgDirectory

    async def run() -> tuple[int, int]:
        async with authority_session(mesh_dir, authority, url=nats) as session:
            pushed = await push_links(session)
            written = await publish_federation(
                session.mesh, session.powers.config.mesh, OrgDirectory(mesh_dir)
            )
            return pushed, written

    try:
        pushed, written = asyncio.run(run())
    except AgentMeshError as exc:
        raise failed(exc, "Is the mesh's server running? (--nats URL)") from None
    out.print(f"pushed {pushed} account JWT(s); published {written} federation value(s)")


@app.command("unlink")
def unlink(
    partner: Annotated[str, typer.Argument(help="The partner's org name.")],
    mesh_dir: MeshDirOpt,
    identity: AuthorityId,
    push: Push = True,
    nats: NatsUrl = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Cut the broker link to a partner: nothing of either mesh crosses any more."""
    from agentmesh.federation.operations import unlink_mesh

    authority = load_or_exit(identity, passphrase_env)
    try:
        unlink_mesh(mesh_dir, authority, partner)
    except AgentMeshError as exc:
        raise failed(exc) from None
    out.print(f"link to {partner} removed from the server config")
    if push:
        _online(mesh_dir, authority, nats)


@app.command("revoke")
def revoke(
    agreement_file: AgreementFile,
    mesh_dir: MeshDirOpt,
    identity: AuthorityId,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the signed notice).")],
    push: Push = True,
    nats: NatsUrl = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """End an agreement for good (either party): every node of both sides stops at once."""
    from agentmesh.federation import operations

    agreement = _agreement(agreement_file)
    authority = load_or_exit(identity, passphrase_env)
    try:
        notice = operations.revoke(mesh_dir, authority, agreement, reason=reason)
    except AgentMeshError as exc:
        raise failed(exc) from None
    out.print(f"agreement {notice.agreement_id} revoked by {notice.issuer}")
    if push:
        _online(mesh_dir, authority, nats)
    out.print("cut the broker link too: agentmesh federation unlink PARTNER --mesh-dir ...")


@app.command("issue-membership")
def issue_membership(
    agent: Annotated[str, typer.Argument(help="The agent's DID.")],
    mesh_dir: MeshDirOpt,
    identity: AuthorityId,
    output: Annotated[Path, typer.Option("--out", help="Where to write the credential.")],
    role: Annotated[
        list[str] | None, typer.Option("--role", help="Role claim (repeatable).")
    ] = None,
    capability: Annotated[
        list[str] | None, typer.Option("--capability", help="Capability claim (repeatable).")
    ] = None,
    days: Annotated[float, typer.Option("--days", help="Validity in days.")] = 30.0,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Issue an agent this organization's membership credential (a W3C JWT-VC, didkit)."""
    from agentmesh.federation.operations import issue_member

    if not is_did(agent):
        raise typer.BadParameter(f"{agent!r} is not an Ed25519 did:key", param_hint="AGENT")
    authority = load_or_exit(identity, passphrase_env)
    try:
        token = asyncio.run(
            issue_member(
                mesh_dir,
                authority,
                agent,
                roles=tuple(role or ()),
                capabilities=tuple(capability or ()),
                days=days,
            )
        )
    except AgentMeshError as exc:
        raise failed(exc) from None
    output.write_text(token + "\n")
    out.print(f"membership of {agent} written to {output}")
    # didkit's resolver has crashed in interpreter teardown: leave without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@app.command("revoke-membership")
def revoke_membership(
    agent: Annotated[str, typer.Argument(help="The agent's DID.")],
    mesh_dir: MeshDirOpt,
    identity: AuthorityId,
    push: Push = True,
    nats: NatsUrl = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Revoke an agent's membership: a new signed status list, shipped to every partner."""
    from agentmesh.federation.operations import revoke_member

    authority = load_or_exit(identity, passphrase_env)
    try:
        status = revoke_member(mesh_dir, authority, agent)
    except AgentMeshError as exc:
        raise failed(exc) from None
    out.print(f"status list v{status.version}: {len(status.revoked)} revoked")
    if push:
        _online(mesh_dir, authority, nats)


@app.command("steward")
def steward(
    mesh_dir: MeshDirOpt,
    identity: AuthorityId,
    nats: NatsUrl = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds.")
    ] = None,
    resync: Annotated[float, typer.Option("--resync", help="Seconds between re-shipments.")] = 10.0,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Run this organization's steward until SIGTERM (JSON lines on stdout).

    It publishes the organization's agreements and status list to its mesh, ships
    its status list, exported cards and quarantine orders to every partner's
    steward at once on every change, and stores what partners ship (verified).
    """
    from agentmesh.federation.service import run_steward
    from agentmesh.node.runner import EventPrinter, install_stop_signals

    authority = load_or_exit(identity, passphrase_env)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(stop)
        log_reconnects()
        if duration is not None:
            asyncio.get_running_loop().call_later(duration, stop.set)
        await run_steward(
            mesh_dir,
            authority,
            url=nats,
            stop=stop,
            emit=EventPrinter(sys.stdout),
            resync_every=resync,
        )

    try:
        asyncio.run(main())
    except AgentMeshError as exc:
        raise failed(exc, "Is the mesh's server running? (--nats URL)") from None
