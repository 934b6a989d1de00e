"""Your own rogue behaviour and policy in a chaos simulation on the real mesh.

Defines a ``price_gouger`` behaviour (it overcharges on large orders: a bad
service the requester notices), registers it, and runs
``examples/chaos/price-gouging.yaml`` (your behaviour, a library one, your policy
and a lossy network) at mesh fidelity: real nodes, signed envelopes and
receipts, the policy's interceptors and the kill switch. Prints the verdicts
and writes the report (``--out DIR``).

    python examples/chaos_custom.py                      # embedded mesh
    python examples/chaos_custom.py --nats nats://127.0.0.1:4222
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from types import MappingProxyType

from rich.console import Console
from rich.table import Table

from simulations.behaviours import Behaviour, Context, Serve, register_behaviour
from simulations.report import write_report
from simulations.runner import run_scenario
from simulations.spec import load_scenario

HERE = Path(__file__).resolve().parent


@register_behaviour
class PriceGouger(Behaviour):
    """Serves small orders well and overcharges on large ones (a share ``threshold``)."""

    kind = "price_gouger"
    rogue = True
    summary = "overcharges on large orders"
    defaults = MappingProxyType({"threshold": 0.5})

    def serve(self, ctx: Context, requester: int) -> Serve:
        large = ctx.rng.random() < self.num("threshold")
        return Serve.BAD if large else super().serve(ctx, requester)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", help="run over a real nats-server at this URL")
    parser.add_argument("--out", type=Path, help="report directory (default: a temporary one)")
    args = parser.parse_args()
    spec = load_scenario(HERE / "chaos" / "price-gouging.yaml")
    spec = spec.scaled(policy=str(HERE / "chaos" / "policy.yaml"))
    result = asyncio.run(run_scenario(spec, "mesh", nats_url=args.nats))
    console = Console(emoji=False, highlight=False)
    table = Table(title=f"{spec.name}: mesh fidelity, {result.seconds:.1f} s")
    for column in ("expectation", "measured", "verdict"):
        table.add_column(column)
    for v in result.verdicts:
        table.add_row(
            f"{v.metric} {v.op} {v.expected:g}",
            "-" if v.measured is None else f"{v.measured:.3f}",
            "PASS" if v.ok else "FAIL",
        )
    console.print(table)
    m = result.metrics
    console.print(
        f"bad interactions after warm-up: {m['bad_fraction_after_warmup']:.3f} with trust, "
        f"{m['bad_fraction_after_warmup_without_trust']:.3f} without; "
        f"refused by code: {m['rejected']}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        report = write_report(result, args.out or Path(scratch))
        console.print(f"report written: {report}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
