"""The resilience file of a node (YAML or JSON): breakers, cascade rule, SLOs.

Example (docs/resilience.md has every field)::

    version: 1
    breakers:
      failure_threshold: 5
      cool_down_ms: 5000
      jitter: 0.2
      half_open_probes: 1
    cascade:
      window_ms: 30000
      min_callers: 3
      min_depth: 3
      action: quarantine        # or alert (the default)
    slos:
      - capability: summarize
        success_rate: 0.99
        latency: {threshold_ms: 200, objective: 0.95}
        window_s: 3600
        burn_windows_s: [300, 3600]

Every model forbids unknown fields, so a typo is a load error. Sections left out
are off (no ``breakers:``: no breakers), except that an empty file turns nothing on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentmesh.policy.document import read_policy_file
from agentmesh.policy.errors import PolicyLoadError
from agentmesh.resilience.breaker import BreakerConfig
from agentmesh.resilience.cascade import CascadeConfig
from agentmesh.resilience.slo import SloSpec


class ResilienceDocument(BaseModel):
    """A whole resilience file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    breakers: BreakerConfig | None = None
    cascade: CascadeConfig | None = None
    slos: list[SloSpec] = Field(default_factory=list)


def parse_resilience(raw: object, *, file: str = "<memory>") -> ResilienceDocument:
    """Validate an already-parsed document (a mapping from YAML or JSON).

    Raises:
        PolicyLoadError: naming ``file``, the field and the reason.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PolicyLoadError("a resilience document is a mapping at the top level", file=file)
    try:
        return ResilienceDocument.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unknown field (typo? see docs/resilience.md for the fields)"
        raise PolicyLoadError(
            f"{where}: {message} ({exc.error_count()} error(s) in total)", file=file
        ) from None


def load_resilience(path: str | Path) -> ResilienceDocument:
    """Read and validate a ``.yaml``/``.yml``/``.json`` resilience file.

    Raises:
        PolicyLoadError: missing or unreadable file, bad YAML/JSON, or an invalid field.
    """
    raw, file = read_policy_file(path)
    return parse_resilience(raw, file=file)


__all__ = ["ResilienceDocument", "load_resilience", "parse_resilience"]
