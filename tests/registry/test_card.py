"""Agent cards: signing, strict decoding, and every refusal with its typed error."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iatp.identity import AgentIdentity
from registry.card import (
    MAX_CARD_BYTES,
    AgentCard,
    Capability,
    decode_card,
    sign_card,
    verify_card,
)
from registry.errors import (
    CardDIDMismatch,
    CardError,
    CardExpired,
    CardIssuedInFuture,
    CardSignatureInvalid,
    InvalidCard,
    OversizedCard,
)

ALICE = AgentIdentity.from_seed(b"a" * 32)
NOW = 1_700_000_000_000
SEARCH = Capability(
    name="search.web",
    version="2.1",
    description="search the web",
    input_schema={"type": "object", "properties": {"q": {"type": "string"}}},
    output_schema={"type": "array"},
)


def card(**changes: object) -> AgentCard:
    fields: dict[str, object] = {
        "display_name": "Alice",
        "inbox": "mesh.agent.x.inbox",
        "issued_at_ms": NOW,
        "ttl_ms": 30_000,
        "capabilities": (SEARCH,),
    }
    fields.update(changes)
    return sign_card(ALICE, **fields)  # type: ignore[arg-type]


def test_round_trip_verifies() -> None:
    signed = card()
    assert decode_card(signed.encode(), now_ms=NOW + 1, expected_did=ALICE.did) == signed
    assert signed.capability("search.web", "2.1") == SEARCH
    assert signed.capability("search.web", "9") is None


def tamper(data: bytes, **changes: object) -> bytes:
    fields = json.loads(data)
    fields.update(changes)
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"display_name": "Mallory"}, CardSignatureInvalid),
        ({"expires_at_ms": NOW + 10**7}, CardSignatureInvalid),
        ({"did": AgentIdentity.from_seed(b"m" * 32).did}, CardSignatureInvalid),
        ({"did": "did:web:example.com"}, InvalidCard),
        ({"capabilities": [{"name": "Bad Name", "version": "1"}]}, InvalidCard),
        ({"inbox": "has space"}, InvalidCard),
        ({"extra": 1}, InvalidCard),
        ({"issued_at_ms": "soon"}, InvalidCard),
        ({"signature": "zz"}, InvalidCard),
    ],
)
def test_tampered_cards_are_refused(changes: dict[str, object], error: type[CardError]) -> None:
    with pytest.raises(error):
        decode_card(tamper(card().encode(), **changes), now_ms=NOW)


def test_expired_future_foreign_oversized_and_noncanonical() -> None:
    data = card().encode()
    with pytest.raises(CardExpired):
        decode_card(data, now_ms=NOW + 30_000)
    with pytest.raises(CardIssuedInFuture):
        decode_card(data, now_ms=NOW - 60_000)
    with pytest.raises(CardDIDMismatch):
        decode_card(data, now_ms=NOW, expected_did=AgentIdentity.from_seed(b"b" * 32).did)
    with pytest.raises(OversizedCard):
        decode_card(data + b" " * MAX_CARD_BYTES, now_ms=NOW)
    with pytest.raises(InvalidCard):
        decode_card(json.dumps(json.loads(data), indent=1).encode(), now_ms=NOW)
    with pytest.raises(InvalidCard):
        decode_card(b"\xff not json", now_ms=NOW)
    big = Capability(name="big", description="x" * 2000)
    with pytest.raises(OversizedCard):
        card(capabilities=tuple(big.model_copy(update={"name": f"c{i}"}) for i in range(10)))
    with pytest.raises(InvalidCard):
        card(ttl_ms=0)


def test_verify_card_refuses_a_too_long_lifetime_even_if_signed() -> None:
    signed = card()
    stretched = signed.model_copy(update={"expires_at_ms": NOW + 10**9})
    with pytest.raises(CardSignatureInvalid):
        verify_card(stretched, now_ms=NOW)


def test_fingerprint_changes_with_the_descriptor_only() -> None:
    assert SEARCH.fingerprint() == SEARCH.model_copy().fingerprint()
    assert SEARCH.fingerprint() != SEARCH.model_copy(update={"description": "x"}).fingerprint()
    other_schema = SEARCH.model_copy(update={"output_schema": {"type": "object"}})
    assert SEARCH.fingerprint() != other_schema.fingerprint()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_decode_never_raises_anything_but_card_errors(data: bytes) -> None:
    with pytest.raises(CardError):
        decode_card(data, now_ms=NOW)


@settings(max_examples=50, deadline=None)
@given(
    name=st.text(min_size=1, max_size=128).filter(lambda s: s.strip() == s),
    description=st.text(max_size=200),
    schema=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=10,
    ),
)
def test_any_valid_card_round_trips(name: str, description: str, schema: object) -> None:
    capability = Capability(name="x", description=description, input_schema=schema)  # type: ignore[arg-type]
    signed = card(display_name=name, capabilities=(capability,))
    assert decode_card(signed.encode(), now_ms=NOW) == signed
