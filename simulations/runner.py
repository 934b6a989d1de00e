"""Run a scenario at a fidelity, with trust and, for comparison, without it.

:func:`run_scenario` runs the scenario twice on fresh backends (the same seed):
once as specified, once with trust-based selection off (the baseline), and
returns both recorders' metrics, the per-round series and the expectations'
verdicts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from simulations.driver import Driver, populate
from simulations.metrics import Recorder
from simulations.model import ModelBackend
from simulations.server import LocalNatsServer
from simulations.spec import ScenarioError, ScenarioSpec

Fidelity = Literal["model", "mesh"]
Progress = Callable[[str, int], None]


@dataclass
class Verdict:
    metric: str
    op: str
    expected: float
    measured: float | None
    ok: bool
    why: str = ""


@dataclass
class RunResult:
    """A scenario's run with trust, the baseline without, and the verdicts."""

    spec: ScenarioSpec
    fidelity: Fidelity
    metrics: dict[str, Any]
    baseline: dict[str, Any]
    series: dict[str, list[float]]
    events: list[dict[str, Any]]
    verdicts: list[Verdict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


@dataclass(frozen=True)
class Where:
    """Where a mesh-fidelity run happens: the bus, a server, how many host processes."""

    nats_url: str | None = None
    processes: int = 1
    server: LocalNatsServer | None = None


async def _once(
    spec: ScenarioSpec,
    fidelity: Fidelity,
    *,
    use_trust: bool,
    where: Where,
    progress: Progress | None,
) -> tuple[Recorder, list[float], list[float]]:
    agents = populate(spec)
    label = "with trust" if use_trust else "without trust"
    on_round = (lambda r: progress(label, r)) if progress is not None else None
    if fidelity == "model":
        backend = ModelBackend(spec, agents)
        driver = Driver(spec, backend, agents, use_trust=use_trust, on_round=on_round)
        backend.bind(driver)
        recorder = await driver.run()
    else:
        from simulations.distributed import DistributedBackend
        from simulations.mesh import MeshBackend

        mesh = (
            DistributedBackend(
                spec,
                agents,
                nats_url=where.nats_url,
                processes=where.processes,
                server=where.server,
            )
            if where.processes > 1 and where.nats_url is not None
            else MeshBackend(spec, agents, nats_url=where.nats_url, server=where.server)
        )
        async with mesh:
            driver = Driver(spec, mesh, agents, use_trust=use_trust, on_round=on_round)
            mesh.bind(driver)
            recorder = await driver.run()
            recorder.extra["faults_injected"] = dict(sorted(mesh.fault_stats.items()))
            recorder.extra["faults_skipped"] = dict(mesh.skipped_faults)
    rogue = [s.rogue_trust for s in recorder.per_round]
    honest = [s.honest_trust for s in recorder.per_round]
    return recorder, rogue, honest


async def run_scenario(
    spec: ScenarioSpec,
    fidelity: Fidelity = "mesh",
    *,
    nats_url: str | None = None,
    processes: int = 1,
    progress: Progress | None = None,
    baseline: bool = True,
) -> RunResult:
    """Run ``spec`` (and its no-trust baseline) and check its expectations.

    ``nats_url="local"`` starts a throwaway ``nats-server`` for the run (which the
    ``server_restart`` fault may restart); ``processes`` > 1 splits the agents
    over that many host processes (mesh fidelity on NATS only).

    Raises:
        ScenarioError: ``processes`` > 1 without a server, or at model fidelity.
    """
    if processes > 1 and (nats_url is None or fidelity != "mesh"):
        raise ScenarioError(
            "--processes needs mesh fidelity on a nats-server: add --nats URL or --nats local"
        )
    with contextlib.ExitStack() as stack:
        server = None
        if nats_url == "local":
            server = stack.enter_context(LocalNatsServer())
            nats_url = server.url
        where = Where(nats_url, processes, server)
        return await _run_scenario(spec, fidelity, where, progress, baseline)


async def _run_scenario(
    spec: ScenarioSpec,
    fidelity: Fidelity,
    where: Where,
    progress: Progress | None,
    baseline: bool,
) -> RunResult:
    started = time.perf_counter()
    recorder, rogue_trust, honest_trust = await _once(
        spec, fidelity, use_trust=True, where=where, progress=progress
    )
    metrics = recorder.summary()
    series = {
        "bad_fraction": recorder.series(),
        "rogue_trust": rogue_trust,
        "honest_trust": honest_trust,
        "contained_rogues": [float(s.contained_rogues) for s in recorder.per_round],
    }
    base: dict[str, Any] = {}
    if baseline:
        without, _, _ = await _once(spec, fidelity, use_trust=False, where=where, progress=progress)
        base = without.summary()
        series["bad_fraction_without_trust"] = without.series()
        metrics["bad_fraction_without_trust"] = base["bad_fraction"]
        metrics["bad_fraction_after_warmup_without_trust"] = base["bad_fraction_after_warmup"]
        # How much trust helped (>= 0: never worse than no trust)
        metrics["trust_gain"] = (
            base["bad_fraction_after_warmup"] - metrics["bad_fraction_after_warmup"]
        )
    result = RunResult(spec, fidelity, metrics, base, series, recorder.events)
    for expectation in spec.expectations:
        measured = metrics.get(expectation.metric)
        value = float(measured) if isinstance(measured, int | float) else None
        result.verdicts.append(
            Verdict(
                expectation.metric,
                expectation.op,
                expectation.value,
                value,
                value is not None and expectation.holds(value),
                expectation.why,
            )
        )
    result.seconds = time.perf_counter() - started
    return result


__all__ = ["Fidelity", "RunResult", "Verdict", "run_scenario"]
