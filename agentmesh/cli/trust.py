"""``agentmesh trust``: inspect the mesh's trust graph (show, top, graph, export).

Every command builds a fresh engine from the signed receipts (the mesh's receipt
stream with ``--nats``, or a file of receipts with ``--receipts``), verifying each
one, and recomputes to the steady state the current evidence supports.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from agentmesh.cli.connection import (
    IdentityFile,
    JwtFile,
    PassphraseEnv,
    load_or_exit,
    nats_option,
    secure_config,
)
from agentmesh.cli.failures import CommandFailed, reading, usage
from agentmesh.cli.failures import explain as explain_failure
from agentmesh.errors import TransportError
from iatp.did import is_did
from trust.engine import TrustEngine
from trust.errors import TrustError
from trust.evidence import decode_signed_receipt, verify_receipt

if TYPE_CHECKING:
    from agentmesh.transport.nats import NatsConfig

app = typer.Typer(
    help="Inspect trust: scores, rings and the evidence behind them.", no_args_is_help=True
)
out = Console(emoji=False, highlight=False)
err = Console(stderr=True, emoji=False, highlight=False)

RING_COLOURS = {1: "#2e7d32", 2: "#1565c0", 3: "#c62828"}
RING_NAMES = {1: "1 privileged", 2: "2 standard", 3: "3 sandbox"}

Nats = Annotated[str | None, nats_option(help="Fold the receipt stream of this NATS server.")]
ReceiptsFile = Annotated[
    Path | None,
    typer.Option("--receipts", help="Fold this file instead (one signed receipt per line)."),
]
Mesh = Annotated[str, typer.Option("--mesh", help="Mesh name.")]
PreTrusted = Annotated[
    list[str] | None,
    typer.Option(
        "--pre-trusted",
        help="A pre-trusted DID (repeat the option). Without any, anchoring is uniform.",
    ),
]


@dataclass
class Loaded:
    engine: TrustEngine
    folded: int
    refused: dict[str, int]


def _config(
    identity: Path | None, jwt: Path | None, passphrase_env: str | None
) -> NatsConfig | None:
    me = load_or_exit(identity, passphrase_env) if identity is not None else None
    return secure_config(me, jwt)


async def _fold_stream(
    engine: TrustEngine, url: str, mesh: str, config: NatsConfig | None
) -> tuple[int, dict[str, int]]:
    from agentmesh.transport.factory import make_transport
    from agentmesh.trustnet.ledger import ReceiptLedger

    async with make_transport(url, name="trust-cli", config=config) as transport:
        ledger = await ReceiptLedger.open(transport, engine, mesh=mesh, node="cli")
        try:
            await ledger.catch_up(timeout=30)
        finally:
            await ledger.aclose()
        return ledger.folded, dict(ledger.refused)


def _fold_file(engine: TrustEngine, path: Path) -> tuple[int, dict[str, int]]:
    """Fold every verified receipt of ``path``.

    Raises:
        CommandFailed: no line of a non-empty file is a valid signed receipt (exit 2):
            it is not a receipts file. Some refused lines among valid ones are
            reported by the caller (an exported stream keeps what nodes refused).
    """
    folded, refused, lines = 0, dict[str, int](), 0
    with reading(path, "--receipts"), path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            lines += 1
            try:
                if engine.record(verify_receipt(decode_signed_receipt(line.rstrip(b"\r\n")))):
                    folded += 1
            except TrustError as exc:
                refused[exc.code] = refused.get(exc.code, 0) + 1
    if lines and sum(refused.values()) == lines:
        reasons = ", ".join(f"{code}: {count}" for code, count in sorted(refused.items()))
        raise usage(
            f"--receipts {path}: none of its {lines} line(s) is a valid signed receipt ({reasons})",
            "give a file written by 'agentmesh trust export'",
        )
    return folded, refused


def _load(
    nats: str | None,
    receipts: Path | None,
    mesh: str,
    pre_trusted: list[str] | None,
    config: NatsConfig | None = None,
) -> Loaded:
    if (nats is None) == (receipts is None):
        raise typer.BadParameter(
            "give exactly one of --nats URL or --receipts FILE", param_hint="--nats/--receipts"
        )
    for did in pre_trusted or []:
        if not is_did(did):
            raise typer.BadParameter(f"{did!r} is not a did:key", param_hint="--pre-trusted")
    engine = TrustEngine(pre_trusted=pre_trusted or [])
    try:
        if receipts is not None:
            folded, refused = _fold_file(engine, receipts)
        else:
            assert nats is not None
            folded, refused = asyncio.run(_fold_stream(engine, nats, mesh, config))
    except (TransportError, TimeoutError) as exc:
        raise _stream_failure(exc, nats) from None
    # Promotion is earned over recomputes: run enough to reach the steady state.
    for _ in range(2 * engine.config.promotion_rounds + 1):
        engine.recompute(cold=True)
    if refused:
        err.print(f"[yellow]refused receipts:[/] {refused}")
    if not pre_trusted:
        err.print("[yellow]note:[/] no --pre-trusted DID: anchoring is uniform (Sybil-prone)")
    return Loaded(engine, folded, refused)


def _stream_failure(exc: TransportError | TimeoutError, url: str | None) -> CommandFailed:
    failure = explain_failure(exc)
    return CommandFailed(
        f"cannot read the receipt stream at {url}: {failure.what}",
        failure.todo,
        exit_code=failure.exit_code,
        reason=failure.reason,
    )


@app.command("show")
def show(
    did: Annotated[str, typer.Argument(help="The agent's DID.")],
    nats: Nats = None,
    receipts: ReceiptsFile = None,
    mesh: Mesh = "agentmesh",
    pre_trusted: PreTrusted = None,
    identity: IdentityFile = None,
    jwt: JwtFile = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Score, ring and the evidence behind them for one agent."""
    if not is_did(did):
        raise typer.BadParameter(f"{did!r} is not a did:key", param_hint="DID")
    _print_show(
        _load(nats, receipts, mesh, pre_trusted, _config(identity, jwt, passphrase_env)), did
    )


def _print_show(loaded: Loaded, did: str) -> None:
    ex = loaded.engine.explain(did)
    if not ex.known:
        out.print(f"{did}: unknown (no receipts about or by it among {loaded.folded}); ring 3")
        return
    table = Table(title=did, show_header=False)
    for name, value in (
        ("score", f"{ex.score:.4f}"),
        ("ring", RING_NAMES[ex.ring]),
        ("global trust t", f"{ex.global_trust:.6g}"),
        ("relative share n*t", f"{ex.relative_share:.3f}"),
        ("pre-trusted", "yes" if ex.pre_trusted else "no"),
        ("credible evidence", f"{ex.evidence:.2f}"),
        ("positive / negative", f"{ex.positive:.2f} / {ex.negative:.2f}"),
        ("drift", f"{ex.drift.kind} (receipt {ex.drift.receipt_id})" if ex.drift else "none"),
    ):
        table.add_row(name, value)
    out.print(table)
    endorsers = Table(title="who carries its trust")
    for column in ("observer", "contribution", "local estimate", "evidence"):
        endorsers.add_column(column)
    for e in ex.endorsers:
        endorsers.add_row(
            e.observer, f"{e.contribution:.6g}", f"{e.local_estimate:.3f}", f"{e.evidence:.2f}"
        )
    out.print(endorsers)
    moved = Table(title="receipts that moved it most")
    for column in ("receipt", "observer", "outcome", "at (ms)", "impact"):
        moved.add_column(column)
    for r in ex.receipts:
        moved.add_row(r.receipt_id, r.observer, r.outcome, str(r.at_ms), f"{r.impact:+.2f}")
    out.print(moved)


@app.command("top")
def top(
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many agents.")] = 10,
    nats: Nats = None,
    receipts: ReceiptsFile = None,
    mesh: Mesh = "agentmesh",
    pre_trusted: PreTrusted = None,
    identity: IdentityFile = None,
    jwt: JwtFile = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """The most trusted agents, best first."""
    loaded = _load(nats, receipts, mesh, pre_trusted, _config(identity, jwt, passphrase_env))
    table = Table(title=f"top {limit} of {len(loaded.engine)} agents ({loaded.folded} receipts)")
    for column in ("#", "DID", "score", "ring", "evidence"):
        table.add_column(column)
    for rank, (did, score, ring) in enumerate(loaded.engine.top(limit), 1):
        table.add_row(
            str(rank), did, f"{score:.4f}", RING_NAMES[ring], f"{loaded.engine.evidence(did):.2f}"
        )
    out.print(table)


@app.command("graph")
def graph(
    png: Annotated[Path, typer.Option("--png", help="Write the picture to this PNG file.")],
    nats: Nats = None,
    receipts: ReceiptsFile = None,
    mesh: Mesh = "agentmesh",
    pre_trusted: PreTrusted = None,
    identity: IdentityFile = None,
    jwt: JwtFile = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Draw the trust graph: nodes coloured by ring, sized by score (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise usage(
            "drawing needs matplotlib", "install the plots extra: pip install 'agentmesh[plots]'"
        ) from None
    import networkx as nx

    loaded = _load(nats, receipts, mesh, pre_trusted, _config(identity, jwt, passphrase_env))
    g = loaded.engine.to_networkx()
    layout = nx.spring_layout(g, seed=1)
    figure, axes = plt.subplots(figsize=(10, 8))
    rings = [g.nodes[n]["ring"] for n in g.nodes]
    nx.draw_networkx_nodes(
        g,
        layout,
        ax=axes,
        node_color=[RING_COLOURS[r] for r in rings],
        node_size=[80 + 900 * g.nodes[n]["score"] for n in g.nodes],
    )
    nx.draw_networkx_edges(g, layout, ax=axes, alpha=0.25, arrows=True, arrowsize=6)
    for ring, colour in RING_COLOURS.items():
        axes.scatter([], [], c=colour, label=f"ring {RING_NAMES[ring]}")
    axes.legend(loc="upper right")
    axes.set_title(f"trust graph: {g.number_of_nodes()} agents, {g.number_of_edges()} edges")
    axes.set_axis_off()
    figure.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(figure)
    out.print(f"wrote {png} ({g.number_of_nodes()} agents)")


@app.command("export")
def export(
    out_file: Annotated[Path, typer.Option("--out", help="File to write (one receipt per line).")],
    nats: Annotated[str, nats_option(help="NATS server URL.")],
    mesh: Mesh = "agentmesh",
    identity: IdentityFile = None,
    jwt: JwtFile = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Copy the mesh's signed receipts to a file that anyone can re-verify offline."""
    config = _config(identity, jwt, passphrase_env)

    async def dump() -> int:
        from agentmesh.transport.factory import make_transport
        from agentmesh.trustnet.ledger import receipt_subjects, stream_name

        async with make_transport(nats, name="trust-export", config=config) as transport:
            stream = await transport.stream(stream_name(mesh), [receipt_subjects(mesh)])
            last = await stream.last_seq()
            count = 0
            with out_file.open("wb") as handle:
                if last:
                    reader = stream.read(start_seq=1)
                    async for message in reader:
                        handle.write(message.data + b"\n")
                        count += 1
                        if message.seq >= last:
                            break
                    await reader.aclose()
            return count

    try:
        count = asyncio.run(dump())
    except (TransportError, TimeoutError) as exc:
        raise _stream_failure(exc, nats) from None
    out.print(
        f"wrote {count} receipts to {out_file}; "
        f"check them with 'agentmesh trust top --receipts {out_file}'"
    )


@app.command("explain")
def explain(
    did: Annotated[str, typer.Argument(help="The agent's DID.")],
    nats: Nats = None,
    receipts: ReceiptsFile = None,
    mesh: Mesh = "agentmesh",
    pre_trusted: PreTrusted = None,
    organization: Annotated[
        str | None,
        typer.Option(
            "--organization",
            help="This organization's authority DID: explain a partner agent's federated "
            "score (needs --nats; reads the mesh's federation bucket).",
        ),
    ] = None,
    org_trust: Annotated[
        list[str] | None,
        typer.Option("--org-trust", metavar="ORG=TRUST", help="Trust in a partner org (0..1)."),
    ] = None,
    identity: IdentityFile = None,
    jwt: JwtFile = None,
    passphrase_env: PassphraseEnv = None,
) -> None:
    """Everything behind an agent's score; for a partner's agent, the org discount too.

    A partner organization's agent is ranked by the local evidence about it times
    this organization's trust in its organization (docs/federation.md).
    """
    if not is_did(did):
        raise typer.BadParameter(f"{did!r} is not a did:key", param_hint="DID")
    config = _config(identity, jwt, passphrase_env)
    loaded = _load(nats, receipts, mesh, pre_trusted, config)
    _print_show(loaded, did)
    if organization is None:
        return
    if nats is None:
        raise typer.BadParameter("the federated score needs --nats", param_hint="--organization")
    trust = {}
    for item in org_trust or []:
        name, _, value = item.partition("=")
        try:
            trust[name] = float(value)
        except ValueError:
            raise typer.BadParameter(
                f"{item!r} is not ORG=TRUST", param_hint="--org-trust"
            ) from None
    loaded = _load(nats, receipts, mesh, pre_trusted, config)
    explained = asyncio.run(_federated(did, nats, mesh, organization, trust, loaded, config))
    if explained is None:
        out.print(f"{did} is not a partner organization's agent known to this mesh: no discount")
        return
    table = Table(title=f"{did}: federated score", show_header=False)
    for name, value in explained:
        table.add_row(name, value)
    out.print(table)


async def _federated(
    did: str,
    url: str,
    mesh: str,
    organization: str,
    org_trust: dict[str, float],
    loaded: Loaded,
    config: NatsConfig | None,
) -> list[tuple[str, str]] | None:
    from agentmesh.federation.errors import FederationError
    from agentmesh.federation.view import FederationView
    from agentmesh.transport.factory import make_transport
    from trust.federated import DiscountedTrust

    async with make_transport(url, name="trust-explain", config=config) as transport:
        view = FederationView(transport, mesh=mesh, organization=organization, org=mesh)
        await view.start()
        try:
            token = view.credential_for(did)
            if token is None:
                return None
            try:
                membership = view.verify_membership(token, did)
                status = "valid"
            except FederationError as exc:
                return [("membership", f"refused ({exc.code}): {exc}")]
            partnership = view.partnership(membership.organization)
        finally:
            await view.aclose()
    trust = DiscountedTrust(loaded.engine.score, lambda _: membership.organization_name, org_trust)
    explained = trust.explain(did)
    assert explained is not None
    cap = partnership.mine.ceilings.max_ring if partnership is not None else 3
    return [
        ("organization", f"{membership.organization_name} ({membership.organization})"),
        ("membership", status),
        ("local score (this mesh's evidence)", f"{explained.local:.4f}"),
        ("trust in the organization", f"{explained.org_trust:.2f}"),
        ("federated score = local x org trust", f"{explained.score:.4f}"),
        ("ring cap (agreement)", str(cap)),
    ]
