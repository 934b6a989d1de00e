"""``agentmesh registry``: list, show, find, revoke and approve agents of a running mesh.

Every command connects to the mesh's NATS server, loads the directory from
JetStream KV (each card verified again on read), answers, and leaves. Add
``--json`` to ``list``, ``show`` and ``find`` for machine-readable output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from agentmesh.cli.connection import (
    IdentityFile,
    JournalFile,
    JwtFile,
    MeshDir,
    PassphraseEnv,
    journal_path,
    load_or_exit,
    mesh_url,
    nats_option,
    secure_config,
)
from agentmesh.cli.failures import CommandFailed, explain, reading
from agentmesh.directory import Directory, RevocationList
from agentmesh.errors import (
    AccessRevoked,
    AuthenticationFailed,
    PermissionDenied,
    TransportError,
)
from agentmesh.transport.factory import make_transport
from iatp.did import is_did
from iatp.identity import AgentIdentity
from registry.card import AgentCard
from registry.revocation import RevocationAuthorities, RevocationKind, sign_revocation

app = typer.Typer(
    help="Inspect the agent directory of a mesh; revoke, quarantine and re-approve agents.",
    no_args_is_help=True,
)
out = Console(emoji=False, highlight=False)
err = Console(stderr=True, emoji=False, highlight=False)

Nats = Annotated[
    str | None,
    nats_option(help="NATS server URL of the mesh, e.g. nats://127.0.0.1:4222."),
]
Mesh = Annotated[str, typer.Option("--mesh", help="Mesh name (as given to 'node run').")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Authority = Annotated[
    list[str] | None,
    typer.Option("--authority", help="Mesh authority DID to honour when showing status."),
]
T = TypeVar("T")

if TYPE_CHECKING:
    from agentmesh.transport.nats import NatsConfig


@dataclass(frozen=True, slots=True)
class _Access:
    """How this command reaches the mesh (open server, agent JWT or authority)."""

    url: str
    config: NatsConfig | None = None
    mesh_dir: Path | None = None
    identity: AgentIdentity | None = None


def _access(
    nats: str | None,
    identity: Path | None,
    jwt: Path | None,
    passphrase_env: str | None,
    mesh_dir: Path | None = None,
    loaded: AgentIdentity | None = None,
) -> _Access:
    me = loaded or (load_or_exit(identity, passphrase_env) if identity is not None else None)
    config = secure_config(me, jwt, mesh_dir)
    return _Access(mesh_url(nats, mesh_dir), config, mesh_dir, me)


@contextlib.asynccontextmanager
async def _open(
    access: _Access,
    mesh: str,
    authorities: tuple[str, ...] = (),
    pin_signer: AgentIdentity | None = None,
    journal: Path | None = None,
) -> AsyncIterator[tuple[Directory, RevocationList]]:
    async with make_transport(access.url, name="registry-cli", config=access.config) as transport:
        auth = RevocationAuthorities(mesh=frozenset(authorities))
        revocations = RevocationList(transport, mesh=mesh, authorities=auth, journal=journal)
        directory = Directory(
            transport,
            mesh=mesh,
            revocations=revocations,
            pin_signer=pin_signer,
            pin_authorities=frozenset(authorities),
        )
        await revocations.start()
        try:
            await directory.start()
            try:
                yield directory, revocations
            finally:
                await directory.aclose()
        finally:
            await revocations.aclose()


def _run(work: Callable[[], Coroutine[object, object, T]]) -> T:
    try:
        return asyncio.run(work())
    except (AuthenticationFailed, PermissionDenied, AccessRevoked) as exc:
        failure = explain(exc)
        raise CommandFailed(
            f"refused by the broker: {exc}", failure.todo, reason=exc.code
        ) from None
    except (TransportError, OSError) as exc:
        failure = explain(exc)
        raise CommandFailed(
            f"cannot reach the mesh: {failure.what}",
            failure.todo or "Is nats-server running (with -js)?",
            reason=failure.reason,
        ) from None


def _check_did(did: str) -> None:
    if not is_did(did):
        raise typer.BadParameter(f"{did!r} is not an Ed25519 did:key", param_hint="DID")


def _status(directory: Directory, did: str) -> str:
    assert directory.revocations is not None
    status = directory.revocations.status(did)
    if status is not None and status is not RevocationKind.RELEASED:
        return status.value
    if directory.rotations.statement_from(did) is not None:
        return "rotated"
    return "held (drift)" if directory.pins.is_held(did) else "ok"


def _card_json(directory: Directory, card: AgentCard) -> dict[str, object]:
    return {**card.model_dump(mode="json"), "status": _status(directory, card.did)}


def _table(directory: Directory, cards: list[AgentCard], title: str) -> Table:
    table = Table(title=title)
    for column in ("DID", "name", "capabilities", "expires in", "status"):
        table.add_column(column)
    now = directory.clock.now_ms()
    for card in cards:
        caps = ", ".join(f"{c.name}@{c.version}" for c in card.capabilities) or "-"
        left = f"{(card.expires_at_ms - now) / 1000:.0f} s"
        table.add_row(card.did, card.display_name, caps, left, _status(directory, card.did))
    return table


@app.command("list")
def list_agents(
    nats: Nats = None,
    mesh: Mesh = "agentmesh",
    as_json: AsJson = False,
    authority: Authority = None,
    identity: IdentityFile = None,
    jwt: JwtFile = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Every live, verified card in the mesh's directory."""
    access = _access(nats, identity, jwt, passphrase_env)

    async def work() -> None:
        async with _open(access, mesh, tuple(authority or ())) as (directory, _):
            cards = directory.cards()
            if as_json:
                typer.echo(json.dumps([_card_json(directory, c) for c in cards], indent=2))
            else:
                out.print(_table(directory, cards, f"{len(cards)} agent(s) in mesh {mesh!r}"))

    _run(work)


@app.command("show")
def show(
    did: Annotated[str, typer.Argument(help="The agent's DID.")],
    nats: Nats = None,
    mesh: Mesh = "agentmesh",
    as_json: AsJson = False,
    authority: Authority = None,
    identity: IdentityFile = None,
    jwt: JwtFile = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """One agent's card, revocation entries, capability drifts and rotations."""
    _check_did(did)
    access = _access(nats, identity, jwt, passphrase_env)

    async def work() -> int:
        async with _open(access, mesh, tuple(authority or ())) as (directory, revocations):
            card = directory.lookup(did)
            report: dict[str, object] = {
                "did": did,
                "current_did": directory.rotations.current(did),
                "status": _status(directory, did),
                "card": card.model_dump(mode="json") if card else None,
                "revocations": [
                    {
                        "kind": e.kind.value,
                        "issuer": e.issuer,
                        "reason": e.reason,
                        "issued_at_ms": e.issued_at_ms,
                    }
                    for e in revocations.entries(did)
                ],
                "drifts": [
                    {"capability": f"{d.name}@{d.version}", "pinned": d.pinned, "seen": d.seen}
                    for d in directory.drifts(did)
                ],
            }
            typer.echo(json.dumps(report, indent=None if as_json else 2))
            if card is None:
                err.print("no live card (never registered, expired, or deregistered)")
                return 3
            return 0

    raise typer.Exit(_run(work))


@app.command("find")
def find(
    capability: Annotated[str, typer.Argument(help="Capability name.")],
    nats: Nats = None,
    mesh: Mesh = "agentmesh",
    version: Annotated[str | None, typer.Option("--version", help="Only this version.")] = None,
    as_json: AsJson = False,
    authority: Authority = None,
    identity: IdentityFile = None,
    jwt: JwtFile = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Agents that offer CAPABILITY and may be routed to (not blocked, rotated or held)."""
    access = _access(nats, identity, jwt, passphrase_env)

    async def work() -> None:
        async with _open(access, mesh, tuple(authority or ())) as (directory, _):
            cards = directory.find(capability, version=version)
            if as_json:
                typer.echo(json.dumps([_card_json(directory, c) for c in cards], indent=2))
            else:
                out.print(_table(directory, cards, f"{len(cards)} agent(s) offer {capability!r}"))

    _run(work)


@app.command("revoke")
def revoke(
    did: Annotated[str, typer.Argument(help="The agent to revoke (or quarantine, release).")],
    identity: Annotated[
        Path, typer.Option("--identity", help="Issuer's identity file (signs the entry).")
    ],
    nats: Nats = None,
    mesh: Mesh = "agentmesh",
    reason: Annotated[str, typer.Option("--reason", help="Why (audited on every node).")] = "",
    kind: Annotated[
        RevocationKind, typer.Option("--kind", help="revoked (final), quarantined or released.")
    ] = RevocationKind.REVOKED,
    passphrase_env: PassphraseEnv = None,
    jwt: JwtFile = None,
    mesh_dir: MeshDir = None,
    journal: JournalFile = None,
) -> None:
    """Sign and store a revocation entry; every node that trusts the issuer enforces it.

    The issuer must be a mesh authority the nodes were started with ('node run
    --authority'), the agent's organization authority, or the agent itself
    (revoking its own compromised key). With --mesh-dir (a secured mesh, the
    issuer its authority) the broker also disconnects and refuses the agent, or
    lets it back in on release.
    """
    _check_did(did)
    issuer = load_or_exit(identity, passphrase_env)
    access = _access(nats, None, jwt, passphrase_env, mesh_dir, loaded=issuer)

    async def work() -> None:
        log = journal_path(journal, mesh_dir)
        async with _open(access, mesh, (issuer.did,), journal=log) as (directory, revocations):
            entry = sign_revocation(
                issuer,
                subject=did,
                kind=kind,
                reason=reason,
                issued_at_ms=directory.clock.now_ms(),
                sequence=len(revocations.entries(did)),
            )
            await revocations.issue(entry, signer=issuer)
            if access.mesh_dir is not None:
                from agentmesh.broker.session import push_revocations

                await push_revocations(access.mesh_dir, issuer, revocations, url=access.url)
        at_broker = " and at the broker" if access.mesh_dir is not None else ""
        out.print(
            f"{kind.value}: {did} (signed by {issuer.did}, entry {entry.entry_id}){at_broker}"
        )

    _run(work)


@app.command("approve")
def approve(
    did: Annotated[str, typer.Argument(help="The agent whose changed capabilities to accept.")],
    identity: Annotated[
        Path,
        typer.Option("--identity", help="The mesh authority's identity file (signs the pins)."),
    ],
    nats: Nats = None,
    mesh: Mesh = "agentmesh",
    jwt: JwtFile = None,
    mesh_dir: MeshDir = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Accept an agent's changed capability descriptors after a drift (rug-pull) alert.

    The new pins are signed by the identity; nodes follow them if it is one of
    their authorities ('node run --authority'). On a secured mesh connect as the
    authority (--mesh-dir) or an operator (--jwt).
    """
    _check_did(did)
    signer = load_or_exit(identity, passphrase_env)
    access = _access(nats, None, jwt, passphrase_env, mesh_dir, loaded=signer)

    async def work() -> None:
        async with _open(access, mesh, (signer.did,), pin_signer=signer) as (directory, _):
            held = directory.pins.is_held(did)
            card = await directory.approve(did)
        note = "" if held else " (it was not held)"
        out.print(f"approved {card.did}: {len(card.capabilities)} capability pin(s){note}")

    _run(work)


@app.command("republish")
def republish(
    identity: Annotated[
        Path, typer.Option("--identity", help="The issuer's identity file (signs the head).")
    ],
    nats: Nats = None,
    mesh: Mesh = "agentmesh",
    journal: JournalFile = None,
    jwt: JwtFile = None,
    mesh_dir: MeshDir = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Put the issuer's revocation log back into the store (after a purge or a delete).

    Every entry of the journal (--journal, or the mesh directory's) that is missing
    from the store is written back under its own key, and the issuer's head is
    signed and broadcast again. Nodes that found the log incomplete recover.
    """
    from agentmesh.directory.revocation_log import read_journal

    issuer = load_or_exit(identity, passphrase_env)
    access = _access(nats, None, jwt, passphrase_env, mesh_dir, loaded=issuer)
    path = journal_path(journal, mesh_dir)
    records = []
    if path is not None and path.exists():
        with reading(path, "--journal"):
            records = read_journal(path)

    async def work() -> int:
        transport_config = access.config
        async with make_transport(access.url, name="republish", config=transport_config) as t:
            auth = RevocationAuthorities(mesh=frozenset({issuer.did}))
            revocations = RevocationList(t, mesh=mesh, authorities=auth, journal=None)
            await revocations.start(require_complete=False)  # the log is what we repair
            try:
                return await revocations.republish(issuer, records)
            finally:
                await revocations.aclose()

    restored = _run(work)
    noun = "entry" if restored == 1 else "entries"
    out.print(f"republished: {restored} {noun} restored; head signed")
