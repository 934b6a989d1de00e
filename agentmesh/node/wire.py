"""Small msgpack bodies the runtime itself exchanges (error replies, handshake steps)."""

from __future__ import annotations

import msgpack

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


def encode_refusal(code: str, reason: str) -> bytes:
    return msgpack.packb(["refused", code, reason[:1024]], use_bin_type=True)


def decode_reply(data: bytes) -> tuple[str, bytes | str, str]:
    """A handshake reply: ("accept", message, "") | ("ok", b"", "") | ("refused", code, reason)."""
    fields = _unpack(data)
    if isinstance(fields, list) and fields:
        if fields[0] == "accept" and len(fields) == 2 and isinstance(fields[1], bytes):
            return "accept", fields[1], ""
        if fields[0] == "ok" and len(fields) == 1:
            return "ok", b"", ""
        if (
            fields[0] == "refused"
            and len(fields) == 3
            and isinstance(fields[1], str)
            and isinstance(fields[2], str)
        ):
            return "refused", fields[1], fields[2]
    raise WireFormatError("malformed handshake reply")


def encode_accept(message: bytes) -> bytes:
    return msgpack.packb(["accept", message], use_bin_type=True)


def encode_ok() -> bytes:
    return msgpack.packb(["ok"], use_bin_type=True)


def _unpack(data: bytes) -> object:
    if len(data) > MAX_CONTROL_BYTES:
        raise WireFormatError("control body too large")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError):
        raise WireFormatError("control body is not valid msgpack") from None
