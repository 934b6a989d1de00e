"""Framework adapters: existing CrewAI crews and AutoGen teams on the mesh.

One subpackage per framework, each an optional extra (``pip install
agentmesh[crewai]``, ``agentmesh[autogen]``); nothing in the core imports them
(import-linter contract), and they import the core, never each other. See
``docs/integrations.md``.
"""
