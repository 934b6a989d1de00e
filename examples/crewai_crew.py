"""Two CrewAI crews on the mesh: governed tool calls, trust-ranked delegation, a kill switch.

A research crew's lead tries the cloud metadata URL and a shell command (both
refused, and the model is told why), then hands an analysis to an agent of
another crew found by capability and ranked by trust, as a signed request. An
impostor's forged task is rejected, and a quarantined agent is skipped. The
tables at the end say what was governed, what was refused and why.

    python examples/crewai_crew.py                          # embedded mesh, scripted LLMs
    python examples/crewai_crew.py --nats nats://127.0.0.1:4222
    python examples/crewai_crew.py --live                   # a real model (needs its API key)

Scripted runs need no API key and keep CrewAI's own files (settings, credentials,
task outputs) in a temporary directory; CrewAI's telemetry and tracing are off
unless you turn them on in the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY")


def offline_crewai(scratch: Path | None) -> None:
    """Before CrewAI is imported: no telemetry or tracing; its files under ``scratch``."""
    os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
    os.environ.setdefault("CREWAI_DISABLE_VERSION_CHECK", "true")
    if scratch is not None:
        os.environ["HOME"] = str(scratch / "home")
        os.environ["CREWAI_STORAGE_DIR"] = str(scratch / "storage")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", help="run over a real nats-server (with JetStream) at this URL")
    parser.add_argument(
        "--live", action="store_true", help="use a real model (an API key must be configured)"
    )
    parser.add_argument(
        "--model", default=os.environ.get("MODEL", "gpt-4o-mini"), help="model for --live"
    )
    args = parser.parse_args()
    if args.live and not any(os.environ.get(key) for key in KEYS):
        print(f"--live needs a model API key in the environment ({', '.join(KEYS)})")
        return 2
    with tempfile.TemporaryDirectory(prefix="crewai-demo-") as scratch:
        offline_crewai(None if args.live else Path(scratch))
        from agentmesh.integrations.crewai.showcase import run_showcase

        model = args.model if args.live else None
        report = asyncio.run(run_showcase(args.nats, live_model=model))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
