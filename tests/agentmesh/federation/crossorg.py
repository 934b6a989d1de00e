"""Organizations on real nats-servers, with agents and stewards in their own processes.

The tests' name for :class:`agentmesh.federation.lab_processes.LabProcesses`.
"""

from __future__ import annotations

from agentmesh.federation.lab_processes import Child, LabProcesses

World = LabProcesses

__all__ = ["Child", "World"]
