"""``agentmesh policy``: check policy files and try requests against them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agentmesh.cli.failures import EXIT_FAILED, CommandFailed, reading, usage
from agentmesh.policy.document import Effect
from agentmesh.policy.engine import CompiledPolicy, PolicyEngine, request_from_mapping
from agentmesh.policy.errors import PolicyLoadError

app = typer.Typer(help="Check policy files and test requests against them.", no_args_is_help=True)
out = Console(emoji=False, highlight=False)


@app.command("check")
def check(
    files: Annotated[list[Path], typer.Argument(help="Policy files (YAML or JSON).")],
) -> None:
    """Load and compile each file; report every load error with its file, rule and reason.

    Exits 1 when any file fails to load (2 when one cannot be read: missing, not UTF-8).
    """
    table = Table("file", "policy", "rules", "combining", "default", "status")
    errors: list[str] = []
    exit_code = EXIT_FAILED
    for path in files:
        try:
            if not path.is_file():
                raise usage(f"policy file {path} does not exist", "check the path")
            with reading(path, "policy file"):
                policy = CompiledPolicy.from_file(path)
        except (PolicyLoadError, CommandFailed) as exc:
            if isinstance(exc, CommandFailed):
                exit_code = exc.exit_code
            errors.append(str(exc))
            table.add_row(str(path), "-", "-", "-", "-", "[red]error[/]")
            continue
        doc = policy.document
        table.add_row(
            str(path),
            policy.label,
            str(len(policy.rules)),
            doc.combining.value,
            doc.default.value,
            "[green]ok[/]",
        )
    out.print(table)
    for error in errors:
        out.print(f"[red]error:[/] {error}", soft_wrap=True)
    if errors:
        raise CommandFailed(
            f"{len(errors)} of {len(files)} policy file(s) failed to load; first: {errors[0]}",
            "fix them; the policy language is in docs/policy.md",
            exit_code=exit_code,
        )


@app.command("test")
def try_request(
    file: Annotated[Path, typer.Argument(help="Policy file (YAML or JSON).")],
    request: Annotated[
        str,
        typer.Option(
            "--request",
            help='The request as JSON: \'{"action": "pay", "ring": 2, "args": {"amount": 5}}\'.',
        ),
    ],
    expect: Annotated[
        str | None,
        typer.Option("--expect", help="allow | deny | require-approval: exit 1 if different."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Print the decision for one request and the rule that decided it."""
    try:
        with reading(file, "policy file"):
            policy = CompiledPolicy.from_file(file)
    except PolicyLoadError as exc:
        raise usage(str(exc), "fix it (see 'agentmesh policy check' and docs/policy.md)") from None
    try:
        data = json.loads(request)
        if not isinstance(data, dict):
            raise ValueError("the request must be a JSON object")
        parsed = request_from_mapping(data)
    except (ValueError, TypeError) as exc:
        raise usage(f"bad --request: {exc}", "see 'agentmesh policy test --help'") from None
    decision = PolicyEngine(policy).decide(parsed)
    if as_json:
        out.print_json(json.dumps(decision.to_dict()))
    else:
        colour = {"allow": "green", "deny": "red"}.get(decision.effect.value, "yellow")
        out.print(f"[{colour}]{decision.effect.value}[/]  rule: {decision.rule or '(default)'}")
        out.print(f"reason: {decision.reason}  policy: {decision.policy}")
    if expect is not None:
        try:
            wanted = Effect(expect.replace("_", "-"))
        except ValueError:
            raise typer.BadParameter(
                "allow, deny or require-approval", param_hint="--expect"
            ) from None
        if decision.effect is not wanted:
            raise CommandFailed(
                f"expected {wanted.value}, got {decision.effect.value}",
                f"rule {decision.rule or '(default)'} decided; see the reason above",
            )
