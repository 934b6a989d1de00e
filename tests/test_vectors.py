"""The implementation against the cross-language test vectors in ``tests/vectors``.

Three kinds of check:

* every vector holds for ``iatp`` (envelopes through ``open_envelope`` with a
  ``ManualClock`` and a pre-seeded ``ReplayCache``, DIDs, rotation statements);
* the committed JSON is exactly what ``python -m tests.vectors.generate`` writes,
  so the vectors cannot drift from the generator;
* every rejection code of the envelope receive path has at least one vector.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from iatp import errors
from iatp.clock import ManualClock
from iatp.did import did_from_public_key, is_did, public_key_from_did
from iatp.envelope import (
    SIGNING_DOMAIN,
    Envelope,
    EnvelopeLimits,
    check_validity,
    decode_payload,
    open_envelope,
)
from iatp.errors import EnvelopeError, InvalidDID, ReplayedEnvelope, RotationError
from iatp.handshake import PeerOffer, SessionKeys
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache
from iatp.rotation import ROTATION_ACCEPT_DOMAIN, ROTATION_DOMAIN, decode_rotation
from iatp.sealed import open_sealed_frame, parse_sealed_frame, x25519_public_for_did
from iatp.session_frame import parse_session_frame
from iatp.session_table import SessionLimits, SessionTable
from tests.vectors import generate

VECTOR_DIR = Path(__file__).resolve().parent / "vectors"


def _load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VECTOR_DIR / name).read_text(encoding="utf-8"))
    return loaded


ENVELOPES = _load("envelopes.json")
DIDS = _load("dids.json")
ROTATION = _load("rotation.json")
SESSIONS = _load("sessions.json")
SEALED = _load("sealed.json")
# Codes only the session-frame receive path raises (iatp.md section 15).
SESSION_ONLY_CODES = {"bad_mac", "session_expired", "unknown_session"}
SEALED_ONLY_CODES = {"bad_seal"}

# The codes the envelope receive path can raise, as the brief of the spec lists them.
LISTED_ENVELOPE_CODES = {
    "oversized",
    "malformed",
    "unsupported_version",
    "field_type",
    "missing_fields",
    "extra_fields",
    "trailing_bytes",
    "non_canonical",
    "invalid_sender",
    "bad_signature",
    "sender_mismatch",
    "expired",
    "issued_in_future",
    "lifetime_too_long",
    "wrong_audience",
    "replayed",
}


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def _envelope_error_codes() -> set[str]:
    """The code of every concrete EnvelopeError subclass defined in iatp.errors."""
    return {
        cls.code
        for cls in _subclasses(EnvelopeError)
        if cls.__module__ == errors.__name__ and cls.code != EnvelopeError.code
    }


def _envelope_json(envelope: Envelope) -> dict[str, Any]:
    return {
        "type": envelope.type,
        "id_hex": envelope.id.hex(),
        "sender": envelope.sender,
        "recipient": envelope.recipient,
        "issued_at_ms": envelope.issued_at_ms,
        "expires_at_ms": envelope.expires_at_ms,
        "correlation_id_hex": None
        if envelope.correlation_id is None
        else envelope.correlation_id.hex(),
        "headers": [[key, value] for key, value in envelope.headers],
        "body_hex": envelope.body.hex(),
    }


def _receiver(vector: dict[str, Any]) -> tuple[dict[str, Any], ReplayCache]:
    limits = EnvelopeLimits(**vector["limits"])
    now = vector["now_ms"]
    replay = ReplayCache(
        max_entries=vector.get("replay_max_entries", 1_000_000),
        clock_skew_ms=limits.clock_skew_ms,
        since_ms=vector.get("replay_since_ms"),
    )
    # "Live at now_ms": remembered as if accepted now, with expires_at = now.
    for sender, id_hex in vector["seen_before"]:
        replay.remember(sender, bytes.fromhex(id_hex), now, now_ms=now)
    settings = {
        "clock": ManualClock(now),
        "audience": vector["audience"],
        "limits": limits,
        "replay": replay,
    }
    return settings, replay


# ------------------------------------------------------------------ envelopes


@pytest.mark.parametrize("vector", ENVELOPES["vectors"], ids=lambda v: v["name"])
def test_envelope_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["frame_hex"])
    expected = vector["expected"]
    settings, replay = _receiver(vector)
    if expected["verdict"] == "accept":
        envelope = open_envelope(data, **settings)
        assert _envelope_json(envelope) == expected["envelope"]
        # Accepting it remembered it: the same frame again is a replay.
        with pytest.raises(ReplayedEnvelope):
            open_envelope(data, **settings)
    else:
        assert expected["verdict"] == "reject"
        entries_before = len(replay)
        with pytest.raises(EnvelopeError) as info:
            open_envelope(data, **settings)
        assert info.value.code == expected["code"], str(info.value)
        assert len(replay) == entries_before, "a rejected envelope must not be remembered"


def test_every_envelope_rejection_code_has_a_vector() -> None:
    codes = {
        v["expected"]["code"] for v in ENVELOPES["vectors"] if v["expected"]["verdict"] == "reject"
    }
    defined = _envelope_error_codes()
    assert defined >= LISTED_ENVELOPE_CODES
    assert defined - SESSION_ONLY_CODES - SEALED_ONLY_CODES - codes == set(), (
        "rejection codes without a vector"
    )
    assert codes <= defined, "vectors expect codes the errors module does not define"


# ------------------------------------------------------------------ session frames


def _session_receiver(document: dict[str, Any], vector: dict[str, Any]) -> SessionTable:
    """Bob's sessions: the document's session (unless null) in the vector's state."""
    table = SessionTable(SessionLimits(**document["session_limits"]))
    if vector["session"] is None:
        return table
    held = document["session"]
    session_id = bytes.fromhex(held["session_id_hex"])
    keys = SessionKeys(
        session_id=session_id,
        peer=PeerOffer(held["peer"], session_id, (), ()),
        send_key=bytes(32),  # Bob's own direction: not used to receive
        receive_key=bytes.fromhex(held["receive_key_hex"]),
        transcript_hash=bytes(32),
        initiator=held["initiator"],
        issued_at_ms=held["hello_issued_at_ms"],
    )
    state = vector.get("session_state", {})
    record = table.add(keys, now_ms=state.get("held_since_ms", vector["now_ms"]))
    record.received = state.get("frames_received", 0)
    record.superseded_at_ms = state.get("superseded_at_ms")
    return table


@pytest.mark.parametrize("vector", SESSIONS["vectors"], ids=lambda v: v["name"])
def test_session_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["frame_hex"])
    now = vector["now_ms"]
    replay = ReplayCache()
    for sender, id_hex in vector.get("seen_before", []):
        replay.remember(sender, bytes.fromhex(id_hex), now + 60_000, now_ms=now)

    def receive() -> Envelope:
        frame = parse_session_frame(data)
        opened = _session_receiver(SESSIONS, vector).open(frame, now_ms=now)
        envelope = decode_payload(opened)
        check_validity(envelope, now_ms=now, audience=vector["audience"])
        replay.remember(envelope.sender, envelope.id, envelope.expires_at_ms, now_ms=now)
        return envelope

    expected = vector["expected"]
    if expected["verdict"] == "accept":
        assert _envelope_json(receive()) == expected["envelope"]
    else:
        with pytest.raises(EnvelopeError) as info:
            receive()
        assert info.value.code == expected["code"], str(info.value)


@pytest.mark.parametrize("vector", SEALED["vectors"], ids=lambda v: v["name"])
def test_sealed_vector(vector: dict[str, Any]) -> None:
    bob_seed = bytes.fromhex(SEALED["keys"]["bob"]["seed_hex"])
    bob = AgentIdentity.from_seed(bob_seed)
    assert x25519_public_for_did(bob.did).hex() == SEALED["bob_x25519_public_hex"]

    def receive() -> Envelope:
        inner = open_sealed_frame(parse_sealed_frame(bytes.fromhex(vector["frame_hex"])), bob)
        return open_envelope(
            inner, clock=ManualClock(vector["now_ms"]), audience=vector["audience"], replay=None
        )

    expected = vector["expected"]
    if expected["verdict"] == "accept":
        assert _envelope_json(receive()) == expected["envelope"]
    else:
        with pytest.raises(EnvelopeError) as info:
            receive()
        assert info.value.code == expected["code"], str(info.value)
    assert {v["expected"].get("code") for v in SEALED["vectors"]} >= SEALED_ONLY_CODES


def test_every_session_only_code_has_a_vector() -> None:
    codes = {
        v["expected"]["code"] for v in SESSIONS["vectors"] if v["expected"]["verdict"] == "reject"
    }
    assert codes >= SESSION_ONLY_CODES
    assert _envelope_error_codes() >= SESSION_ONLY_CODES


def test_envelope_vectors_have_accepts_and_unique_names() -> None:
    vectors = ENVELOPES["vectors"]
    names = [v["name"] for v in vectors]
    assert len(names) == len(set(names))
    accepted = [v for v in vectors if v["expected"]["verdict"] == "accept"]
    assert {"accept/basic", "accept/headers-and-correlation", "accept/empty-body"} <= {
        v["name"] for v in accepted
    }


def test_envelope_keys_derive_from_their_seeds() -> None:
    assert bytes.fromhex(ENVELOPES["signing_domain_hex"]) == SIGNING_DOMAIN
    for key in ENVELOPES["keys"].values():
        identity = AgentIdentity.from_seed(bytes.fromhex(key["seed_hex"]))
        assert identity.public_key.hex() == key["public_key_hex"]
        assert identity.did == key["did"]


# ----------------------------------------------------------------------- DIDs


@pytest.mark.parametrize("vector", DIDS["valid"], ids=lambda v: v["name"])
def test_valid_did_vector(vector: dict[str, Any]) -> None:
    public_key = bytes.fromhex(vector["public_key_hex"])
    assert vector["multicodec_key_hex"] == "ed01" + vector["public_key_hex"]
    assert did_from_public_key(public_key) == vector["did"]
    assert public_key_from_did(vector["did"]) == public_key
    assert is_did(vector["did"])
    assert len(vector["did"]) == 56
    assert vector["did"].startswith("did:key:z6Mk")
    if vector["seed_hex"] is not None:
        identity = AgentIdentity.from_seed(bytes.fromhex(vector["seed_hex"]))
        assert identity.public_key == public_key
        assert identity.did == vector["did"]


@pytest.mark.parametrize("vector", DIDS["invalid"], ids=lambda v: v["name"])
def test_invalid_did_vector(vector: dict[str, Any]) -> None:
    did = vector["did"]
    with pytest.raises(InvalidDID) as info:
        public_key_from_did(did)
    assert info.value.code == "invalid_did"
    assert not is_did(did)
    # As an envelope sender the same string is rejected as invalid_sender.
    frame = msgpack.packb([1, did, msgpack.packb([]), bytes(64)], use_bin_type=True)
    with pytest.raises(EnvelopeError) as envelope_info:
        open_envelope(frame, clock=ManualClock(), audience="x", replay=None)
    assert envelope_info.value.code == "invalid_sender"


def test_seeded_did_vectors_agree_with_didkit() -> None:
    pytest.importorskip("didkit")
    from agentmesh.didkit_bridge import didkit_did_for

    for vector in DIDS["valid"]:
        if vector["seed_hex"] is not None:
            identity = AgentIdentity.from_seed(bytes.fromhex(vector["seed_hex"]))
            assert didkit_did_for(identity) == vector["did"]


# ------------------------------------------------------------------- rotation


@pytest.mark.parametrize("vector", ROTATION["vectors"], ids=lambda v: v["name"])
def test_rotation_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["statement_hex"])
    expected = vector["expected"]
    if expected["verdict"] == "accept":
        statement = decode_rotation(data)
        fields = expected["statement"]
        assert statement.old_did == fields["old_did"]
        assert statement.new_did == fields["new_did"]
        assert statement.sequence == fields["sequence"]
        assert statement.issued_at_ms == fields["issued_at_ms"]
        assert statement.old_signature.hex() == fields["old_signature_hex"]
        assert statement.new_signature.hex() == fields["new_signature_hex"]
        assert statement.claim_bytes().hex() == expected["claim_hex"]
        assert statement.encode() == data
    else:
        assert expected["verdict"] == "reject"
        with pytest.raises(RotationError) as info:
            decode_rotation(data)
        assert info.value.code == expected["code"]


def test_rotation_vectors_cover_accept_and_forgeries() -> None:
    assert bytes.fromhex(ROTATION["rotation_domain_hex"]) == ROTATION_DOMAIN
    assert bytes.fromhex(ROTATION["rotation_accept_domain_hex"]) == ROTATION_ACCEPT_DOMAIN
    verdicts = {v["name"]: v["expected"]["verdict"] for v in ROTATION["vectors"]}
    assert len(verdicts) == len(ROTATION["vectors"])
    assert verdicts["accept/basic"] == "accept"
    for forged in (
        "reject/new-key-alone",
        "reject/unrelated-old-signature",
        "reject/unrelated-countersignature",
        "reject/changed-sequence",
    ):
        assert verdicts[forged] == "reject"


# ---------------------------------------------------------------------- drift


def test_generator_reproduces_the_committed_files_exactly() -> None:
    generated = generate.generate()
    assert set(generated) == set(generate.FILES)
    for name, content in generated.items():
        committed = (VECTOR_DIR / name).read_bytes()
        assert committed == content.encode("utf-8"), (
            f"tests/vectors/{name} differs from the generator output; "
            "run `python -m tests.vectors.generate` and review the diff"
        )


def test_generator_is_deterministic() -> None:
    assert generate.generate() == generate.generate()
