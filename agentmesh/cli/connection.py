"""How CLI commands reach a mesh: open, or secured (an identity and its user JWT).

On a secured broker (``agentmesh mesh init``) every connection proves a key the
mesh authority issued a JWT for: agents and observers pass ``--identity FILE
--jwt FILE``; the authority passes ``--mesh-dir DIR`` (its JWTs are there) with
its own ``--identity``. Without either, the connection is anonymous, which only
an open development server accepts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from agentmesh.cli.failures import explain, usage
from agentmesh.cli.passphrase import obtain_passphrase
from agentmesh.transport.subjects import server_urls
from iatp.errors import AgentMeshError, KeystoreError
from iatp.identity import AgentIdentity
from iatp.keystore import load_identity, read_keystore_did

if TYPE_CHECKING:
    from agentmesh.transport.nats import NatsConfig

err = Console(stderr=True, emoji=False, highlight=False)


def check_nats_url(value: str | None) -> str | None:
    """``--nats``: one ``nats://`` (or ``tls://``) URL or a comma-separated cluster list.

    Raises:
        typer.BadParameter: anything else (checked before any work is done).
    """
    if value is None:
        return None
    try:
        server_urls(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{exc} (got {value!r}, e.g. nats://127.0.0.1:4222)", param_hint="--nats"
        ) from None
    return value


def nats_option(help: str) -> Any:
    """A ``--nats URL`` option that refuses a URL the transport would not take."""
    return typer.Option("--nats", help=help, callback=check_nats_url)


JwtFile = Annotated[
    Path | None,
    typer.Option(
        "--jwt",
        help="User JWT for a secured mesh ('agentmesh mesh add-agent'); needs --identity.",
    ),
]
MeshDir = Annotated[
    Path | None,
    typer.Option(
        "--mesh-dir",
        help="A secured mesh's directory ('agentmesh mesh init'): connect as its authority "
        "(--identity is the authority) and also revoke at the broker.",
    ),
]
IdentityFile = Annotated[
    Path | None,
    typer.Option("--identity", help="Identity file that --jwt or --mesh-dir was issued for."),
]
JournalFile = Annotated[
    Path | None,
    typer.Option(
        "--journal",
        help="Append every entry this command stores to FILE (the issuer's copy of its "
        "revocation log, for 'registry republish'; default with --mesh-dir: "
        "DIR/revocations.journal.jsonl).",
    ),
]
PassphraseEnv = Annotated[
    str | None, typer.Option("--passphrase-env", metavar="VAR", help="Passphrase variable.")
]


def load_or_exit(path: Path, passphrase_env: str | None) -> AgentIdentity:
    """The identity in ``path`` (asks for the passphrase).

    Raises:
        CommandFailed: the file does not open (exit 2, with what to check).
    """
    try:
        read_keystore_did(path)  # a missing or foreign file is news before any prompt
        return load_identity(path, obtain_passphrase(passphrase_env, confirm=False))
    except KeystoreError as exc:
        raise explain(exc) from None


def secure_config(
    identity: AgentIdentity | None, jwt: Path | None, mesh_dir: Path | None = None
) -> NatsConfig | None:
    """The NATS options that authenticate ``identity`` (None for an open server).

    Raises:
        CommandFailed: the combination is incomplete or inconsistent (exit 2).
    """
    if jwt is None and mesh_dir is None:
        if sys.stderr.isatty():
            err.print(
                "[yellow]open broker:[/] connecting without credentials (development mode). "
                "Deploy a secured mesh: 'agentmesh mesh init' (docs/broker.md)."
            )
        return None
    if identity is None:
        raise usage(
            "--jwt and --mesh-dir need --identity", "add --identity FILE (the key they name)"
        )
    from agentmesh.broker.authority import AUTHORITY_JWT, read_jwt
    from agentmesh.broker.credentials import BrokerCredentials

    try:
        token = read_jwt(jwt if jwt is not None else Path(str(mesh_dir)) / AUTHORITY_JWT)
        return BrokerCredentials(identity, token).nats_config()
    except AgentMeshError as exc:
        raise usage(str(exc), "check --jwt and --identity ('agentmesh mesh add-agent')") from None


def journal_path(journal: Path | None, mesh_dir: Path | None) -> Path | None:
    """``--journal``, or the mesh directory's journal for the authority."""
    if journal is not None:
        return journal
    return mesh_dir / "revocations.journal.jsonl" if mesh_dir is not None else None


def mesh_url(nats: str | None, mesh_dir: Path | None) -> str:
    """``--nats``, or the URL in ``--mesh-dir``'s mesh.json.

    Raises:
        CommandFailed: neither, or mesh.json does not load (exit 2).
    """
    if nats is not None:
        return nats
    if mesh_dir is not None:
        from agentmesh.broker.config import MeshSecurityConfig

        try:
            return MeshSecurityConfig.load(mesh_dir).url
        except AgentMeshError as exc:
            raise usage(str(exc), "give the directory 'agentmesh mesh init' wrote") from None
    raise usage("no mesh to connect to", "give --nats URL (or --mesh-dir of a secured mesh)")


__all__ = [
    "IdentityFile",
    "JournalFile",
    "JwtFile",
    "MeshDir",
    "PassphraseEnv",
    "check_nats_url",
    "journal_path",
    "load_or_exit",
    "mesh_url",
    "nats_option",
    "secure_config",
]
