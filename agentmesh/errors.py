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
        │   │   └── AccessRevoked      the broker revoked this identity (disconnected, refused)
        │   ├── AuthenticationFailed   the broker refused these credentials at connect
        │   ├── PermissionDenied       the broker refused a publish or subscription (field: subject)
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
        ├── CircuitOpen                the circuit to a peer (or further down the chain) is open
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


class AccessRevoked(ConnectionLost):
    """The broker revoked this identity: it closed the connection and refuses it again.

    A mesh authority revokes or quarantines an agent at the broker by updating the
    account's JWT (``docs/broker.md``). Only the authority can lift it.
    """

    code = "broker_access_revoked"


class AuthenticationFailed(TransportError):
    """The broker refused the credentials (unknown or expired user JWT, wrong key).

    Check ``--jwt`` (issued by ``agentmesh mesh add-agent`` for this identity's DID)
    and that the server runs the configuration ``agentmesh mesh init`` wrote.
    """

    code = "broker_authentication_failed"


class PermissionDenied(TransportError):
    """The broker refused to let this identity publish or subscribe to ``subject``.

    Nothing was delivered or stored. The mesh's subject map (``docs/broker.md``)
    says which identity kind may use which subject.
    """

    code = "broker_permission_denied"

    def __init__(self, message: str, *, subject: str, operation: str) -> None:
        super().__init__(message)
        self.subject = subject
        self.operation = operation


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


class CircuitOpen(MeshError):
    """A request failed fast: a circuit breaker on the way to ``root`` is open.

    Raised by ``node.request`` when the node has circuit breakers
    (``agentmesh.resilience``) and either its own breaker on ``peer`` is open
    (``depth == 1``, ``root == peer``) or ``peer`` answered ``circuit_open`` because
    a breaker further down the call chain is open (``root`` is the agent that
    breaker isolates, ``depth`` the number of hops to it). A handler that lets it
    escape answers its own caller ``circuit_open`` with ``depth + 1``, so the
    refusal travels up the chain fast instead of as a cascade of timeouts.
    ``retry_at_ms`` is when this node's breaker lets a probe through (None when
    the open breaker is further down the chain).
    """

    code = "circuit_open"

    def __init__(
        self,
        message: str,
        *,
        peer: str,
        root: str | None = None,
        depth: int = 1,
        retry_at_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.peer = peer
        self.root = root if root is not None else peer
        self.depth = depth
        self.retry_at_ms = retry_at_ms

    @property
    def reply_reason(self) -> str:
        """The reason of the ``circuit_open`` reply a handler that raised this sends."""
        return f"root={self.root} depth={self.depth}"


class RemoteError(MeshError):
    """The peer refused or failed the request and said why (``remote_code``, ``reason``)."""

    code = "remote_error"

    def __init__(self, message: str, *, remote_code: str, reason: str = "") -> None:
        super().__init__(message)
        self.remote_code = remote_code
        self.reason = reason


__all__ = [
    "AccessRevoked",
    "AgentMeshError",
    "AuthenticationFailed",
    "CircuitOpen",
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
    "PermissionDenied",
    "RemoteError",
    "RequestTimeout",
    "RevisionMismatch",
    "StreamError",
    "TransportError",
]
