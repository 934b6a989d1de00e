"""Small msgpack bodies the runtime itself exchanges (error replies, handshake steps).

Handshake replies that are not themselves signed handshake messages (the
responder's final ``ok`` and any ``refused``) carry the responder's Ed25519
signature, bound to the session id of the HELLO they answer::

    ok:      sign("iatp/1/handshake-ok\x00" || session_id)
    refused: sign("iatp/1/handshake-refusal\x00" || msgpack([session_id, code, reason]))

so that a third party that can publish on the initiator's reply subject cannot end
or fake the end of a handshake (docs/iatp.md, section 14).
"""

from __future__ import annotations

import msgpack
from nacl.exceptions import BadSignatureError

from iatp.did import verify_key_for_did
from iatp.identity import AgentIdentity

ERROR_TYPE = "iatp.error"
MAX_CONTROL_BYTES = 64 * 1024


class WireFormatError(ValueError):
    """A runtime control body is malformed."""


def encode_error(code: str, message: str) -> bytes:
    return msgpack.packb([code, message[:1024]], use_bin_type=True)


def decode_error(body: bytes) -> tuple[str, str]:
    fields = _unpack(body)
    if not (
        isinstance(fields, list) and len(fields) == 2 and all(isinstance(f, str) for f in fields)
    ):
        raise WireFormatError("error body must be [code, message]")
    return fields[0], fields[1]


def encode_step(step: str, message: bytes) -> bytes:
    return msgpack.packb([step, message], use_bin_type=True)


def decode_step(data: bytes) -> tuple[str, bytes]:
    fields = _unpack(data)
    if not (
        isinstance(fields, list)
        and len(fields) == 2
        and isinstance(fields[0], str)
        and isinstance(fields[1], bytes)
    ):
        raise WireFormatError("handshake step must be [step, message]")
    return fields[0], fields[1]


OK_DOMAIN = b"iatp/1/handshake-ok\x00"
REFUSAL_DOMAIN = b"iatp/1/handshake-refusal\x00"
SIGNATURE_BYTES = 64


def _refusal_bytes(session_id: bytes, code: str, reason: str) -> bytes:
    return REFUSAL_DOMAIN + msgpack.packb([session_id, code, reason], use_bin_type=True)


def encode_refusal(identity: AgentIdentity, session_id: bytes, code: str, reason: str) -> bytes:
    """A refusal of the handshake ``session_id``, signed by the responder ``identity``."""
    reason = reason[:1024]
    signature = identity.sign(_refusal_bytes(session_id, code, reason))
    return msgpack.packb(["refused", code, reason, signature], use_bin_type=True)


def decode_reply(data: bytes) -> tuple[str, bytes | str, str, bytes]:
    """A handshake reply: ("accept", message, "", b""), ("ok", b"", "", signature) or
    ("refused", code, reason, signature). Signatures are checked by :func:`check_signed`."""
    fields = _unpack(data)
    if isinstance(fields, list) and fields:
        if fields[0] == "accept" and len(fields) == 2 and isinstance(fields[1], bytes):
            return "accept", fields[1], "", b""
        if fields[0] == "ok" and len(fields) == 2 and _is_signature(fields[1]):
            return "ok", b"", "", fields[1]
        if (
            fields[0] == "refused"
            and len(fields) == 4
            and isinstance(fields[1], str)
            and isinstance(fields[2], str)
            and _is_signature(fields[3])
        ):
            return "refused", fields[1], fields[2], fields[3]
    raise WireFormatError("malformed handshake reply")


def check_signed(
    responder: str, session_id: bytes, kind: str, code: str, reason: str, signature: bytes
) -> None:
    """Verify the responder's signature on an ``ok`` or ``refused`` reply for ``session_id``.

    Raises:
        WireFormatError: not signed by ``responder`` for this session.
    """
    signed = OK_DOMAIN + session_id if kind == "ok" else _refusal_bytes(session_id, code, reason)
    try:
        verify_key_for_did(responder).verify(signed, signature)
    except BadSignatureError:
        raise WireFormatError(f"{kind} reply not signed by {responder} for this session") from None


def _is_signature(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == SIGNATURE_BYTES


def encode_accept(message: bytes) -> bytes:
    return msgpack.packb(["accept", message], use_bin_type=True)


def encode_ok(identity: AgentIdentity, session_id: bytes) -> bytes:
    """The responder's signed ``ok`` to the CONFIRM of ``session_id``."""
    return msgpack.packb(["ok", identity.sign(OK_DOMAIN + session_id)], use_bin_type=True)


def _unpack(data: bytes) -> object:
    if len(data) > MAX_CONTROL_BYTES:
        raise WireFormatError("control body too large")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        raise WireFormatError("control body is not valid msgpack") from None
