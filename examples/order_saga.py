"""An order saga across agents: reserve → charge → ship.

One run with a payment agent that declines (the reservation is released: the saga
ends *compensated*), one where the payment agent is quarantined by a signed kill
switch order while it is charging (the step is handed off to another payment
agent: the saga *completes*). Every state change is in the durable saga log.

    python examples/order_saga.py                      # embedded mesh
    python examples/order_saga.py --nats nats://127.0.0.1:4222
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from agentmesh.demo.order_saga import run_order_showcase


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", help="run over a real nats-server (with JetStream) at this URL")
    args = parser.parse_args()
    report = asyncio.run(run_order_showcase(args.nats))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
