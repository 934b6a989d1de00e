"""A chaos scenario is data: a typed, seeded spec, loadable from YAML or TOML.

::

    name: colluding-ring
    description: A ring of providers serves badly and fabricates receipts for itself.
    seed: 7
    rounds: 60
    honest: 40
    behaviours:
      - {kind: collusion, count: 12, params: {endorsements: 3}}
    faults:
      - {kind: loss, params: {rate: 0.05}}
    expectations:
      - {metric: bad_fraction_after_warmup, op: "<=", value: 0.07}

A scenario composes a population (``honest`` agents, ``pre_trusted`` of them
anchoring trust) with behaviours (``simulations.behaviours``: each ``count`` agents
of one ``kind``), faults (``simulations.faults``) and a duration. The same seed
gives the same result at a given fidelity.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentmesh.errors import MeshError

LIBRARY = Path(__file__).resolve().parent / "library"
Param = str | int | float | bool
Op = Literal["<=", ">=", "<", ">", "=="]


class ScenarioError(MeshError):
    """A scenario file is missing, unreadable or invalid (the message says where)."""

    code = "scenario_invalid"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BehaviourSpec(_Model):
    """``count`` agents that follow behaviour ``kind`` with ``params``."""

    kind: str
    count: int = Field(ge=1, le=100_000)
    params: dict[str, Param] = {}


class FaultSpec(_Model):
    """A transport fault active from ``start`` to ``end`` (rounds; ``end`` None: to the end)."""

    kind: Literal[
        "latency",
        "loss",
        "duplicate",
        "reorder",
        "partition",
        "clock_skew",
        "crash",
        "kill",
        "server_restart",
    ]
    params: dict[str, Param] = {}
    start: int = Field(default=0, ge=0)
    end: int | None = Field(default=None, ge=0)

    def active(self, round_no: int) -> bool:
        return self.start <= round_no and (self.end is None or round_no < self.end)


class Expectation(_Model):
    """A claim the scenario makes about one metric (checked in the report)."""

    metric: str
    op: Op
    value: float
    why: str = ""

    def holds(self, measured: float) -> bool:
        return {
            "<=": measured <= self.value,
            ">=": measured >= self.value,
            "<": measured < self.value,
            ">": measured > self.value,
            "==": measured == self.value,
        }[self.op]


class ScenarioSpec(_Model):
    """Everything a run needs (see the module docstring)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    description: str = ""
    seed: int = 1
    rounds: int = Field(default=40, ge=1, le=100_000)
    warmup: int = Field(default=10, ge=0)
    honest: int = Field(default=30, ge=2, le=100_000)
    pre_trusted: int = Field(default=3, ge=0)
    honest_failure: float = Field(default=0.02, ge=0.0, le=1.0)
    requests_per_round: int = Field(default=1, ge=1, le=100)
    explore: float = Field(default=0.1, ge=0.0, le=1.0)
    candidates: int = Field(default=100_000, ge=1, le=100_000)
    """How many random agents answer each request (large meshes: the requester sees a few)."""
    recompute_every: int = Field(default=25, ge=1)
    sagas_per_round: int = Field(default=0, ge=0, le=20)
    behaviours: tuple[BehaviourSpec, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    expectations: tuple[Expectation, ...] = ()
    policy: str | None = None
    weakness: str | None = None
    """Set when the mesh does *not* contain this rogue strategy today: what goes wrong."""

    @model_validator(mode="after")
    def _consistent(self) -> ScenarioSpec:
        if self.pre_trusted > self.honest:
            raise ValueError("pre_trusted cannot exceed honest")
        if self.warmup >= self.rounds:
            raise ValueError("warmup must be shorter than rounds")
        return self

    @property
    def population(self) -> int:
        return self.honest + sum(b.count for b in self.behaviours)

    def scaled(self, **changes: Any) -> ScenarioSpec:
        """A copy with some fields replaced, validated again."""
        return ScenarioSpec.model_validate({**self.model_dump(), **changes})

    def with_param(self, path: str, value: Param) -> ScenarioSpec:
        """A copy with one parameter changed: a field (``rounds``) or ``behaviours.N.count``."""
        data = json.loads(self.model_dump_json())
        target: Any = data
        parts = path.split(".")
        try:
            for part in parts[:-1]:
                target = target[int(part)] if isinstance(target, list) else target[part]
            last = parts[-1]
            if isinstance(target, list):
                target[int(last)] = value
            else:
                target[last] = value
            return ScenarioSpec.model_validate(data)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ScenarioError(f"cannot set {path!r} in scenario {self.name}: {exc}") from None


def load_scenario(source: str | Path) -> ScenarioSpec:
    """A scenario from a YAML or TOML file, or by name from the library.

    Raises:
        ScenarioError: not found, unreadable, or invalid (the message names the field).
    """
    path = Path(source)
    if not path.exists():
        candidates = [LIBRARY / f"{source}.yaml", LIBRARY / f"{source}.toml"]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise ScenarioError(
                f"no scenario file or library scenario {str(source)!r} "
                "(see 'agentmesh simulate list')"
            )
        path = found
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from None
    try:
        return ScenarioSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ScenarioError(f"{path}: {where}: {first['msg']}") from None


def library() -> list[ScenarioSpec]:
    """Every scenario shipped in ``simulations/library``, by name."""
    specs = [load_scenario(p) for p in sorted(LIBRARY.glob("*.yaml"))]
    return sorted(specs, key=lambda s: s.name)


__all__ = [
    "LIBRARY",
    "BehaviourSpec",
    "Expectation",
    "FaultSpec",
    "ScenarioError",
    "ScenarioSpec",
    "library",
    "load_scenario",
]
