"""agentmesh: the node runtime (transports, node, policy, rings, sagas, audit, CLI)."""
