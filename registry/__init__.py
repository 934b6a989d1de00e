"""registry: the agent directory (layer 1; imports only iatp)."""

__all__: list[str] = []
