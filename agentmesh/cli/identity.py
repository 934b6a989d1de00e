"""``agentmesh identity``: create and inspect encrypted identity files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agentmesh.cli.failures import explain, usage
from agentmesh.cli.passphrase import obtain_passphrase
from iatp.errors import KeystoreError
from iatp.identity import AgentIdentity
from iatp.keystore import KdfParams, load_identity, read_keystore_did, save_identity

app = typer.Typer(
    help="Create and inspect agent identities (Ed25519 did:key).", no_args_is_help=True
)
console = Console(stderr=True)

PassphraseEnv = Annotated[
    str | None,
    typer.Option(
        "--passphrase-env",
        metavar="VAR",
        help="Read the passphrase from this environment variable instead of a prompt.",
    ),
]


@app.command("new")
def new_identity(
    out: Annotated[Path, typer.Option("--out", help="Where to write the encrypted identity file.")],
    passphrase_env: PassphraseEnv = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    strong_kdf: Annotated[
        bool,
        typer.Option(
            "--strong-kdf", help="argon2id 'moderate' cost (slower, for long-lived keys)."
        ),
    ] = False,
) -> None:
    """Generate a new identity and save it encrypted (argon2id + SecretBox, mode 0600)."""
    if out.exists() and not force:
        raise usage(f"{out} exists", "pass --force to overwrite it")
    passphrase = obtain_passphrase(passphrase_env, confirm=True)
    identity = AgentIdentity.generate()
    try:
        save_identity(
            identity, out, passphrase, params=KdfParams.moderate() if strong_kdf else None
        )
    except KeystoreError as exc:
        raise usage(str(exc), "check that its directory exists and is writable") from None
    console.print(f"[green]created[/] {out}")
    typer.echo(identity.did)


@app.command("show")
def show_identity(
    file: Annotated[Path, typer.Argument(help="An identity file made by 'identity new'.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    passphrase_env: PassphraseEnv = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Decrypt the key to prove the file is intact (asks for the passphrase).",
        ),
    ] = False,
) -> None:
    """Print the identity's DID (and, with --verify, check the file decrypts to that DID)."""
    try:
        did = read_keystore_did(file)
        verified = None
        if verify or passphrase_env:
            identity = load_identity(file, obtain_passphrase(passphrase_env, confirm=False))
            verified = identity.did == did
    except KeystoreError as exc:
        raise explain(exc) from None
    if as_json:
        doc: dict[str, object] = {"did": did, "file": str(file)}
        if verified is not None:
            doc["verified"] = verified
        typer.echo(json.dumps(doc))
    else:
        typer.echo(did)
        if verified is not None:
            console.print("[green]verified[/]: the file decrypts to this DID")
