"""The ``agentmesh`` command line."""
