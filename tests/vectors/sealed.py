"""Sealed-frame test vectors (``docs/iatp.md`` section 16), written to ``sealed.json``.

The receiver is Bob (his seed is in ``keys``). A vector's frame must be opened
with Bob's key (derive his X25519 secret from the Ed25519 seed), and the signed
frame inside checked as in ``envelopes.json`` with ``now_ms`` and Bob's DID as
audience. Ephemeral secrets and nonces are fixed here so the frames are
reproducible; a sender draws fresh random ones for every frame.
"""

from __future__ import annotations

import hashlib

from iatp.sealed import SEALED_DOMAIN, parse_sealed_frame, seal_frame_to, x25519_public_for_did
from tests.vectors.generate import (
    BASIC,
    BASIC_DECODED,
    BOB,
    MALLORY,
    NOW,
    SPEC,
    Json,
    accept,
    keys_section,
    pack,
    reject,
    valid,
)

EPHEMERAL = hashlib.blake2b(b"iatp test vectors: sealed ephemeral", digest_size=32).digest()
NONCE = hashlib.blake2b(b"iatp test vectors: sealed nonce", digest_size=24).digest()


def sealed(frame: bytes = BASIC, recipient: str = BOB.did) -> bytes:
    return seal_frame_to(recipient, frame, ephemeral_secret=EPHEMERAL, nonce=NONCE)


def sealed_vectors() -> list[Json]:
    items: list[Json] = []

    def add(name: str, description: str, data: bytes, expected: Json) -> None:
        assert all(v["name"] != name for v in items), name
        items.append(
            {
                "name": name,
                "description": description,
                "frame_hex": data.hex(),
                "now_ms": NOW,
                "audience": [BOB.did],
                "expected": expected,
            }
        )

    good = sealed()
    add(
        "accept/basic",
        "The basic signed frame (Alice to Bob), sealed to Bob.",
        good,
        accept(BASIC_DECODED),
    )
    tampered = bytearray(good)
    tampered[-20] ^= 0x01
    add(
        "reject/bad-seal-tampered",
        "One bit of the ciphertext flipped: the AEAD tag does not verify.",
        bytes(tampered),
        reject("bad_seal"),
    )
    parts = parse_sealed_frame(good)
    add(
        "reject/bad-seal-other-ephemeral",
        "The ciphertext of the basic vector under another ephemeral public key.",
        pack([1, BOB.did, hashlib.sha256(b"other").digest(), parts.nonce, parts.ciphertext]),
        reject("bad_seal"),
    )
    add(
        "reject/wrong-audience-sealed-to-another",
        "Sealed to Mallory, delivered to Bob.",
        sealed(recipient=MALLORY.did),
        reject("wrong_audience"),
    )
    add(
        "reject/wrong-audience-forwarded",
        "Alice's signed frame to Mallory, re-sealed to Bob by Mallory (sign then encrypt: "
        "the signed payload names Mallory, so Bob refuses it).",
        sealed(frame=valid(recipient=MALLORY.did)[0]),
        reject("wrong_audience"),
    )
    add(
        "reject/field-type-short-nonce",
        "A 23-byte nonce.",
        pack([1, BOB.did, parts.ephemeral_public, parts.nonce[:23], parts.ciphertext]),
        reject("field_type"),
    )
    add(
        "reject/missing-fields",
        "A signed 4-item frame sent where sealed frames are expected.",
        BASIC,
        reject("missing_fields"),
    )
    return items


def sealed_document() -> Json:
    return {
        "description": (
            "IATP sealed-frame test vectors. The receiver is Bob. Parse frame_hex as a sealed "
            "frame, check that it is sealed to Bob, derive the key (X25519 of Bob's secret and "
            "the ephemeral key, BLAKE2b-256 keyed with it over sealed_domain || ephemeral || "
            "Bob's X25519 public key), open the XChaCha20-Poly1305 ciphertext (aad = "
            "sealed_domain || Bob's DID || ephemeral), then receive the signed frame inside as "
            "in envelopes.json with now_ms and audience (default limits, empty replay cache)."
        ),
        "spec": SPEC + " section 16",
        "generator": "python -m tests.vectors.generate",
        "sealed_domain_hex": SEALED_DOMAIN.hex(),
        "keys": keys_section(("alice", "bob", "mallory")),
        "bob_x25519_public_hex": x25519_public_for_did(BOB.did).hex(),
        "vectors": sealed_vectors(),
    }
