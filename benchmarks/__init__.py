"""agentmesh benchmarks: ``python -m benchmarks run [--quick] [--only NAME ...]``.

Not tests: every figure is a ratio against a floor measured in the same run,
and a missed goal never fails the process. See ``benchmarks/README.md``.
"""

from benchmarks.harness import (
    Benchmark,
    Goal,
    Measured,
    Pair,
    RunConfig,
    at_least,
    at_most,
    within,
)

__all__ = ["Benchmark", "Goal", "Measured", "Pair", "RunConfig", "at_least", "at_most", "within"]
