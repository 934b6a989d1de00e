"""trust: the trust graph and scoring (layer 1; imports only iatp)."""

__all__: list[str] = []
