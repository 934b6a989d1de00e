"""``agentmesh demo``: what the mesh does, shown on a small agent team.

- :mod:`.team`: four agents join, handshake and work; an impostor is caught.
- :mod:`.governance` (:mod:`.governance_report`): signed cards, trust rings, drift
  and policy refusals.
- :mod:`.order_saga`: a multi-agent order saga with compensation and handoff
  (also ``examples/order_saga.py``).

Demo code only: nothing in the library imports this package.
"""

from agentmesh.demo.team import DemoReport, print_next_steps, run_demo

__all__ = ["DemoReport", "print_next_steps", "run_demo"]
