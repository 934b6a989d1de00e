"""Session-frame test vectors (``docs/iatp.md`` section 15), written to ``sessions.json``.

The receiver (Bob) holds one session with Alice: its id and Bob's receive key
(Alice's send key, ``k_I->R`` with Alice as initiator) are given in hex. A vector's
frame must be opened against that session (or against no session when
``session`` is null), then decoded like a signed frame's payload with the
vector's ``now_ms`` and audience. ``session_state`` (optional) gives the held
session's lifetime state (section 15.1) under the document's ``session_limits``:
when Bob first held its keys, how many frames he opened under it, and when it
was superseded; by default it was held since ``now_ms``, with nothing received
and not superseded. Nonces are fixed here so the frames are reproducible; a
sender draws a fresh random nonce for every frame.
"""

from __future__ import annotations

import hashlib
from typing import Any

from iatp.session_frame import SESSION_DOMAIN, seal_session_payload
from tests.vectors.generate import (
    ALICE,
    BASIC_DECODED,
    BOB,
    MALLORY,
    NOW,
    SPEC,
    Json,
    accept,
    keys_section,
    pack,
    payload,
    reject,
)

SESSION_ID = hashlib.blake2b(b"iatp test vectors: session id", digest_size=16).digest()
ALICE_TO_BOB = hashlib.blake2b(b"iatp test vectors: k_I->R", digest_size=32).digest()
OTHER_SESSION_ID = hashlib.blake2b(b"iatp test vectors: older session", digest_size=16).digest()
NONCE = hashlib.blake2b(b"iatp test vectors: session nonce", digest_size=24).digest()
HELLO_ISSUED_AT = NOW - 60_000
# The defaults of iatp.session_table.SessionLimits (section 15.1).
MAX_AGE_MS = 3_600_000
MAX_MESSAGES = 1_000_000
GRACE_MS = 30_000


def session_frame(
    sender: object = ALICE.did,
    session_id: object = SESSION_ID,
    payload_bytes: object | None = None,
    ciphertext: object | None = None,
    key: bytes = ALICE_TO_BOB,
    nonce: object = NONCE,
) -> bytes:
    body = payload() if payload_bytes is None else payload_bytes
    if ciphertext is None:
        assert isinstance(session_id, bytes)
        assert isinstance(body, bytes)
        assert isinstance(sender, str)
        assert isinstance(nonce, bytes)
        ciphertext = seal_session_payload(key, session_id, sender, nonce, body)
    return pack([1, sender, session_id, nonce, ciphertext])


def pack_fields(data: bytes) -> list[Any]:
    import msgpack

    fields: list[Any] = msgpack.unpackb(data, raw=False)
    return fields


def session_vectors() -> list[Json]:
    items: list[Json] = []

    def add(name: str, description: str, data: bytes, expected: Json, **extra: Any) -> None:
        assert all(v["name"] != name for v in items), name
        vector: Json = {
            "name": name,
            "description": description,
            "frame_hex": data.hex(),
            "now_ms": NOW,
            "audience": [BOB.did],
            "session": "alice" if extra.get("session", True) else None,
            "expected": expected,
        }
        if "state" in extra:
            vector["session_state"] = extra["state"]
        items.append(vector)

    def state(
        held_since_ms: int = NOW, frames_received: int = 0, superseded_at_ms: int | None = None
    ) -> Json:
        return {
            "held_since_ms": held_since_ms,
            "frames_received": frames_received,
            "superseded_at_ms": superseded_at_ms,
        }

    good = session_frame()
    add("accept/basic", "Alice to Bob inside their session.", good, accept(BASIC_DECODED))
    tampered = bytearray(good)
    tampered[-40] ^= 0x01
    add(
        "reject/bad-mac-tampered-ciphertext",
        "One bit of the ciphertext flipped after sealing: the AEAD tag does not verify.",
        bytes(tampered),
        reject("bad_mac"),
    )
    add(
        "reject/bad-mac-reflected",
        "Sealed under Bob's own direction key (here: a different key): keys are directional.",
        session_frame(key=hashlib.blake2b(b"iatp test vectors: k_R->I", digest_size=32).digest()),
        reject("bad_mac"),
    )
    other_nonce = bytearray(NONCE)
    other_nonce[0] ^= 0x01
    add(
        "reject/bad-mac-other-nonce",
        "The ciphertext of the basic frame under a different nonce.",
        pack([1, ALICE.did, SESSION_ID, bytes(other_nonce), pack_fields(good)[4]]),
        reject("bad_mac"),
    )
    add(
        "reject/unknown-session-id",
        "The frame names a session the receiver does not hold (e.g. one forgotten long ago).",
        session_frame(session_id=OTHER_SESSION_ID),
        reject("unknown_session"),
    )
    add(
        "reject/unknown-session-none",
        "The receiver holds no session with the sender.",
        good,
        reject("unknown_session"),
        session=False,
    )
    add(
        "reject/unknown-session-other-sender",
        "Mallory's frame, but the receiver's session is with Alice.",
        session_frame(sender=MALLORY.did, payload_bytes=payload(sender=MALLORY.did)),
        reject("unknown_session"),
    )
    add(
        "accept/superseded-within-grace",
        "Superseded exactly grace_ms ago: the grace window still holds (frames on the way).",
        good,
        accept(BASIC_DECODED),
        state=state(superseded_at_ms=NOW - GRACE_MS),
    )
    add(
        "reject/unknown-session-superseded",
        "Superseded grace_ms + 1 ms ago: the session is forgotten.",
        good,
        reject("unknown_session"),
        state=state(superseded_at_ms=NOW - GRACE_MS - 1),
    )
    add(
        "accept/session-age-boundary",
        "Held for max_age_ms - 1 ms: still valid.",
        good,
        accept(BASIC_DECODED),
        state=state(held_since_ms=NOW - MAX_AGE_MS + 1),
    )
    add(
        "reject/session-expired-age",
        "Held for exactly max_age_ms: expired.",
        good,
        reject("session_expired"),
        state=state(held_since_ms=NOW - MAX_AGE_MS),
    )
    add(
        "accept/session-messages-boundary",
        "max_messages - 1 frames opened under the session before this one: still valid.",
        good,
        accept(BASIC_DECODED),
        state=state(frames_received=MAX_MESSAGES - 1),
    )
    add(
        "reject/session-expired-messages",
        "max_messages frames opened under the session already: expired.",
        good,
        reject("session_expired"),
        state=state(frames_received=MAX_MESSAGES),
    )
    add(
        "reject/unknown-session-expired-long-ago",
        "Expired for grace_ms already: forgotten, so unknown rather than expired.",
        good,
        reject("unknown_session"),
        state=state(held_since_ms=NOW - MAX_AGE_MS - GRACE_MS),
    )
    add(
        "precedence/session-expired-before-mac",
        "Expired and tampered: the session's limits are checked before its MAC.",
        bytes(tampered),
        reject("session_expired"),
        state=state(frames_received=MAX_MESSAGES),
    )
    add(
        "reject/sender-mismatch",
        "Opens under the session, but the payload names Mallory as sender: a session party cannot "
        "speak for anyone else.",
        session_frame(payload_bytes=payload(sender=MALLORY.did)),
        reject("sender_mismatch"),
    )
    add(
        "reject/missing-fields",
        "A signed 4-item frame sent where session frames are expected.",
        pack([1, ALICE.did, payload(), b"\0" * 64]),
        reject("missing_fields"),
    )
    add(
        "reject/field-type-short-nonce",
        "A 23-byte nonce.",
        session_frame(nonce=b"\0" * 23, ciphertext=b"\0" * 64),
        reject("field_type"),
    )
    add(
        "reject/field-type-short-ciphertext",
        "A ciphertext shorter than its 16-byte tag.",
        session_frame(ciphertext=b"\0" * 15),
        reject("field_type"),
    )
    add(
        "reject/replayed",
        "Accepted once already (the receiver has seen this id from Alice).",
        good,
        reject("replayed"),
    )
    items[-1]["seen_before"] = [[ALICE.did, BASIC_DECODED["id_hex"]]]
    return items


def sessions_document() -> Json:
    return {
        "description": (
            "IATP session-frame test vectors. The receiver is Bob; when session is 'alice' "
            "he holds a session with Alice whose id and receive key are given (hex), in the "
            "vector's session_state if any (else held since now_ms, no frames received, not "
            "superseded). Parse frame_hex as a session frame, check the session (held, not "
            "superseded for longer than grace_ms, not expired under session_limits) and open "
            "the XChaCha20-Poly1305 ciphertext (aad = session_domain || session id || sender), "
            "then decode and check the payload as for a signed frame with now_ms and audience "
            "(default limits), with seen_before pre-loaded in the replay cache."
        ),
        "spec": SPEC + " section 15",
        "generator": "python -m tests.vectors.generate",
        "session_domain_hex": SESSION_DOMAIN.hex(),
        "keys": keys_section(("alice", "bob", "mallory")),
        "session_limits": {
            "max_age_ms": MAX_AGE_MS,
            "max_messages": MAX_MESSAGES,
            "grace_ms": GRACE_MS,
        },
        "session": {
            "peer": ALICE.did,
            "initiator": ALICE.did,
            "hello_issued_at_ms": HELLO_ISSUED_AT,
            "session_id_hex": SESSION_ID.hex(),
            "receive_key_hex": ALICE_TO_BOB.hex(),
        },
        "vectors": session_vectors(),
    }
