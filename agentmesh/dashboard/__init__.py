"""The live mesh dashboard (optional extra ``dashboard``): ``agentmesh dashboard``."""
