"""The mesh node runtime: :class:`~agentmesh.node.node.MeshNode` and what it is built of.

Import from the modules (``agentmesh.node.node``, ``agentmesh.node.config``, ...):
this package re-exports nothing, so importing one part never loads the others.
"""
