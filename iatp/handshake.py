"""The mutual IATP handshake: a pure, three-message state machine.

::

    I -> R  HELLO    [hello_body, sig_I("iatp/1/hs-hello\\0" || hello_body)]
            hello_body = ["hello", session_id(16), I_did, R_did, nonce_I(32),
                          eph_I(32), capabilities_I, credentials_I, issued_at_ms]
    R -> I  ACCEPT   [accept_body, sig_R("iatp/1/hs-accept\\0" || accept_body)]
            accept_body = ["accept", session_id, I_did, R_did, H(HELLO), nonce_R(32),
                           eph_R(32), capabilities_R, credentials_R, issued_at_ms]
    I -> R  CONFIRM  [confirm_body, sig_I("iatp/1/hs-confirm\\0" || confirm_body)]
            confirm_body = ["confirm", session_id, I_did, R_did, H(HELLO || ACCEPT)]

``H`` is BLAKE2b-256 over the exact message bytes. R's signature covers
``H(HELLO)`` and so I's fresh nonce; I's CONFIRM covers ``H(HELLO || ACCEPT)``
and so R's fresh nonce: each side proves possession of its DID's key against a
nonce it could not have predicted, and any message replayed from, or spliced in
from, another session breaks a hash and is refused. Both DIDs are in every
message, so a transcript cannot be re-targeted at a third party.

Session keys: ``K = BLAKE2b-512(key=X25519(eph_self, eph_peer), H(HELLO || ACCEPT))``;
the first 32 bytes protect initiator -> responder traffic, the last 32 the other
way. Ephemeral keys are fresh per session (forward secrecy).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgpack
import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash

from iatp.clock import Clock
from iatp.did import verify_key_for_did
from iatp.errors import EnvelopeError, HandshakeError, InvalidDID
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache

HELLO_DOMAIN = b"iatp/1/hs-hello\x00"
ACCEPT_DOMAIN = b"iatp/1/hs-accept\x00"
CONFIRM_DOMAIN = b"iatp/1/hs-confirm\x00"
SESSION_ID_BYTES = 16
NONCE_BYTES = 32
MAX_MESSAGE_BYTES = 64 * 1024
MAX_CAPABILITIES = 64
MAX_CREDENTIALS = 8


@dataclass(frozen=True, slots=True)
class HandshakeLimits:
    clock_skew_ms: int = 30_000
    max_age_ms: int = 30_000


@dataclass(frozen=True, slots=True)
class PeerOffer:
    """What the peer declared, once its signature has verified."""

    did: str
    session_id: bytes
    capabilities: tuple[str, ...]
    credentials: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The outcome of a completed handshake, identical on both sides but for direction.

    ``initiator`` (the DID that sent HELLO) and ``issued_at_ms`` (HELLO's time) are
    the same on both sides, so both order a peer's sessions alike
    (:class:`iatp.session_table.SessionTable`).
    """

    session_id: bytes
    peer: PeerOffer
    send_key: bytes
    receive_key: bytes
    transcript_hash: bytes
    initiator: str = ""
    issued_at_ms: int = 0


def _h(data: bytes) -> bytes:
    return nacl.hash.blake2b(data, digest_size=32, encoder=nacl.encoding.RawEncoder)


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _sign(identity: AgentIdentity, domain: bytes, body: bytes) -> bytes:
    return _pack([body, identity.sign(domain + body)])


def _open(message: bytes, domain: bytes, expected_kind: str) -> tuple[bytes, list[object]]:
    """Split a signed message; returns (body bytes, body fields). Signature NOT yet checked."""
    if not isinstance(message, bytes) or len(message) > MAX_MESSAGE_BYTES:
        raise HandshakeError("handshake message is not bytes or is too large")
    try:
        outer = msgpack.unpackb(message, raw=False, strict_map_key=True, max_ext_len=0)
        if not (isinstance(outer, list) and len(outer) == 2):
            raise HandshakeError("handshake message must be [body, signature]")
        body, signature = outer
        if not isinstance(body, bytes) or not isinstance(signature, bytes):
            raise HandshakeError("handshake body and signature must be binary")
        fields = msgpack.unpackb(body, raw=False, strict_map_key=True, max_ext_len=0)
    except HandshakeError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        raise HandshakeError("handshake message is not valid msgpack") from None
    if not isinstance(fields, list) or not fields or fields[0] != expected_kind:
        raise HandshakeError(f"expected a {expected_kind} message")
    if _pack([body, signature]) != message or _pack(fields) != body:
        raise HandshakeError("handshake message is not canonically encoded")
    return body, [*fields, signature]


def _verify(did: object, domain: bytes, body: bytes, signature: object) -> None:
    if not isinstance(did, str) or not isinstance(signature, bytes):
        raise HandshakeError("malformed signer or signature")
    try:
        verify_key_for_did(did).verify(domain + body, signature)
    except InvalidDID as exc:
        raise HandshakeError(f"invalid DID in handshake: {exc.reason}") from None
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        raise HandshakeError("handshake signature does not verify") from None


def _str_list(value: object, limit: int, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise HandshakeError(f"{what} must be a list of at most {limit}")
    if not all(isinstance(v, str) and 0 < len(v) <= 256 for v in value):
        raise HandshakeError(f"{what} entries must be short strings")
    return tuple(value)


def _bytes_list(value: object, limit: int, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > limit:
        raise HandshakeError(f"{what} must be a list of at most {limit}")
    if not all(isinstance(v, bytes) for v in value):
        raise HandshakeError(f"{what} entries must be binary")
    return tuple(value)


def _need_bytes(value: object, length: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != length:
        raise HandshakeError(f"{what} must be {length} bytes")
    return value


def _check_time(issued_at: object, now_ms: int, limits: HandshakeLimits) -> int:
    if type(issued_at) is not int:
        raise HandshakeError("issued_at must be an integer")
    if issued_at > now_ms + limits.clock_skew_ms:
        raise HandshakeError("handshake message issued in the future")
    if now_ms - issued_at > limits.max_age_ms + limits.clock_skew_ms:
        raise HandshakeError("handshake message is too old")
    return issued_at


def _derive(eph_secret: bytes, peer_eph_public: bytes, transcript: bytes) -> tuple[bytes, bytes]:
    try:
        shared = nacl.bindings.crypto_scalarmult(eph_secret, peer_eph_public)
    except nacl.exceptions.RuntimeError:
        raise HandshakeError("ephemeral key is a low-order point") from None
    if shared == bytes(32):
        raise HandshakeError("ephemeral key is a low-order point")
    okm = nacl.hash.blake2b(
        transcript, digest_size=64, key=shared, encoder=nacl.encoding.RawEncoder
    )
    return okm[:32], okm[32:]


def _ephemeral(random_bytes: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    secret = random_bytes(32)
    return secret, nacl.bindings.crypto_scalarmult_base(secret)


class HandshakeInitiator:
    """The side that opens the handshake. Use once: ``hello()``, then ``finish(accept)``."""

    def __init__(
        self,
        identity: AgentIdentity,
        responder_did: str,
        *,
        clock: Clock,
        capabilities: Sequence[str] = (),
        credentials: Sequence[bytes] = (),
        limits: HandshakeLimits = HandshakeLimits(),
        random_bytes: Callable[[int], bytes] = os.urandom,
        issued_at_ms: int | None = None,
    ) -> None:
        self._identity = identity
        self._responder = responder_did
        self._clock = clock
        self._limits = limits
        self.session_id = random_bytes(SESSION_ID_BYTES)
        self._nonce = random_bytes(NONCE_BYTES)
        self._eph_secret, self._eph_public = _ephemeral(random_bytes)
        # ``issued_at_ms``: a caller that opens several sessions with one peer may
        # keep their HELLO times strictly increasing (they order the sessions).
        self._issued_at = clock.now_ms() if issued_at_ms is None else issued_at_ms
        body = _pack(
            [
                "hello",
                self.session_id,
                identity.did,
                responder_did,
                self._nonce,
                self._eph_public,
                list(capabilities),
                list(credentials),
                self._issued_at,
            ]
        )
        self._hello = _sign(identity, HELLO_DOMAIN, body)
        self._done = False

    def hello(self) -> bytes:
        return self._hello

    def finish(self, accept: bytes) -> tuple[bytes, SessionKeys]:
        """Check the responder's ACCEPT; return the CONFIRM message and the session keys.

        Raises:
            HandshakeError: forged, replayed, spliced, stale or malformed ACCEPT.
        """
        if self._done:
            raise HandshakeError("this handshake already finished")
        body, f = _open(accept, ACCEPT_DOMAIN, "accept")
        if len(f) != 11:
            raise HandshakeError("accept has the wrong number of fields")
        _, sid, i_did, r_did, hello_hash, nonce_r, eph_r, caps, creds, issued, sig = f
        if sid != self.session_id or i_did != self._identity.did or r_did != self._responder:
            raise HandshakeError("accept belongs to another session or party")
        if hello_hash != _h(self._hello):
            raise HandshakeError("accept does not answer this hello (spliced transcript)")
        _verify(self._responder, ACCEPT_DOMAIN, body, sig)
        _need_bytes(nonce_r, NONCE_BYTES, "responder nonce")
        eph_r = _need_bytes(eph_r, 32, "responder ephemeral key")
        _check_time(issued, self._clock.now_ms(), self._limits)
        peer = PeerOffer(
            self._responder,
            self.session_id,
            _str_list(caps, MAX_CAPABILITIES, "capabilities"),
            _bytes_list(creds, MAX_CREDENTIALS, "credentials"),
        )
        transcript = _h(self._hello + accept)
        i2r, r2i = _derive(self._eph_secret, eph_r, transcript)
        confirm_body = _pack(
            ["confirm", self.session_id, self._identity.did, self._responder, transcript]
        )
        self._done = True
        return _sign(self._identity, CONFIRM_DOMAIN, confirm_body), SessionKeys(
            self.session_id,
            peer,
            send_key=i2r,
            receive_key=r2i,
            transcript_hash=transcript,
            initiator=self._identity.did,
            issued_at_ms=self._issued_at,
        )


class HandshakeResponder:
    """The answering side: ``receive_hello`` -> (hooks decide) -> ``accept`` -> ``confirm``.

    A responder object serves one session. ``seen_hellos`` (shared across sessions)
    refuses a replayed HELLO while it is fresh.
    """

    def __init__(
        self,
        identity: AgentIdentity,
        *,
        clock: Clock,
        seen_hellos: ReplayCache,
        limits: HandshakeLimits = HandshakeLimits(),
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._identity = identity
        self._clock = clock
        self._seen = seen_hellos
        self._limits = limits
        self._random = random_bytes
        self._hello: bytes | None = None
        self._offer: PeerOffer | None = None
        self._peer_eph: bytes = b""
        self._accept: bytes | None = None
        self._keys: SessionKeys | None = None
        self._issued_at = 0

    def receive_hello(self, hello: bytes) -> PeerOffer:
        """Verify a HELLO and return what the initiator offers (for the refusal hooks).

        Raises:
            HandshakeError: forged, replayed, stale, misaddressed or malformed HELLO.
        """
        if self._hello is not None:
            raise HandshakeError("this responder already received a hello")
        body, f = _open(hello, HELLO_DOMAIN, "hello")
        if len(f) != 10:
            raise HandshakeError("hello has the wrong number of fields")
        _, sid, i_did, r_did, nonce_i, eph_i, caps, creds, issued, sig = f
        if r_did != self._identity.did:
            raise HandshakeError("hello is addressed to another agent")
        if i_did == self._identity.did:
            raise HandshakeError("an agent cannot handshake with itself")
        _verify(i_did, HELLO_DOMAIN, body, sig)
        sid = _need_bytes(sid, SESSION_ID_BYTES, "session id")
        _need_bytes(nonce_i, NONCE_BYTES, "initiator nonce")
        self._peer_eph = _need_bytes(eph_i, 32, "initiator ephemeral key")
        now = self._clock.now_ms()
        issued_at = _check_time(issued, now, self._limits)
        try:
            self._seen.remember(str(i_did), sid, issued_at + self._limits.max_age_ms, now_ms=now)
        except EnvelopeError as exc:  # ReplayedEnvelope / ReplayCacheFull
            raise HandshakeError(f"hello refused: {exc}") from None
        self._hello = hello
        self._issued_at = issued_at
        self._offer = PeerOffer(
            str(i_did),
            sid,
            _str_list(caps, MAX_CAPABILITIES, "capabilities"),
            _bytes_list(creds, MAX_CREDENTIALS, "credentials"),
        )
        return self._offer

    def accept(
        self, *, capabilities: Sequence[str] = (), credentials: Sequence[bytes] = ()
    ) -> bytes:
        """The ACCEPT message, once the hooks agreed to talk to this peer."""
        if self._hello is None or self._offer is None or self._accept is not None:
            raise HandshakeError("accept() needs exactly one verified hello first")
        eph_secret, eph_public = _ephemeral(self._random)
        body = _pack(
            [
                "accept",
                self._offer.session_id,
                self._offer.did,
                self._identity.did,
                _h(self._hello),
                self._random(NONCE_BYTES),
                eph_public,
                list(capabilities),
                list(credentials),
                self._clock.now_ms(),
            ]
        )
        self._accept = _sign(self._identity, ACCEPT_DOMAIN, body)
        transcript = _h(self._hello + self._accept)
        i2r, r2i = _derive(eph_secret, self._peer_eph, transcript)
        self._keys = SessionKeys(
            self._offer.session_id,
            self._offer,
            send_key=r2i,
            receive_key=i2r,
            transcript_hash=transcript,
            initiator=self._offer.did,
            issued_at_ms=self._issued_at,
        )
        return self._accept

    def confirm(self, confirm: bytes) -> SessionKeys:
        """Check the initiator's CONFIRM; the session is established when this returns.

        Raises:
            HandshakeError: forged, replayed or spliced CONFIRM.
        """
        if self._keys is None or self._offer is None:
            raise HandshakeError("confirm() before accept()")
        body, f = _open(confirm, CONFIRM_DOMAIN, "confirm")
        if len(f) != 6:
            raise HandshakeError("confirm has the wrong number of fields")
        _, sid, i_did, r_did, transcript, sig = f
        if sid != self._offer.session_id or i_did != self._offer.did or r_did != self._identity.did:
            raise HandshakeError("confirm belongs to another session or party")
        if transcript != self._keys.transcript_hash:
            raise HandshakeError("confirm does not match this transcript (replayed or spliced)")
        _verify(self._offer.did, CONFIRM_DOMAIN, body, sig)
        keys, self._keys = self._keys, None
        return keys
