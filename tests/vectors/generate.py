"""Deterministic generator of the IATP cross-language test vectors.

Run ``python -m tests.vectors.generate`` to (re)write ``envelopes.json``,
``dids.json`` and ``rotation.json`` next to this file; ``--check`` only compares.
Every input is fixed: keys come from fixed seeds (``AgentIdentity.from_seed``),
ids and times are constants, and Ed25519 signatures are deterministic, so every
run writes the same bytes. The file format is described in ``docs/iatp.md``
("Test vectors"); ``tests/test_vectors.py`` checks the implementation against
the files and that this script reproduces them exactly.

Valid frames come from the implementation (``seal_envelope``, cross-checked
against a plain msgpack encoding). Frames that break a rule are assembled by
hand here; those that must get past the signature check are signed by hand over
``SIGNING_DOMAIN || payload`` with the sender's key. The ``expected`` outcome of
every vector is written down here, never computed by running the receiver.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgpack

from iatp.base58 import b58encode
from iatp.envelope import (
    DEFAULT_LIMITS,
    IATP_VERSION,
    SIGNING_DOMAIN,
    Envelope,
    EnvelopeLimits,
    seal_envelope,
)
from iatp.identity import AgentIdentity
from iatp.rotation import ROTATION_ACCEPT_DOMAIN, ROTATION_DOMAIN, rotate

HERE = Path(__file__).resolve().parent
SPEC = "docs/iatp.md"
FILES = ("envelopes.json", "dids.json", "rotation.json", "sessions.json", "sealed.json")

Json = dict[str, Any]

# --------------------------------------------------------------------------- keys


def key_seed(label: str) -> bytes:
    """The fixed seed of a vector key: SHA-256 of an ASCII label."""
    return hashlib.sha256(f"iatp test vector key: {label}".encode()).digest()


KEY_LABELS = ("alice", "alice_next", "bob", "mallory")
KEYS = {label: AgentIdentity.from_seed(key_seed(label)) for label in KEY_LABELS}
ALICE, ALICE_NEXT, BOB, MALLORY = (KEYS[label] for label in KEY_LABELS)


def keys_section(labels: Iterable[str]) -> Json:
    out: Json = {}
    for label in labels:
        identity = KEYS[label]
        out[label] = {
            "seed_derivation": f'SHA-256("iatp test vector key: {label}")',
            "seed_hex": identity.seed().hex(),
            "public_key_hex": identity.public_key.hex(),
            "did": identity.did,
        }
    return out


def did_of(raw_key_with_codec: bytes) -> str:
    return "did:key:z" + b58encode(raw_key_with_codec)


# The Ed25519 identity point (0, 1): a small-order key. A lax verifier accepts
# the signature R = identity, S = 0 for every message under it.
IDENTITY_POINT = bytes([1]) + bytes(31)
IDENTITY_DID = did_of(b"\xed\x01" + IDENTITY_POINT)
ED25519_L = 2**252 + 27742317777372353535851937790883648493

# ----------------------------------------------------------------- msgpack helpers


def pack(obj: object) -> bytes:
    """Canonical msgpack, as the reference encoder writes it."""
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def fixarray(items: Sequence[bytes]) -> bytes:
    assert len(items) <= 15
    return bytes([0x90 | len(items)]) + b"".join(items)


def array16(items: Sequence[bytes]) -> bytes:
    return b"\xdc" + len(items).to_bytes(2, "big") + b"".join(items)


def fixmap(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    assert len(pairs) <= 15
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def bin16(data: bytes) -> bytes:
    return b"\xc5" + len(data).to_bytes(2, "big") + data


def str8(raw_utf8: bytes) -> bytes:
    return b"\xd9" + bytes([len(raw_utf8)]) + raw_utf8


def str16(text: str) -> bytes:
    raw = text.encode()
    return b"\xda" + len(raw).to_bytes(2, "big") + raw


# ------------------------------------------------------------- envelope building

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
LIFETIME = 60_000
NOW = T0 + 1_000
MAX_I64 = 2**63 - 1
ID = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
OTHER_ID = bytes.fromhex("101112131415161718191a1b1c1d1e1f")
CORRELATION = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
FIELD_ORDER = (
    "type",
    "id",
    "sender",
    "recipient",
    "issued_at_ms",
    "expires_at_ms",
    "correlation_id",
    "headers",
    "body",
)


def fields(**overrides: Any) -> list[Any]:
    """The nine payload fields of the basic message, with ``overrides`` applied.

    ``headers`` may be a list of (key, value) tuples; it is packed in the order given.
    """
    values: dict[str, Any] = {
        "type": "demo.ping",
        "id": ID,
        "sender": ALICE.did,
        "recipient": BOB.did,
        "issued_at_ms": T0,
        "expires_at_ms": T0 + LIFETIME,
        "correlation_id": None,
        "headers": [],
        "body": b"hello",
    }
    unknown = set(overrides) - set(values)
    assert not unknown, unknown
    values.update(overrides)
    headers = values["headers"]
    if isinstance(headers, list) and all(isinstance(item, tuple) for item in headers):
        values["headers"] = dict(headers)
    return [values[name] for name in FIELD_ORDER]


def payload(**overrides: Any) -> bytes:
    return pack(fields(**overrides))


def payload_parts(**overrides: Any) -> list[bytes]:
    """The nine separately packed fields, to splice in a hand-made encoding."""
    return [pack(value) for value in fields(**overrides)]


def sign(identity: AgentIdentity, payload_bytes: bytes) -> bytes:
    return identity.sign(SIGNING_DOMAIN + payload_bytes)


def frame(sender: object, payload_bytes: object, signature: object, version: object = 1) -> bytes:
    return pack([version, sender, payload_bytes, signature])


def signed(
    payload_bytes: bytes, *, signer: AgentIdentity = ALICE, sender: str | None = None
) -> bytes:
    """A canonical frame whose signature verifies (by ``signer``) over ``payload_bytes``."""
    return frame(sender or signer.did, payload_bytes, sign(signer, payload_bytes))


def valid(*, signer: AgentIdentity = ALICE, **overrides: Any) -> tuple[bytes, Json]:
    """A frame sealed by the implementation, and the decoded envelope expected."""
    values = dict(zip(FIELD_ORDER, fields(**overrides), strict=True))
    headers = tuple(values["headers"].items())
    assert [k for k, _ in headers] == sorted(k for k, _ in headers), "give headers sorted"
    envelope = Envelope(
        type=values["type"],
        id=values["id"],
        sender=values["sender"],
        recipient=values["recipient"],
        issued_at_ms=values["issued_at_ms"],
        expires_at_ms=values["expires_at_ms"],
        correlation_id=values["correlation_id"],
        headers=headers,
        body=values["body"],
    )
    data = seal_envelope(envelope, signer)
    assert data == signed(payload(**overrides), signer=signer), "seal_envelope != plain msgpack"
    corr = values["correlation_id"]
    decoded = {
        "type": values["type"],
        "id_hex": values["id"].hex(),
        "sender": values["sender"],
        "recipient": values["recipient"],
        "issued_at_ms": values["issued_at_ms"],
        "expires_at_ms": values["expires_at_ms"],
        "correlation_id_hex": None if corr is None else corr.hex(),
        "headers": [[k, v] for k, v in headers],
        "body_hex": values["body"].hex(),
    }
    return data, decoded


BASIC, BASIC_DECODED = valid()
BASIC_PAYLOAD = payload()
BASIC_SIGNATURE = sign(ALICE, BASIC_PAYLOAD)
assert frame(ALICE.did, BASIC_PAYLOAD, BASIC_SIGNATURE) == BASIC


def limits_json(limits: EnvelopeLimits) -> Json:
    return {
        "max_frame_bytes": limits.max_frame_bytes,
        "max_lifetime_ms": limits.max_lifetime_ms,
        "clock_skew_ms": limits.clock_skew_ms,
        "max_headers": limits.max_headers,
    }


def accept(decoded: Json) -> Json:
    return {"verdict": "accept", "envelope": decoded}


def reject(code: str) -> Json:
    return {"verdict": "reject", "code": code}


class EnvelopeVectors:
    def __init__(self) -> None:
        self.items: list[Json] = []

    def add(
        self,
        name: str,
        description: str,
        data: bytes,
        expected: Json,
        *,
        now_ms: int = NOW,
        audience: Sequence[str] = (BOB.did,),
        limits: EnvelopeLimits = DEFAULT_LIMITS,
        seen_before: Sequence[tuple[str, bytes]] = (),
        replay_max_entries: int | None = None,
        replay_since_ms: int | None = None,
    ) -> None:
        assert all(v["name"] != name for v in self.items), name
        vector: Json = {
            "name": name,
            "description": description,
            "frame_hex": data.hex(),
            "now_ms": now_ms,
            "audience": list(audience),
            "limits": limits_json(limits),
            "seen_before": [[sender, envelope_id.hex()] for sender, envelope_id in seen_before],
        }
        if replay_max_entries is not None:
            vector["replay_max_entries"] = replay_max_entries
        if replay_since_ms is not None:
            vector["replay_since_ms"] = replay_since_ms
        vector["expected"] = expected
        self.items.append(vector)


def envelope_vectors() -> list[Json]:
    v = EnvelopeVectors()
    skew = DEFAULT_LIMITS.clock_skew_ms
    max_lifetime = DEFAULT_LIMITS.max_lifetime_ms

    # ------------------------------------------------------------------ accepted
    v.add(
        "accept/basic",
        "The basic message: type 'demo.ping', body 'hello', no headers, no correlation id. "
        "The worked example of the specification.",
        BASIC,
        accept(BASIC_DECODED),
    )
    data, decoded = valid(
        type="task.result",
        correlation_id=CORRELATION,
        headers=[("content-type", "application/json"), ("trace-id", "4bf92f3577b34da6")],
        body=b'{"ok":true}',
    )
    v.add(
        "accept/headers-and-correlation",
        "Two headers (keys in code point order) and a 16-byte correlation id.",
        data,
        accept(decoded),
    )
    data, decoded = valid(body=b"")
    v.add("accept/empty-body", "An empty body is bin8 of length 0 (c4 00).", data, accept(decoded))
    data, decoded = valid(headers=[("empty", "")])
    v.add("accept/empty-header-value", "A header value may be empty.", data, accept(decoded))
    data, decoded = valid(body=bytes(range(256)) + bytes(44))
    v.add("accept/body-bin16", "A 300-byte body is encoded as bin16.", data, accept(decoded))
    data, decoded = valid(
        headers=[(f"h{i:02d}", f"value {i}") for i in range(DEFAULT_LIMITS.max_headers)]
    )
    v.add(
        "accept/max-headers",
        "Exactly max_headers (32) headers; the map is encoded as map16.",
        data,
        accept(decoded),
    )
    type_128 = "A0.b_c:d/e-" + "x" * 117
    data, decoded = valid(type=type_128)
    v.add(
        "accept/type-128-characters",
        "A 128-character type using every allowed punctuation character.",
        data,
        accept(decoded),
    )
    recipient_256 = "\u00e9" * 256
    data, decoded = valid(recipient=recipient_256)
    v.add(
        "accept/recipient-256-code-points",
        "A recipient of 256 code points (U+00E9) is 512 UTF-8 bytes; the limit counts code "
        "points, so this is accepted.",
        data,
        accept(decoded),
        audience=[recipient_256],
    )
    data, decoded = valid(
        headers=[("a", "1"), ("\u00e9", "2"), ("\uff5e", "3"), ("\U0001f600", "4")]
    )
    v.add(
        "accept/headers-code-point-order",
        "Header keys sorted by Unicode code point: U+FF5E sorts before U+1F600 (UTF-16 code "
        "unit order would put U+1F600 first).",
        data,
        accept(decoded),
    )
    v.add(
        "accept/audience-set",
        "The receiver accepts several recipient values; the envelope names one of them.",
        BASIC,
        accept(BASIC_DECODED),
        audience=["did:example:other", BOB.did, "service:bob"],
    )
    v.add(
        "accept/earliest-moment",
        "now = issued_at - clock_skew: the first accepted millisecond.",
        BASIC,
        accept(BASIC_DECODED),
        now_ms=T0 - skew,
    )
    v.add(
        "accept/last-moment",
        "now = expires_at + clock_skew - 1: the last accepted millisecond.",
        BASIC,
        accept(BASIC_DECODED),
        now_ms=T0 + LIFETIME + skew - 1,
    )
    data, decoded = valid(expires_at_ms=T0 + max_lifetime)
    v.add(
        "accept/max-lifetime",
        "expires_at - issued_at = max_lifetime_ms exactly.",
        data,
        accept(decoded),
    )
    data, decoded = valid(expires_at_ms=T0 + 1)
    v.add("accept/one-ms-lifetime", "The shortest lifetime: 1 ms.", data, accept(decoded))
    v.add(
        "accept/frame-at-size-limit",
        "max_frame_bytes equals the frame length exactly.",
        BASIC,
        accept(BASIC_DECODED),
        limits=EnvelopeLimits(max_frame_bytes=len(BASIC)),
    )
    v.add(
        "accept/replay-key-includes-sender",
        "The replay cache holds the same id from another sender and another id from this "
        "sender: neither is this (sender, id).",
        BASIC,
        accept(BASIC_DECODED),
        seen_before=[(BOB.did, ID), (ALICE.did, OTHER_ID)],
    )
    data, decoded = valid(issued_at_ms=MAX_I64 - LIFETIME, expires_at_ms=MAX_I64)
    v.add(
        "accept/int64-max-expiry",
        "expires_at = 2^63-1. expires_at + clock_skew exceeds the int64 range: the rules are "
        "on mathematical integers, so a 64-bit implementation must not wrap around.",
        data,
        accept(decoded),
        now_ms=MAX_I64 - LIFETIME + 1_000,
    )
    data, decoded = valid(signer=BOB, sender=BOB.did, recipient=ALICE.did, id=OTHER_ID)
    v.add(
        "accept/other-sender", "bob writes to alice.", data, accept(decoded), audience=[ALICE.did]
    )

    # ----------------------------------------------------------------- oversized
    v.add(
        "reject/oversized",
        "The frame is one byte longer than max_frame_bytes.",
        BASIC,
        reject("oversized"),
        limits=EnvelopeLimits(max_frame_bytes=len(BASIC) - 1),
    )
    v.add(
        "reject/oversized-before-decoding",
        "Garbage longer than max_frame_bytes is oversized: the size is checked before decoding.",
        b"\xc1" * 65,
        reject("oversized"),
        limits=EnvelopeLimits(max_frame_bytes=64),
    )

    # ----------------------------------------------------------------- malformed
    v.add("reject/empty-input", "Zero bytes.", b"", reject("malformed"))
    v.add(
        "reject/truncated-frame",
        "The basic frame minus its last byte.",
        BASIC[:-1],
        reject("malformed"),
    )
    v.add("reject/reserved-byte", "0xc1 is never used by msgpack.", b"\xc1", reject("malformed"))
    bad_sender = str8(ALICE.did.encode()[:-1] + b"\xff")
    v.add(
        "reject/invalid-utf8-frame-sender",
        "The frame sender str holds the byte 0xff: invalid UTF-8.",
        fixarray([b"\x01", bad_sender, pack(BASIC_PAYLOAD), pack(BASIC_SIGNATURE)]),
        reject("malformed"),
    )
    parts = payload_parts()
    surrogate = b"\xed\xa0\x80"  # U+D800 encoded as if it were a scalar value
    parts[3] = str8(b"did:key:" + surrogate)
    bad = fixarray(parts)
    v.add(
        "reject/surrogate-in-payload",
        "Validly signed payload whose recipient str contains ED A0 80 (an encoded UTF-16 "
        "surrogate), which is not valid UTF-8.",
        signed(bad),
        reject("malformed"),
    )
    parts = payload_parts()
    parts[0] = str8(b"demo\xc0\xaeping")  # overlong encoding of '.'
    v.add(
        "reject/overlong-utf8-in-payload",
        "Validly signed payload whose type str contains C0 AE, an overlong encoding of '.'.",
        signed(fixarray(parts)),
        reject("malformed"),
    )
    v.add(
        "reject/ext-type-in-frame",
        "The signature field is an ext8 value of length 0 (c7 00 05): extension types are "
        "never allowed.",
        fixarray([b"\x01", pack(ALICE.did), pack(BASIC_PAYLOAD), b"\xc7\x00\x05"]),
        reject("malformed"),
    )
    parts = payload_parts()
    parts[8] = b"\xd4\x01\x00"  # fixext1
    v.add(
        "reject/ext-type-in-payload",
        "Validly signed payload whose body is a fixext1 value.",
        signed(fixarray(parts)),
        reject("malformed"),
    )
    parts = payload_parts()
    parts[7] = fixmap([(b"\x01", pack("x"))])
    v.add(
        "reject/integer-header-key",
        "Validly signed payload whose headers map has an integer key: map keys must be str "
        "(or bin, which is then a field_type error).",
        signed(fixarray(parts)),
        reject("malformed"),
    )
    v.add(
        "reject/frame-array-too-long",
        "A frame array of 65 elements: the decoder refuses arrays longer than 64.",
        array16([b"\x01"] * 65),
        reject("malformed"),
    )
    many = {f"h{i:02d}": "" for i in range(65)}
    v.add(
        "reject/header-map-too-long",
        "Validly signed payload with 65 headers: the decoder refuses maps of more than 64 "
        "entries, before the max_headers rule is applied.",
        signed(payload(headers=list(many.items()))),
        reject("malformed"),
    )
    parts = payload_parts()
    truncated_payload = fixarray(parts)[:-1]
    v.add(
        "reject/truncated-payload",
        "Validly signed payload that is cut one byte short.",
        signed(truncated_payload),
        reject("malformed"),
    )

    # ------------------------------------------------------- unsupported_version
    for version, label in ((2, "2"), (0, "0"), (2**64 - 1, "uint64-max"), (-1, "negative")):
        v.add(
            f"reject/version-{label}",
            f"Frame version {version}; everything else is valid.",
            frame(ALICE.did, BASIC_PAYLOAD, BASIC_SIGNATURE, version=version),
            reject("unsupported_version"),
        )
    v.add(
        "reject/version-2-single-field",
        "[2]: an integer version other than 1 is reported before the field count.",
        pack([2]),
        reject("unsupported_version"),
    )

    # --------------------------------------------------------- field_type: frame
    frame_type_cases: list[tuple[str, str, bytes]] = [
        ("frame-is-map", "The frame is a map.", pack({"version": 1})),
        ("frame-is-string", "The frame is a str.", pack("iatp")),
        ("frame-is-integer", "The frame is the integer 1.", pack(1)),
        (
            "version-string",
            "Version is the str '1'.",
            frame(ALICE.did, BASIC_PAYLOAD, BASIC_SIGNATURE, version="1"),
        ),
        (
            "version-true",
            "Version is the boolean true (c3), not an integer.",
            frame(ALICE.did, BASIC_PAYLOAD, BASIC_SIGNATURE, version=True),
        ),
        (
            "version-float",
            "Version is the float64 1.0.",
            frame(ALICE.did, BASIC_PAYLOAD, BASIC_SIGNATURE, version=1.0),
        ),
        (
            "sender-bin",
            "The frame sender is bin instead of str.",
            frame(ALICE.did.encode(), BASIC_PAYLOAD, BASIC_SIGNATURE),
        ),
        ("sender-nil", "The frame sender is nil.", frame(None, BASIC_PAYLOAD, BASIC_SIGNATURE)),
        (
            "payload-str",
            "The payload is a str instead of bin.",
            frame(ALICE.did, "payload", BASIC_SIGNATURE),
        ),
        (
            "payload-inline-array",
            "The payload array is embedded directly instead of as bin-wrapped bytes.",
            fixarray([b"\x01", pack(ALICE.did), BASIC_PAYLOAD, pack(BASIC_SIGNATURE)]),
        ),
        (
            "signature-63-bytes",
            "The signature is 63 bytes.",
            frame(ALICE.did, BASIC_PAYLOAD, BASIC_SIGNATURE[:63]),
        ),
        (
            "signature-65-bytes",
            "The signature is 65 bytes.",
            frame(ALICE.did, BASIC_PAYLOAD, BASIC_SIGNATURE + b"\x00"),
        ),
        (
            "signature-str",
            "The signature is a str.",
            frame(ALICE.did, BASIC_PAYLOAD, "x" * 64),
        ),
    ]
    for label, description, data in frame_type_cases:
        v.add(f"reject/{label}", description, data, reject("field_type"))

    # ------------------------------------------------------- field_type: payload
    headers_33 = [(f"h{i:02d}", "") for i in range(DEFAULT_LIMITS.max_headers + 1)]
    payload_type_cases: list[tuple[str, str, bytes]] = [
        ("payload-is-map", "The payload is a map.", pack({"type": "demo.ping"})),
        ("payload-is-bin", "The payload is a bin.", pack(b"demo.ping")),
        ("type-empty", "type is the empty string.", payload(type="")),
        ("type-space", "type contains a space.", payload(type="demo ping")),
        ("type-leading-dot", "type must start with a letter or digit.", payload(type=".ping")),
        ("type-trailing-newline", "type ends in a newline.", payload(type="demo.ping\n")),
        ("type-non-ascii", "type contains U+00E9.", payload(type="d\u00e9mo.ping")),
        ("type-129-characters", "type is 129 characters.", payload(type="t" * 129)),
        ("type-integer", "type is an integer.", payload(type=7)),
        ("id-15-bytes", "id is 15 bytes.", payload(id=ID[:15])),
        ("id-17-bytes", "id is 17 bytes.", payload(id=ID + b"\x10")),
        ("id-str", "id is a 16-character str.", payload(id="0123456789abcdef")),
        ("payload-sender-bin", "The payload sender is bin.", payload(sender=ALICE.did.encode())),
        ("recipient-empty", "recipient is the empty string.", payload(recipient="")),
        (
            "recipient-257-code-points",
            "recipient is 257 code points (U+00E9).",
            payload(recipient="\u00e9" * 257),
        ),
        ("recipient-nil", "recipient is nil.", payload(recipient=None)),
        ("issued-at-negative", "issued_at_ms is -1.", payload(issued_at_ms=-1)),
        (
            "expires-at-2-pow-63",
            "expires_at_ms is 2^63 (uint64): above the int64 range.",
            payload(expires_at_ms=2**63),
        ),
        ("issued-at-float", "issued_at_ms is a float64.", payload(issued_at_ms=float(T0))),
        ("issued-at-nil", "issued_at_ms is nil.", payload(issued_at_ms=None)),
        (
            "correlation-15-bytes",
            "correlation_id is 15 bytes.",
            payload(correlation_id=CORRELATION[:15]),
        ),
        (
            "correlation-str",
            "correlation_id is a str.",
            payload(correlation_id="f0f1f2f3f4f5f6f7"),
        ),
        ("headers-array", "headers is an array.", payload(headers=["a", "b"])),
        ("headers-nil", "headers is nil.", payload(headers=None)),
        (
            "too-many-headers",
            "33 headers with max_headers = 32.",
            payload(headers=headers_33),
        ),
        ("header-key-bin", "A header key is bin.", payload(headers={b"k": "v"})),
        ("header-value-integer", "A header value is an integer.", payload(headers={"k": 1})),
        ("header-key-empty", "A header key is the empty string.", payload(headers={"": "v"})),
        (
            "header-key-1025",
            "A header key of 1025 characters.",
            payload(headers={"k" * 1025: "v"}),
        ),
        (
            "header-value-1025",
            "A header value of 1025 characters.",
            payload(headers={"k": "v" * 1025}),
        ),
        ("body-str", "body is a str.", payload(body="hello")),
        ("body-nil", "body is nil.", payload(body=None)),
    ]
    for label, description, payload_bytes in payload_type_cases:
        v.add(
            f"reject/{label}",
            description + " The payload is validly signed by the frame sender.",
            signed(payload_bytes),
            reject("field_type"),
        )

    # ------------------------------------------------ missing_fields/extra_fields
    v.add(
        "reject/frame-3-fields",
        "The frame has 3 fields (no signature).",
        pack([1, ALICE.did, BASIC_PAYLOAD]),
        reject("missing_fields"),
    )
    v.add("reject/frame-empty-array", "The frame is [].", pack([]), reject("missing_fields"))
    v.add(
        "reject/payload-8-fields",
        "Validly signed payload of 8 fields (body left out).",
        signed(pack(fields()[:8])),
        reject("missing_fields"),
    )
    v.add(
        "reject/payload-empty-array",
        "Validly signed payload [].",
        signed(pack([])),
        reject("missing_fields"),
    )
    v.add(
        "reject/frame-5-fields",
        "The frame has a fifth field (nil).",
        pack([1, ALICE.did, BASIC_PAYLOAD, BASIC_SIGNATURE, None]),
        reject("extra_fields"),
    )
    v.add(
        "reject/payload-10-fields",
        "Validly signed payload with a tenth field (nil).",
        signed(pack([*fields(), None])),
        reject("extra_fields"),
    )

    # ------------------------------------------------------------ trailing_bytes
    v.add(
        "reject/frame-trailing-zero",
        "The basic frame followed by one 00 byte.",
        BASIC + b"\x00",
        reject("trailing_bytes"),
    )
    v.add(
        "reject/frame-trailing-garbage",
        "The basic frame followed by C1 (not even valid msgpack): still trailing_bytes.",
        BASIC + b"\xc1",
        reject("trailing_bytes"),
    )
    v.add(
        "reject/payload-trailing-byte",
        "Validly signed payload followed by an extra nil (c0) inside the bin.",
        signed(BASIC_PAYLOAD + b"\xc0"),
        reject("trailing_bytes"),
    )

    # ------------------------------------------------------------- non_canonical
    sender_packed, payload_packed, sig_packed = (
        pack(ALICE.did),
        pack(BASIC_PAYLOAD),
        pack(BASIC_SIGNATURE),
    )
    frame_nc_cases: list[tuple[str, str, bytes]] = [
        (
            "version-int8",
            "Version 1 written as int8 (d0 01) instead of a positive fixint.",
            fixarray([b"\xd0\x01", sender_packed, payload_packed, sig_packed]),
        ),
        (
            "version-uint16",
            "Version 1 written as uint16 (cd 00 01).",
            fixarray([b"\xcd\x00\x01", sender_packed, payload_packed, sig_packed]),
        ),
        (
            "frame-array16",
            "The 4-element frame written as array16 (dc 00 04).",
            array16([b"\x01", sender_packed, payload_packed, sig_packed]),
        ),
        (
            "sender-str16",
            "The frame sender written as str16.",
            fixarray([b"\x01", str16(ALICE.did), payload_packed, sig_packed]),
        ),
        (
            "payload-bin16",
            "The payload written as bin16 although it fits bin8.",
            fixarray([b"\x01", sender_packed, bin16(BASIC_PAYLOAD), sig_packed]),
        ),
        (
            "signature-bin16",
            "The signature written as bin16.",
            fixarray([b"\x01", sender_packed, payload_packed, bin16(BASIC_SIGNATURE)]),
        ),
    ]
    for label, description, data in frame_nc_cases:
        v.add(
            f"reject/non-canonical-{label}",
            description + " The signature over the payload is valid.",
            data,
            reject("non_canonical"),
        )

    def spliced(index: int, encoding: bytes) -> bytes:
        parts = payload_parts()
        parts[index] = encoding
        return fixarray(parts)

    payload_nc_cases: list[tuple[str, str, bytes]] = [
        (
            "payload-array16",
            "The 9-element payload written as array16.",
            array16(payload_parts()),
        ),
        (
            "type-str8",
            "type 'demo.ping' written as str8 (d9 09) instead of fixstr.",
            spliced(0, str8(b"demo.ping")),
        ),
        ("id-bin16", "id written as bin16.", spliced(1, bin16(ID))),
        (
            "issued-at-uint64-small",
            "issued_at_ms = 5 written as uint64 (cf ...) instead of a positive fixint; the "
            "encoding is checked before the time rules.",
            spliced(4, b"\xcf" + (5).to_bytes(8, "big")),
        ),
        ("body-bin16", "body written as bin16.", spliced(8, bin16(b"hello"))),
        (
            "empty-headers-map16",
            "Empty headers written as map16 (de 00 00).",
            spliced(7, b"\xde\x00\x00"),
        ),
        (
            "headers-unsorted",
            "Headers 'b' then 'a'.",
            payload(headers=[("b", "1"), ("a", "2")]),
        ),
        (
            "headers-utf16-order",
            "Headers U+1F600 then U+FF5E: UTF-16 code unit order, not code point order.",
            payload(headers=[("\U0001f600", "x"), ("\uff5e", "y")]),
        ),
        (
            "headers-duplicate-key",
            "The headers map holds the key 'a' twice.",
            spliced(7, fixmap([(pack("a"), pack("1")), (pack("a"), pack("2"))])),
        ),
    ]
    for label, description, payload_bytes in payload_nc_cases:
        v.add(
            f"reject/non-canonical-{label}",
            description + " The payload is validly signed by the frame sender.",
            signed(payload_bytes),
            reject("non_canonical"),
        )

    # ------------------------------------------------------------ invalid_sender
    secp_did = did_of(b"\xe7\x01" + b"\x02" + bytes(32))
    invalid_sender_cases = [
        ("did-web", "The frame sender is did:web:example.com.", "did:web:example.com"),
        (
            "wrong-multicodec",
            "The frame sender is a secp256k1 did:key (multicodec e7 01).",
            secp_did,
        ),
        (
            "truncated-did",
            "The frame sender is the alice DID minus its last character.",
            ALICE.did[:-1],
        ),
        ("not-a-did", "The frame sender is 'alice'.", "alice"),
    ]
    for label, description, sender in invalid_sender_cases:
        body = payload(sender=sender)
        v.add(
            f"reject/invalid-sender-{label}",
            description + " The payload names the same sender.",
            frame(sender, body, sign(ALICE, body)),
            reject("invalid_sender"),
        )

    # ------------------------------------------------------------- bad_signature
    flipped = BASIC_SIGNATURE[:63] + bytes([BASIC_SIGNATURE[63] ^ 0x01])
    tampered = payload(body=b"hellp")
    s_value = int.from_bytes(BASIC_SIGNATURE[32:], "little")
    malleated = BASIC_SIGNATURE[:32] + (s_value + ED25519_L).to_bytes(32, "little")
    identity_payload = payload(sender=IDENTITY_DID)
    bad_sig_cases: list[tuple[str, str, bytes]] = [
        (
            "flipped-bit",
            "The lowest bit of the last signature byte is flipped.",
            frame(ALICE.did, BASIC_PAYLOAD, flipped),
        ),
        (
            "tampered-body",
            "The body was changed to 'hellp' after signing the basic payload.",
            frame(ALICE.did, tampered, BASIC_SIGNATURE),
        ),
        (
            "wrong-key",
            "mallory signed the payload; the frame and payload name alice.",
            signed(BASIC_PAYLOAD, signer=MALLORY, sender=ALICE.did),
        ),
        (
            "no-domain",
            "alice signed the payload bytes without the domain prefix.",
            frame(ALICE.did, BASIC_PAYLOAD, ALICE.sign(BASIC_PAYLOAD)),
        ),
        (
            "domain-without-nul",
            "alice signed 'iatp/1/envelope' (no 00 byte) || payload.",
            frame(ALICE.did, BASIC_PAYLOAD, ALICE.sign(b"iatp/1/envelope" + BASIC_PAYLOAD)),
        ),
        (
            "rotation-domain",
            "alice signed 'iatp/1/rotation' 00 || payload: another protocol's domain.",
            frame(ALICE.did, BASIC_PAYLOAD, ALICE.sign(ROTATION_DOMAIN + BASIC_PAYLOAD)),
        ),
        (
            "zero-signature",
            "The signature is 64 zero bytes.",
            frame(ALICE.did, BASIC_PAYLOAD, bytes(64)),
        ),
        (
            "s-plus-l",
            "The valid signature with L added to S (S >= L): a malleated signature that a "
            "verifier without the S < L check would accept.",
            frame(ALICE.did, BASIC_PAYLOAD, malleated),
        ),
        (
            "small-order-key",
            "The sender's key is the identity point (01 00..00, a small-order point) and the "
            "signature is R = identity, S = 0. The cofactorless equation holds for every "
            "message, so a verifier that does not reject small-order keys and R would accept.",
            frame(IDENTITY_DID, identity_payload, IDENTITY_POINT + bytes(32)),
        ),
    ]
    for label, description, data in bad_sig_cases:
        v.add(f"reject/bad-signature-{label}", description, data, reject("bad_signature"))

    # ----------------------------------------------------------- sender_mismatch
    v.add(
        "reject/sender-mismatch",
        "alice signs a payload that names bob as its sender.",
        signed(payload(sender=BOB.did)),
        reject("sender_mismatch"),
    )
    v.add(
        "reject/sender-mismatch-not-a-did",
        "alice signs a payload whose sender is 'alice' (any str passes the type check).",
        signed(payload(sender="alice")),
        reject("sender_mismatch"),
    )

    # ------------------------------------------------------------- time & lifetime
    v.add(
        "reject/expired-boundary",
        "now = expires_at + clock_skew: the first rejected millisecond.",
        BASIC,
        reject("expired"),
        now_ms=T0 + LIFETIME + skew,
    )
    v.add(
        "reject/expired-long-ago",
        "now is one day after expires_at.",
        BASIC,
        reject("expired"),
        now_ms=T0 + LIFETIME + 86_400_000,
    )
    v.add(
        "reject/expired-zero-skew",
        "clock_skew_ms = 0 and now = expires_at.",
        BASIC,
        reject("expired"),
        now_ms=T0 + LIFETIME,
        limits=EnvelopeLimits(clock_skew_ms=0),
    )
    v.add(
        "reject/issued-in-future-boundary",
        "now = issued_at - clock_skew - 1: one millisecond too early.",
        BASIC,
        reject("issued_in_future"),
        now_ms=T0 - skew - 1,
    )
    v.add(
        "reject/issued-in-future-int64",
        "issued_at = 2^63-1-60000, expires_at = 2^63-1, now = the basic now.",
        signed(payload(issued_at_ms=MAX_I64 - LIFETIME, expires_at_ms=MAX_I64)),
        reject("issued_in_future"),
    )
    v.add(
        "reject/lifetime-too-long",
        "expires_at - issued_at = max_lifetime_ms + 1.",
        signed(payload(expires_at_ms=T0 + max_lifetime + 1)),
        reject("lifetime_too_long"),
    )
    v.add(
        "reject/lifetime-zero",
        "expires_at = issued_at: the lifetime must be positive.",
        signed(payload(expires_at_ms=T0)),
        reject("lifetime_too_long"),
    )
    v.add(
        "reject/lifetime-negative",
        "expires_at < issued_at.",
        signed(payload(expires_at_ms=T0 - 1)),
        reject("lifetime_too_long"),
    )
    v.add(
        "reject/lifetime-custom-limit",
        "A 60 s lifetime against max_lifetime_ms = 59999.",
        BASIC,
        reject("lifetime_too_long"),
        limits=EnvelopeLimits(max_lifetime_ms=LIFETIME - 1),
    )

    # ------------------------------------------------------------ wrong_audience
    v.add(
        "reject/wrong-audience",
        "The envelope is addressed to bob; the receiver is mallory.",
        BASIC,
        reject("wrong_audience"),
        audience=[MALLORY.did],
    )
    v.add(
        "reject/wrong-audience-empty-set",
        "The receiver accepts no recipient at all.",
        BASIC,
        reject("wrong_audience"),
        audience=[],
    )
    data, _ = valid(recipient="service:caf\u00e9")
    v.add(
        "reject/wrong-audience-unicode-normalization",
        "recipient is 'service:caf\\u00e9' (NFC); the receiver accepts 'service:cafe\\u0301' "
        "(NFD). Recipients are compared code point by code point, without normalization.",
        data,
        reject("wrong_audience"),
        audience=["service:cafe\u0301"],
    )
    data, _ = valid(recipient="service:Bob")
    v.add(
        "reject/wrong-audience-case",
        "recipient 'service:Bob' against the accepted 'service:bob': comparison is exact.",
        data,
        reject("wrong_audience"),
        audience=["service:bob"],
    )

    # ------------------------------------------------------------------- replay
    v.add(
        "reject/replayed",
        "(alice, id) is already in the replay cache.",
        BASIC,
        reject("replayed"),
        seen_before=[(ALICE.did, ID)],
    )
    v.add(
        "reject/replay-cache-full",
        "The replay cache holds its maximum of 1 live entry (another sender's); a new "
        "envelope is refused rather than an entry evicted.",
        BASIC,
        reject("replay_cache_full"),
        seen_before=[(BOB.did, ID)],
        replay_max_entries=1,
    )
    v.add(
        "reject/issued-before-start",
        "The receiver's replay cache started remembering 1 ms after issued_at_ms (the "
        "receiver restarted): it cannot vouch that this envelope was not accepted before, "
        "so it refuses it.",
        BASIC,
        reject("issued_before_start"),
        replay_since_ms=T0 + 1,
    )
    v.add(
        "accept/issued-at-replay-start",
        "issued_at_ms equals the moment the receiver's replay cache started: accepted.",
        BASIC,
        accept(BASIC_DECODED),
        replay_since_ms=T0,
    )

    # ---------------------------------------------------------------- precedence
    v.add(
        "precedence/non-canonical-before-signature",
        "Version written as d0 01 and a zero signature: the frame encoding is checked before "
        "the signature.",
        fixarray([b"\xd0\x01", sender_packed, payload_packed, pack(bytes(64))]),
        reject("non_canonical"),
    )
    v.add(
        "precedence/invalid-sender-before-signature",
        "An invalid sender DID with a zero signature.",
        frame("did:web:example.com", BASIC_PAYLOAD, bytes(64)),
        reject("invalid_sender"),
    )
    bad_type = payload(type="")
    v.add(
        "precedence/signature-before-payload",
        "A payload with an empty type and an invalid signature: nothing in the payload is "
        "looked at before the signature verifies.",
        frame(ALICE.did, bad_type, bytes(64)),
        reject("bad_signature"),
    )
    v.add(
        "precedence/field-type-before-non-canonical",
        "Unsorted headers and an empty type, validly signed.",
        signed(payload(type="", headers=[("b", "1"), ("a", "2")])),
        reject("field_type"),
    )
    v.add(
        "precedence/non-canonical-before-sender-mismatch",
        "Unsorted headers and a payload sender of bob, validly signed by alice.",
        signed(payload(sender=BOB.did, headers=[("b", "1"), ("a", "2")])),
        reject("non_canonical"),
    )
    v.add(
        "precedence/sender-mismatch-before-time",
        "Payload sender bob (signed by alice), and now is long after expiry.",
        signed(payload(sender=BOB.did)),
        reject("sender_mismatch"),
        now_ms=T0 + 86_400_000,
    )
    v.add(
        "precedence/lifetime-before-future",
        "Lifetime max+1 and issued far in the future.",
        signed(
            payload(issued_at_ms=T0 + 86_400_000, expires_at_ms=T0 + 86_400_000 + max_lifetime + 1)
        ),
        reject("lifetime_too_long"),
    )
    v.add(
        "precedence/future-before-audience",
        "Issued in the future and addressed to someone else.",
        BASIC,
        reject("issued_in_future"),
        now_ms=T0 - skew - 1,
        audience=[MALLORY.did],
    )
    v.add(
        "precedence/expired-before-audience",
        "Expired and addressed to someone else.",
        BASIC,
        reject("expired"),
        now_ms=T0 + LIFETIME + skew,
        audience=[MALLORY.did],
    )
    v.add(
        "precedence/audience-before-replay",
        "Addressed to someone else and already in the replay cache.",
        BASIC,
        reject("wrong_audience"),
        audience=[MALLORY.did],
        seen_before=[(ALICE.did, ID)],
    )
    v.add(
        "precedence/expired-before-replay",
        "Expired and already in the replay cache.",
        BASIC,
        reject("expired"),
        now_ms=T0 + LIFETIME + skew,
        seen_before=[(ALICE.did, ID)],
    )
    return v.items


def envelopes_document() -> Json:
    return {
        "description": (
            "IATP envelope receive-path test vectors. Feed frame_hex (decoded) to the receiver "
            "with the given now_ms, audience (the set of accepted recipient values) and limits; "
            "pre-load the replay cache with seen_before (sender DID, id) pairs that are live at "
            "now_ms, capped at replay_max_entries live entries when that field is present; "
            "when replay_since_ms is present the cache started remembering then (a restart) "
            "and refuses envelopes issued before it. "
            "The receiver must reach the expected verdict; a rejection must carry the given code."
        ),
        "spec": SPEC,
        "generator": "python -m tests.vectors.generate",
        "signing_domain_hex": SIGNING_DOMAIN.hex(),
        "version": IATP_VERSION,
        "default_limits": limits_json(DEFAULT_LIMITS),
        "keys": keys_section(("alice", "bob", "mallory")),
        "vectors": envelope_vectors(),
    }


# --------------------------------------------------------------------------- DIDs

RFC8032_SEEDS = {
    "rfc8032-test-1": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "rfc8032-test-2": "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
}


def dids_document() -> Json:
    valid_items: list[Json] = []

    def add_valid(name: str, description: str, seed: bytes | None, public_key: bytes) -> None:
        valid_items.append(
            {
                "name": name,
                "description": description,
                "seed_hex": None if seed is None else seed.hex(),
                "public_key_hex": public_key.hex(),
                "multicodec_key_hex": (b"\xed\x01" + public_key).hex(),
                "did": did_of(b"\xed\x01" + public_key),
            }
        )

    for label in KEY_LABELS:
        identity = KEYS[label]
        add_valid(label, f"The '{label}' vector key.", identity.seed(), identity.public_key)
    for label, seed_hex in RFC8032_SEEDS.items():
        identity = AgentIdentity.from_seed(bytes.fromhex(seed_hex))
        add_valid(
            label,
            f"The key of RFC 8032 section 7.1, {label[8:].upper().replace('-', ' ')}.",
            identity.seed(),
            identity.public_key,
        )
    add_valid(
        "zero-public-key",
        "32 zero bytes. Syntactically a valid did:key (no curve check at this layer); no "
        "signature ever verifies under it.",
        None,
        bytes(32),
    )
    add_valid(
        "identity-point",
        "The identity point 01 00..00 (small order). Syntactically valid; signatures under it "
        "are always rejected (see envelope vector reject/bad-signature-small-order-key).",
        None,
        IDENTITY_POINT,
    )
    add_valid(
        "all-ff-public-key",
        "32 bytes of ff: the largest key, still 47 base58 digits.",
        None,
        b"\xff" * 32,
    )

    alice_mb = ALICE.did[len("did:key:") :]
    alice_b58 = alice_mb[1:]
    key = ALICE.public_key
    b64url = base64.urlsafe_b64encode(b"\xed\x01" + key).rstrip(b"=").decode()
    invalid_cases: list[tuple[str, str, str]] = [
        ("empty", "", "the empty string"),
        ("method-only", "did:key:", "no multibase value"),
        ("multibase-only", "did:key:z", "multibase 'z' with no data"),
        ("did-web", "did:web:example.com", "method is not 'key'"),
        ("uppercase-scheme", "DID:key:" + alice_mb, "'did:key:' is case-sensitive"),
        ("uppercase-method", "did:KEY:" + alice_mb, "'did:key:' is case-sensitive"),
        ("no-multibase-prefix", "did:key:" + alice_b58, "base58 data without the 'z' prefix"),
        ("multibase-uppercase-z", "did:key:Z" + alice_b58, "multibase prefix 'Z' is not base58btc"),
        ("multibase-base64url", "did:key:u" + b64url, "multibase 'u' (base64url) is not accepted"),
        ("base58-zero", "did:key:z" + alice_b58[:-1] + "0", "'0' is not in the base58 alphabet"),
        (
            "base58-capital-o",
            "did:key:z" + alice_b58[:-1] + "O",
            "'O' is not in the base58 alphabet",
        ),
        (
            "base58-capital-i",
            "did:key:z" + alice_b58[:-1] + "I",
            "'I' is not in the base58 alphabet",
        ),
        (
            "base58-lowercase-l",
            "did:key:z" + alice_b58[:-1] + "l",
            "'l' is not in the base58 alphabet",
        ),
        (
            "non-ascii-lookalike",
            "did:key:z6\u041ck" + alice_b58[3:],
            "Cyrillic U+041C in place of 'M'",
        ),
        (
            "secp256k1",
            did_of(b"\xe7\x01\x02" + bytes(32)),
            "multicodec e7 01 (secp256k1-pub), 33-byte key",
        ),
        ("x25519", did_of(b"\xec\x01" + key), "multicodec ec 01 (x25519-pub)"),
        (
            "non-minimal-varint",
            did_of(b"\xed\x81\x00" + key),
            "multicodec 0xed as the 3-byte varint ed 81 00",
        ),
        ("key-31-bytes", did_of(b"\xed\x01" + key[:31]), "ed 01 followed by 31 bytes"),
        ("key-33-bytes", did_of(b"\xed\x01" + key + b"\x00"), "ed 01 followed by 33 bytes"),
        ("codec-only", did_of(b"\xed\x01"), "ed 01 with no key"),
        (
            "leading-zero-byte",
            "did:key:z1" + alice_b58,
            "a leading base58 '1' decodes to a 00 byte before ed 01",
        ),
        ("trailing-newline", ALICE.did + "\n", "trailing newline"),
        ("leading-space", " " + ALICE.did, "leading space"),
        ("fragment", ALICE.did + "#" + alice_mb, "a DID URL with a fragment is not a DID"),
        ("too-long", "did:key:z" + "1" * 120, "longer than 128 characters"),
    ]
    invalid_items = [
        {"name": name, "did": did, "reason": reason} for name, did, reason in invalid_cases
    ]
    return {
        "description": (
            "Ed25519 did:key test vectors. valid: public_key -> did and did -> public_key "
            "(and seed -> public_key where a seed is given). invalid: every string must be "
            "rejected as a DID (code invalid_did; as an envelope sender: invalid_sender)."
        ),
        "spec": SPEC,
        "generator": "python -m tests.vectors.generate",
        "valid": valid_items,
        "invalid": invalid_items,
    }


# ----------------------------------------------------------------------- rotation


def claim(old_did: str, new_did: str, sequence: int, issued_at_ms: int) -> bytes:
    return pack([old_did, new_did, sequence, issued_at_ms])


def statement(
    old_did: str, new_did: str, sequence: object, issued_at_ms: int, old_sig: bytes, new_sig: bytes
) -> bytes:
    return pack([old_did, new_did, sequence, issued_at_ms, old_sig, new_sig])


def signed_statement(
    old_did: str,
    new_did: str,
    sequence: int,
    issued_at_ms: int,
    *,
    old_signer: AgentIdentity,
    new_signer: AgentIdentity,
) -> tuple[bytes, bytes, bytes]:
    """(statement, old_sig, new_sig) with the given signers standing in for the two keys."""
    c = claim(old_did, new_did, sequence, issued_at_ms)
    old_sig = old_signer.sign(ROTATION_DOMAIN + c)
    new_sig = new_signer.sign(ROTATION_ACCEPT_DOMAIN + c + old_sig)
    return statement(old_did, new_did, sequence, issued_at_ms, old_sig, new_sig), old_sig, new_sig


def rotation_document() -> Json:
    items: list[Json] = []

    def add(name: str, description: str, data: bytes, expected: Json) -> None:
        assert all(item["name"] != name for item in items), name
        items.append(
            {
                "name": name,
                "description": description,
                "statement_hex": data.hex(),
                "expected": expected,
            }
        )

    def add_valid(name: str, description: str, sequence: int, issued_at_ms: int) -> None:
        s = rotate(ALICE, ALICE_NEXT, sequence=sequence, issued_at_ms=issued_at_ms)
        data, old_sig, new_sig = signed_statement(
            ALICE.did,
            ALICE_NEXT.did,
            sequence,
            issued_at_ms,
            old_signer=ALICE,
            new_signer=ALICE_NEXT,
        )
        assert s.encode() == data, "rotate() != hand-built statement"
        expected = {
            "verdict": "accept",
            "statement": {
                "old_did": ALICE.did,
                "new_did": ALICE_NEXT.did,
                "sequence": sequence,
                "issued_at_ms": issued_at_ms,
                "old_signature_hex": old_sig.hex(),
                "new_signature_hex": new_sig.hex(),
            },
            "claim_hex": claim(ALICE.did, ALICE_NEXT.did, sequence, issued_at_ms).hex(),
        }
        add(name, description, data, expected)

    add_valid("accept/basic", "alice hands over to alice_next, sequence 1.", 1, T0)
    add_valid("accept/sequence-zero", "Sequence 0 is allowed.", 0, T0)
    add_valid(
        "accept/large-values",
        "Sequence 2^32 and issued_at 2^63-1: both written as uint64.",
        2**32,
        MAX_I64,
    )

    rej = {"verdict": "reject", "code": "invalid_rotation"}
    a, n, m = ALICE.did, ALICE_NEXT.did, MALLORY.did

    def forged(
        name: str,
        description: str,
        old_did: str = a,
        new_did: str = n,
        sequence: int = 1,
        *,
        old_signer: AgentIdentity = ALICE,
        new_signer: AgentIdentity = ALICE_NEXT,
    ) -> None:
        data, _, _ = signed_statement(
            old_did, new_did, sequence, T0, old_signer=old_signer, new_signer=new_signer
        )
        add(name, description, data, rej)

    forged(
        "reject/new-key-alone",
        "alice_next signs both parts, claiming alice's identity without alice's key.",
        old_signer=ALICE_NEXT,
    )
    forged(
        "reject/old-key-alone",
        "alice signs both parts; alice_next never agreed.",
        new_signer=ALICE,
    )
    forged(
        "reject/unrelated-old-signature",
        "mallory signs in place of alice; alice_next countersigns.",
        old_signer=MALLORY,
    )
    forged(
        "reject/unrelated-countersignature",
        "alice signs; mallory countersigns in place of alice_next.",
        new_signer=MALLORY,
    )
    forged(
        "reject/same-key",
        "old_did = new_did = alice, both signatures by alice.",
        new_did=a,
        new_signer=ALICE,
    )
    forged(
        "reject/negative-sequence",
        "Sequence -1, validly signed by both keys.",
        sequence=-1,
    )

    good, old_sig, new_sig = signed_statement(a, n, 1, T0, old_signer=ALICE, new_signer=ALICE_NEXT)
    add(
        "reject/changed-sequence",
        "A valid statement with the sequence changed from 1 to 2 afterwards.",
        statement(a, n, 2, T0, old_sig, new_sig),
        rej,
    )
    add(
        "reject/changed-issued-at",
        "A valid statement with issued_at_ms changed by 1 afterwards.",
        statement(a, n, 1, T0 + 1, old_sig, new_sig),
        rej,
    )
    redirected_claim = claim(a, m, 1, T0)
    add(
        "reject/redirected-new-did",
        "alice's signature over (alice -> alice_next) reused with new_did = mallory, who "
        "countersigns the modified claim.",
        statement(
            a, m, 1, T0, old_sig, MALLORY.sign(ROTATION_ACCEPT_DOMAIN + redirected_claim + old_sig)
        ),
        rej,
    )
    plain_claim = claim(a, n, 1, T0)
    add(
        "reject/countersignature-without-old-signature",
        "alice_next countersigns 'iatp/1/rotation-accept' 00 || claim, leaving out old_sig.",
        statement(a, n, 1, T0, old_sig, ALICE_NEXT.sign(ROTATION_ACCEPT_DOMAIN + plain_claim)),
        rej,
    )
    add(
        "reject/swapped-domains",
        "alice signs with the accept domain and alice_next with the rotation domain.",
        statement(
            a,
            n,
            1,
            T0,
            ALICE.sign(ROTATION_ACCEPT_DOMAIN + plain_claim),
            ALICE_NEXT.sign(ROTATION_DOMAIN + plain_claim + old_sig),
        ),
        rej,
    )
    add(
        "reject/swapped-signatures",
        "old_signature and new_signature exchanged.",
        statement(a, n, 1, T0, new_sig, old_sig),
        rej,
    )
    add(
        "reject/invalid-new-did",
        "new_did is did:web:example.com; alice signed the claim, the countersignature is zero.",
        statement(
            a,
            "did:web:example.com",
            1,
            T0,
            ALICE.sign(ROTATION_DOMAIN + claim(a, "did:web:example.com", 1, T0)),
            bytes(64),
        ),
        rej,
    )
    add(
        "reject/truncated-signature",
        "new_signature is 63 bytes.",
        statement(a, n, 1, T0, old_sig, new_sig[:63]),
        rej,
    )
    seq_uint16 = (
        bytes([0x96])
        + pack(a)
        + pack(n)
        + b"\xcd\x00\x01"
        + pack(T0)
        + pack(old_sig)
        + pack(new_sig)
    )
    add(
        "reject/non-canonical-sequence",
        "A valid statement with sequence 1 written as uint16 (cd 00 01).",
        seq_uint16,
        rej,
    )
    add("reject/trailing-byte", "A valid statement followed by 00.", good + b"\x00", rej)
    add(
        "reject/five-fields",
        "The statement without new_signature.",
        pack([a, n, 1, T0, old_sig]),
        rej,
    )
    add(
        "reject/sequence-string",
        "sequence is the str '1'.",
        statement(a, n, "1", T0, old_sig, new_sig),
        rej,
    )
    return {
        "description": (
            "IATP key rotation statement test vectors. Decode statement_hex and verify it; "
            "accepted statements decode to the given fields."
        ),
        "spec": SPEC,
        "generator": "python -m tests.vectors.generate",
        "rotation_domain_hex": ROTATION_DOMAIN.hex(),
        "rotation_accept_domain_hex": ROTATION_ACCEPT_DOMAIN.hex(),
        "keys": keys_section(("alice", "alice_next", "mallory")),
        "vectors": items,
    }


# --------------------------------------------------------------------------- main


def render(document: Json) -> str:
    return json.dumps(document, indent=2, ensure_ascii=True) + "\n"


def generate() -> dict[str, str]:
    """File name -> exact file content."""
    from tests.vectors.sealed import sealed_document  # imports this module
    from tests.vectors.sessions import sessions_document

    return {
        "envelopes.json": render(envelopes_document()),
        "dids.json": render(dids_document()),
        "rotation.json": render(rotation_document()),
        "sessions.json": render(sessions_document()),
        "sealed.json": render(sealed_document()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = parser.parse_args(argv)
    stale = []
    for name, content in generate().items():
        path = args.out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(content, encoding="utf-8", newline="\n")
    if args.check and stale:
        print("stale test vectors: " + ", ".join(stale), file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
