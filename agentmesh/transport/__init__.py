"""Transports: the embedded in-memory bus and NATS."""
