"""Receipts: content ids, canonical bytes, signatures and the attacks on them."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.trust.conftest import identity, receipt
from trust import (
    ForgedReceipt,
    MalformedReceipt,
    Outcome,
    Receipt,
    SignerMismatch,
    decode_signed_receipt,
    sign_receipt,
    verify_receipt,
)
from trust.evidence import MAX_RECEIPT_BYTES, SignedReceipt

ALICE, BOB, MALLORY = identity(1), identity(2), identity(3)


def test_id_is_a_hash_of_the_content() -> None:
    a = Receipt.create(
        observer=ALICE.did, subject=BOB.did, interaction_id="x", outcome=Outcome.SUCCESS, at_ms=5
    )
    b = Receipt.create(
        observer=ALICE.did, subject=BOB.did, interaction_id="x", outcome=Outcome.SUCCESS, at_ms=5
    )
    c = Receipt.create(
        observer=ALICE.did, subject=BOB.did, interaction_id="x", outcome=Outcome.FAILURE, at_ms=5
    )
    assert a.receipt_id == b.receipt_id != c.receipt_id
    assert len(a.receipt_id) == 32


def test_sign_verify_round_trip() -> None:
    r = receipt(ALICE.did, BOB.did, Outcome.TIMEOUT, action="search", weight=2.5)
    wire = sign_receipt(r, ALICE).encode()
    decoded = decode_signed_receipt(wire)
    assert verify_receipt(decoded, sender=ALICE.did) == r


def test_only_the_observer_signs() -> None:
    with pytest.raises(SignerMismatch):
        sign_receipt(receipt(ALICE.did, BOB.did), MALLORY)


def test_signature_by_someone_else_is_forged() -> None:
    r = receipt(ALICE.did, BOB.did, Outcome.FAILURE)
    forged = SignedReceipt(r, MALLORY.sign(b"agentmesh/trust/receipt/1\x00" + r.canonical_body()))
    with pytest.raises(ForgedReceipt) as err:
        verify_receipt(forged)
    assert err.value.code == "forged_receipt"
    assert err.value.observer == ALICE.did


def test_sender_not_the_observer_is_refused() -> None:
    signed = sign_receipt(receipt(ALICE.did, BOB.did), ALICE)
    with pytest.raises(SignerMismatch) as err:
        verify_receipt(signed, sender=MALLORY.did)
    assert err.value.code == "signer_mismatch"


def test_tampered_outcome_breaks_the_signature() -> None:
    wire = sign_receipt(receipt(ALICE.did, BOB.did, Outcome.SUCCESS), ALICE).encode()
    tampered = wire.replace(b'"success"', b'"failure"')
    with pytest.raises(ForgedReceipt):
        verify_receipt(decode_signed_receipt(tampered))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"r":[],"s":""}',
        b'{"r":[2,"a","b","c","success",1,null,1.0],"s":"' + b"00" * 64 + b'"}',
        b'{"r":[1,"a","b","c","great",1,null,1.0],"s":"' + b"00" * 64 + b'"}',
        b'{"r":[1,"a","b","c","success",-1,null,1.0],"s":"' + b"00" * 64 + b'"}',
        b'{"r":[1,"a","b","c","success",1,null,0.0],"s":"' + b"00" * 64 + b'"}',
        b'{"r":[1,"a","b","c","success",1,null,1],"s":"' + b"00" * 64 + b'"}',
        b'{"r": [1,"a","b","c","success",1,null,1.0],"s":"' + b"00" * 64 + b'"}',
        b'{"r":[1,"a","b","c","success",1,null,1.0],"s":"zz"}',
        b'{"r":[1,"a","b","c","success",1,null,1.0],"s":"' + b"00" * 64 + b'","x":1}',
        b"x" * (MAX_RECEIPT_BYTES + 1),
    ],
)
def test_malformed_wire_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedReceipt) as err:
        decode_signed_receipt(data)
    assert err.value.code == "malformed_receipt"


@pytest.mark.parametrize(
    "changes",
    [
        {"observer": ""},
        {"subject": "x" * 300},
        {"at_ms": -1},
        {"at_ms": True},
        {"weight": float("nan")},
        {"weight": 11.0},
        {"action": ""},
        {"outcome": "success"},
    ],
)
def test_bad_fields_are_refused(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "observer": ALICE.did,
        "subject": BOB.did,
        "interaction_id": "i",
        "outcome": Outcome.SUCCESS,
        "at_ms": 1,
    }
    fields.update(changes)
    with pytest.raises(MalformedReceipt):
        Receipt.create(**fields)  # type: ignore[arg-type]


@given(
    interaction=st.text(min_size=1, max_size=40),
    action=st.none() | st.text(min_size=1, max_size=20),
    at_ms=st.integers(min_value=0, max_value=2**53 - 1),
    weight=st.floats(min_value=1e-6, max_value=10.0),
    outcome=st.sampled_from(Outcome),
)
def test_encoding_round_trips_and_is_canonical(
    interaction: str, action: str | None, at_ms: int, weight: float, outcome: Outcome
) -> None:
    r = Receipt.create(
        observer=ALICE.did,
        subject=BOB.did,
        interaction_id=interaction,
        outcome=outcome,
        at_ms=at_ms,
        action=action,
        weight=weight,
    )
    signed = sign_receipt(r, ALICE)
    wire = signed.encode()
    decoded = decode_signed_receipt(wire)
    assert decoded == signed
    # The cached canonical body is the receipt's, whoever made the signed receipt.
    assert decoded.canonical_body() == signed.canonical_body() == r.canonical_body()
    assert SignedReceipt(r, signed.signature).encode() == wire
    assert verify_receipt(decoded) == r
    assert json.loads(wire)["r"][4] == outcome.value


def test_signature_hex_must_be_canonical_lowercase() -> None:
    wire = sign_receipt(receipt(ALICE.did, BOB.did), ALICE).encode()
    signature = json.loads(wire)["s"]
    upper = wire.replace(signature.encode(), signature.upper().encode())
    assert upper != wire
    with pytest.raises(MalformedReceipt, match="non-canonical"):
        decode_signed_receipt(upper)


def test_a_cached_body_cannot_be_passed_in() -> None:
    r = receipt(ALICE.did, BOB.did)
    other = receipt(ALICE.did, BOB.did, Outcome.FAILURE)
    with pytest.raises(TypeError):
        SignedReceipt(r, ALICE.sign(other.canonical_body()), other.canonical_body())  # type: ignore[call-arg]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(MalformedReceipt):
        decode_signed_receipt(data)
