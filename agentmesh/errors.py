"""Errors raised by the agentmesh runtime.

The root :class:`AgentMeshError` lives in ``iatp.errors`` (layer 0) and is
re-exported here. nats-py exceptions never escape: the NATS transport maps them
to the transport family below at its boundary::

    AgentMeshError
    ├── IATPError ...                  (see iatp.errors)
    └── MeshError
        ├── TransportError
        │   ├── NotConnected           transport closed or not yet connected
        │   ├── ConnectionLost         the server went away and reconnect failed
        │   ├── RequestTimeout         no reply within the timeout
        │   ├── NoResponders           nobody subscribes to the request subject
        │   ├── PayloadTooLarge        above the server's max_payload
        │   ├── InvalidSubject         empty tokens, whitespace, bad wildcard
        │   ├── KeyValueError
        │   │   ├── KeyNotFound
        │   │   ├── KeyExists          create() on an existing key
        │   │   └── RevisionMismatch   compare-and-set lost (field: expected)
        │   └── StreamError
        ├── NodeStateError             operation not allowed in this lifecycle state
        ├── HandlerError               a local handler raised (wrapped, audited)
        ├── InterceptorDenied          a local hook refused an outbound message or handshake
        ├── HandshakeRefused           the peer refused our handshake (field: remote_code)
        ├── NoSession                  session-authenticated send without a handshake first
        └── RemoteError                the peer answered with a typed error reply
"""

from __future__ import annotations

from iatp.errors import AgentMeshError


class MeshError(AgentMeshError):
    """A failure of the mesh runtime (transport, node lifecycle, remote peer)."""

    code = "mesh_error"


class TransportError(MeshError):
    code = "transport_error"


class NotConnected(TransportError):
    code = "not_connected"


class ConnectionLost(TransportError):
    code = "connection_lost"


class RequestTimeout(TransportError):
    code = "request_timeout"


class NoResponders(TransportError):
    code = "no_responders"


class PayloadTooLarge(TransportError):
    code = "payload_too_large"


class InvalidSubject(TransportError):
    code = "invalid_subject"


class KeyValueError(TransportError):
    code = "kv_error"


class KeyNotFound(KeyValueError):
    code = "kv_key_not_found"


class KeyExists(KeyValueError):
    code = "kv_key_exists"


class RevisionMismatch(KeyValueError):
    """Compare-and-set failed: the key is not at ``expected`` revision."""

    code = "kv_revision_mismatch"

    def __init__(self, message: str, *, expected: int | None = None) -> None:
        super().__init__(message)
        self.expected = expected


class StreamError(TransportError):
    code = "stream_error"


class NodeStateError(MeshError):
    code = "node_state"


class HandlerError(MeshError):
    code = "handler_error"


class InterceptorDenied(MeshError):
    """A local interceptor (policy, trust, revocation) refused; ``denial_code`` says which rule."""

    code = "interceptor_denied"

    def __init__(self, message: str, *, denial_code: str) -> None:
        super().__init__(message)
        self.denial_code = denial_code


class HandshakeRefused(MeshError):
    """The peer refused the handshake; ``remote_code`` is its stated reason."""

    code = "handshake_refused"

    def __init__(self, message: str, *, remote_code: str) -> None:
        super().__init__(message)
        self.remote_code = remote_code


class NoSession(MeshError):
    """A session-authenticated message was asked for, but there is no session with the peer.

    Run ``await node.handshake(peer)`` first (and again after the peer restarts).
    """

    code = "no_session"


class RemoteError(MeshError):
    """The peer refused or failed the request and said why (``remote_code``)."""

    code = "remote_error"

    def __init__(self, message: str, *, remote_code: str) -> None:
        super().__init__(message)
        self.remote_code = remote_code


__all__ = [
    "AgentMeshError",
    "ConnectionLost",
    "HandlerError",
    "HandshakeRefused",
    "InterceptorDenied",
    "InvalidSubject",
    "KeyExists",
    "KeyNotFound",
    "KeyValueError",
    "MeshError",
    "NoResponders",
    "NoSession",
    "NodeStateError",
    "NotConnected",
    "PayloadTooLarge",
    "RemoteError",
    "RequestTimeout",
    "RevisionMismatch",
    "StreamError",
    "TransportError",
]
