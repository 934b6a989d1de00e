"""An AutoGen team on the mesh: governed tools, trust drift, a kill switch, forged messages.

A ``SelectorGroupChat`` of three ``AssistantAgent`` s settles an invoice. Each
member runs on a runtime of its own with its own DID (in worker processes with
``--nats``); their tool calls go through the mesh's policy, the coordinator's
trust engine demotes the member that turns rogue, a quarantined host's turn
moves to a standby, and an attacker's forged approval never reaches the team.
The tables at the end say what was governed, what was refused and why.

    python examples/autogen_team.py                          # embedded mesh, scripted models
    python examples/autogen_team.py --nats nats://127.0.0.1:4222
    OPENAI_API_KEY=... python examples/autogen_team.py --live  # a real model decides

Scripted runs need no API key and no server; they play the same way every time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", help="run over a real nats-server (with JetStream) at this URL")
    parser.add_argument(
        "--live", action="store_true", help="use an OpenAI model (needs OPENAI_API_KEY)"
    )
    parser.add_argument("--model", default=os.environ.get("MODEL", "gpt-4o-mini"))
    args = parser.parse_args()
    if args.live and not os.environ.get("OPENAI_API_KEY"):
        print("--live needs OPENAI_API_KEY in the environment")
        return 2
    # The mesh logs each refusal as a warning too; the printout says it better.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from agentmesh.integrations.autogen.showcase import run_showcase

    report = asyncio.run(run_showcase(args.nats, live_model=args.model if args.live else None))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
