"""``agentmesh node run``: one node in its own process."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from agentmesh.cli.connection import JwtFile, load_or_exit, nats_option, secure_config
from agentmesh.cli.failures import CommandFailed, explain, reading, usage
from agentmesh.cli.logs import log_reconnects
from agentmesh.node.partitions import Partition
from agentmesh.node.runner import (
    FederationOptions,
    RunPlan,
    TrustOptions,
    install_stop_signals,
    run_node,
)
from agentmesh.observability.runtime import ObservabilityOptions, missing_packages
from agentmesh.policy.engine import CompiledPolicy
from agentmesh.policy.errors import PolicyLoadError
from agentmesh.policy.runtime import GovernanceOptions
from agentmesh.resilience.document import load_resilience
from agentmesh.transport.factory import make_transport
from iatp.did import is_did
from iatp.errors import AgentMeshError
from registry.card import parse_capability
from registry.errors import RegistryError

app = typer.Typer(help="Run a mesh node.", no_args_is_help=True)


@app.command("run")
def run(
    ctx: typer.Context,
    identity: Annotated[Path, typer.Option("--identity", help="Identity file ('identity new').")],
    nats: Annotated[str, nats_option(help="NATS server URL, e.g. nats://127.0.0.1:4222.")],
    passphrase_env: Annotated[
        str | None, typer.Option("--passphrase-env", metavar="VAR", help="Passphrase variable.")
    ] = None,
    mesh: Annotated[
        str, typer.Option("--mesh", help="Mesh name (subject namespace).")
    ] = "agentmesh",
    peer: Annotated[
        list[str] | None, typer.Option("--peer", help="Peer DID to handshake with (repeatable).")
    ] = None,
    requests: Annotated[int, typer.Option("--requests", help="Echo requests per peer.")] = 0,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between rounds.")] = 0.0,
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="Leave after this many seconds (default: on SIGTERM)."),
    ] = None,
    capability: Annotated[
        list[str] | None,
        typer.Option(
            "--capability",
            metavar="NAME[@VERSION]",
            help="Capability to declare and publish in the node's card (repeatable).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Display name of the node's agent card.")
    ] = None,
    card_ttl: Annotated[
        float,
        typer.Option("--card-ttl", help="Seconds the card stays valid; renewed every third."),
    ] = 30.0,
    audit_log: Annotated[
        Path | None,
        typer.Option(
            "--audit-log",
            help="Hash-chained audit log; signed checkpoints go to FILE.checkpoints and the mesh.",
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy", help="Policy file (YAML/JSON) for every message; SIGHUP reloads it."
        ),
    ] = None,
    authority: Annotated[
        list[str] | None,
        typer.Option(
            "--authority", help="DID allowed to quarantine and release agents (repeatable)."
        ),
    ] = None,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Audit records between signed checkpoints.")
    ] = 1000,
    trust: Annotated[
        bool,
        typer.Option(
            "--trust/--no-trust",
            help="Publish signed receipts of handled requests, fold the mesh's receipt "
            "stream into a trust engine, and let it set rings for --policy.",
        ),
    ] = False,
    pre_trusted: Annotated[
        list[str] | None,
        typer.Option(
            "--pre-trusted", help="DID that anchors global trust (repeatable; with --trust)."
        ),
    ] = None,
    receipt_horizon: Annotated[
        float,
        typer.Option(
            "--receipt-horizon",
            min=0,
            help="Seconds of receipt history whose ids the trust engine remembers for replay "
            "protection; older receipts are refused as stale (with --trust; 0 = remember all).",
        ),
    ] = 86_400.0,
    jwt: JwtFile = None,
    admission: Annotated[
        str,
        typer.Option(
            "--admission",
            help="registered: serve only agents with a card in the mesh directory (and the "
            "--peer/--authority/--pre-trusted/--admit DIDs); open: any valid DID "
            "(development only).",
        ),
    ] = "registered",
    admit: Annotated[
        list[str] | None,
        typer.Option("--admit", help="DID to serve without a directory card (repeatable)."),
    ] = None,
    organization: Annotated[
        str | None,
        typer.Option(
            "--organization",
            help="Federate: this organization's authority DID (its agreements apply).",
        ),
    ] = None,
    membership: Annotated[
        Path | None,
        typer.Option(
            "--membership",
            help="This agent's membership credential ('federation issue-membership'), "
            "sent to partner organizations.",
        ),
    ] = None,
    org_trust: Annotated[
        list[str] | None,
        typer.Option(
            "--org-trust",
            metavar="ORG=TRUST",
            help="Trust in a partner organization, 0..1 (discounts its agents' scores).",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve Prometheus metrics on this port (0: any free port; see docs/metrics.md).",
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option("--metrics-host", help="Address the metrics endpoint binds (loopback)."),
    ] = "127.0.0.1",
    trace_file: Annotated[
        Path | None,
        typer.Option(
            "--trace-file",
            help="Append OpenTelemetry spans to this file, one JSON object per line.",
        ),
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            "--otlp-endpoint",
            help="Export OpenTelemetry spans over OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces.",
        ),
    ] = None,
    resilience: Annotated[
        Path | None,
        typer.Option(
            "--resilience",
            help="Circuit breakers, cascade detection and SLOs (YAML; see docs/resilience.md).",
        ),
    ] = None,
    partition: Annotated[
        str | None,
        typer.Option(
            "--partition",
            metavar="I/P",
            help="Serve this identity as member I of P processes (I from 0; run one process "
            "per I): each admits only its partition's messages (docs/scaleout.md).",
        ),
    ] = None,
    status_interval: Annotated[
        float | None,
        typer.Option(
            "--status-interval",
            metavar="SECONDS",
            min=0.1,
            help="Broadcast a signed status report (counters, recent refusals) on the mesh "
            "every SECONDS, for 'agentmesh dashboard'.",
        ),
    ] = None,
) -> None:
    """Join the mesh, answer `mesh.echo` requests, optionally talk to peers, leave on SIGTERM.

    Registers a signed agent card (renewed on a heartbeat) and refuses revoked or
    quarantined agents. Prints one JSON object per line: registered, ready, handshake,
    request_failed, requests_done, revocation, stats, trust_view (with --trust),
    status (with --status-interval), left. SIGTERM or SIGINT at any time (also while
    sending) stops it cleanly: it prints its stats and exits 0 (1 if a request failed).
    Disconnects from and reconnects to nats-server are logged on stderr.
    """
    early_stop = _remember_stop_signals(ctx)
    peers = tuple(peer or ())
    try:
        member = None if partition is None else Partition.parse(partition)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--partition") from None
    if admission not in ("registered", "open"):
        raise typer.BadParameter("registered or open", param_hint="--admission")
    for did in (*peers, *(authority or ()), *(pre_trusted or ()), *(admit or ())):
        if not is_did(did):
            raise typer.BadParameter(
                f"{did!r} is not an Ed25519 did:key",
                param_hint="--peer/--authority/--pre-trusted/--admit",
            )
    for spec in capability or ():
        try:
            parse_capability(spec)
        except RegistryError as exc:
            raise typer.BadParameter(str(exc), param_hint="--capability") from None
    if policy is not None:
        try:
            with reading(policy, "--policy"):
                CompiledPolicy.from_file(policy)
        except PolicyLoadError as exc:
            raise usage(f"--policy {exc}", "fix it (see 'agentmesh policy check')") from None
    guards = None
    if resilience is not None:
        try:
            with reading(resilience, "--resilience"):
                guards = load_resilience(resilience)
        except PolicyLoadError as exc:
            raise usage(f"--resilience {exc}", "fix it (see docs/resilience.md)") from None
    if audit_log is not None:
        _check_audit_log(audit_log)
    me = load_or_exit(identity, passphrase_env)
    federation = _federation(organization, membership, org_trust or [])
    missing = missing_packages(
        metrics=metrics_port is not None, tracing=bool(trace_file or otlp_endpoint)
    )
    if missing:
        raise usage(f"{', '.join(missing)} not installed", "pip install 'agentmesh[observability]'")
    nats_config = secure_config(me, jwt)
    plan = RunPlan(
        peers=peers,
        requests_per_peer=requests,
        request_interval=interval,
        duration=duration,
        capabilities=tuple(capability or ()),
        display_name=name,
        card_ttl_ms=int(card_ttl * 1000),
        broker="open" if jwt is None else f"secured:{_role(jwt)}",
        admission=admission,
        admitted=tuple(admit or ()),
        partition=member,
    )

    async def main() -> int:
        stop = asyncio.Event()
        install_stop_signals(stop, _STOP_SIGNALS)
        if early_stop:
            stop.set()
        log_reconnects()
        return await run_node(
            me,
            make_transport(nats, name=me.did[-8:], config=nats_config),
            plan,
            mesh=mesh,
            audit_log=str(audit_log) if audit_log else None,
            governance=GovernanceOptions(
                policy=str(policy) if policy else None,
                authorities=tuple(authority or ()),
                checkpoint_every=checkpoint_every,
                reload_on_sighup=True,
            ),
            trust=TrustOptions(
                pre_trusted=tuple(pre_trusted or ()),
                receipt_horizon_ms=int(receipt_horizon * 1000) or None,
            )
            if trust
            else None,
            federation=federation,
            observability=ObservabilityOptions(
                metrics_port=metrics_port,
                metrics_host=metrics_host,
                trace_file=str(trace_file) if trace_file else None,
                otlp_endpoint=otlp_endpoint,
                service_name=name or f"agentmesh-node-{me.did[-8:]}",
            ),
            status_interval=status_interval,
            resilience=guards,
            stop=stop,
        )

    try:
        code = asyncio.run(main())
    except AgentMeshError as exc:
        hint = _HINTS.get(exc.code)
        if hint is None:
            raise explain(exc) from None
        raise CommandFailed(str(exc), hint, reason=exc.code) from None
    raise typer.Exit(code)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _remember_stop_signals(ctx: typer.Context) -> list[int]:
    """Remember a stop signal that comes before the event loop runs (while the key decrypts).

    Without this SIGTERM would kill the process there, without the stats line. The
    previous handlers come back when the command ends (a test may run it in-process).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        return received
    previous = {number: signal.getsignal(number) for number in _STOP_SIGNALS}
    for number in _STOP_SIGNALS:
        signal.signal(number, lambda got, _frame: received.append(got))

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    ctx.call_on_close(restore)
    return received


_HINTS = {
    "revocation_log_incomplete": (
        "Revocations were removed from the mesh's store, so this node will not serve. The "
        "mesh authority restores them: agentmesh registry republish --identity AUTHORITY.id "
        "--journal JOURNAL (--mesh-dir DIR on a secured mesh)"
    ),
    "broker_authentication_failed": "check --jwt: 'agentmesh mesh add-agent' issues it",
}


def _federation(
    organization: str | None, membership: Path | None, org_trust: list[str]
) -> FederationOptions | None:
    if organization is None:
        if membership is not None or org_trust:
            raise typer.BadParameter(
                "--membership and --org-trust need --organization", param_hint="--organization"
            )
        return None
    if not is_did(organization):
        raise typer.BadParameter(f"{organization!r} is not a did:key", param_hint="--organization")
    trust: dict[str, float] = {}
    for item in org_trust:
        name, _, value = item.partition("=")
        try:
            trust[name] = float(value)
        except ValueError:
            raise typer.BadParameter(
                f"{item!r} is not ORG=TRUST", param_hint="--org-trust"
            ) from None
        if not name or not 0.0 <= trust[name] <= 1.0:
            raise typer.BadParameter(f"{item!r}: TRUST is 0..1", param_hint="--org-trust")
    token = None
    if membership is not None:
        with reading(membership, "--membership"):
            token = membership.read_text(encoding="utf-8").strip()
        if token.count(".") != 2 or not all(token.split(".")):
            raise usage(
                f"--membership {membership} does not hold a membership credential (a JWT)",
                "issue one with 'agentmesh federation issue-membership'",
            )
    return FederationOptions(organization, token, trust)


def _check_audit_log(path: Path) -> None:
    """Refuse an existing ``--audit-log`` that is not an audit log, before anything writes to it.

    The log repairs a torn last record by cutting it off: pointed at some other file
    by mistake it would cut that file, then fail.
    """
    if not path.exists() or path.is_dir() or path.stat().st_size == 0:
        if path.is_dir():
            raise usage(f"--audit-log {path} is a directory", "give a file path")
        return
    with reading(path, "--audit-log"), path.open("rb") as handle:
        first = handle.readline()
    try:
        record = json.loads(first)
    except ValueError:  # also a UnicodeDecodeError
        record = None
    if not (isinstance(record, dict) and "seq" in record and "hash" in record):
        raise usage(
            f"--audit-log {path} is not an audit log (its first line is not a chained record)",
            "give a new file, or the log this node wrote before",
        )


def _role(jwt: Path) -> str:
    from agentmesh.broker.authority import read_jwt, role_of

    try:
        return role_of(read_jwt(jwt)).value
    except AgentMeshError:  # a JWT issued by other tools: no agentmesh role tag
        return "unknown"
