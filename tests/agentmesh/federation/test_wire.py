"""Federation wire forms: credential headers, operations, partner cards and steward feeds."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.federation import FederationError
from agentmesh.federation.guard import (
    MEMBERSHIP_HEADER,
    credential_headers,
    credential_of,
    operation_of,
)
from agentmesh.federation.steward import decode_feed, encode_feed
from agentmesh.federation.store import (
    MAX_PARTNER_CARD_BYTES,
    PartnerCardRecord,
    card_key,
    decode_partner_card,
    federation_bucket,
    quarantine_key,
    status_key,
)
from agentmesh.saga.wire import STEP_TYPE, StepKind, StepRequestBody, encode_request
from iatp.clock import ManualClock
from iatp.envelope import MAX_HEADER_FIELD_LENGTH, new_envelope, open_envelope, seal_envelope
from tests.agentmesh.federation.test_agreement import A_NODE, B_AGENT, B_AUTH

T0 = 1_700_000_000_000
TEXT = st.characters(exclude_categories=["Cs"])  # msgpack cannot carry lone surrogates


def sealed_and_opened(headers: dict[str, str]) -> str | None:
    envelope = new_envelope(
        sender=B_AGENT.did,
        type="quote.request",
        recipient=A_NODE.did,
        body=b"q",
        now_ms=T0,
        headers=headers,
    )
    frame = seal_envelope(envelope, B_AGENT)
    opened = open_envelope(frame, clock=ManualClock(T0), audience=A_NODE.did, replay=None)
    return credential_of(opened)


@settings(max_examples=60, deadline=None)
@given(token=st.text(TEXT, max_size=8000))
def test_credential_headers_round_trip_through_a_signed_envelope(token: str) -> None:
    headers = credential_headers(token)
    assert len(headers) == max(1, -(-len(token) // 1000))
    assert all(len(value) <= 1000 <= MAX_HEADER_FIELD_LENGTH for value in headers.values())
    assert set(headers) == {MEMBERSHIP_HEADER} | {
        f"{MEMBERSHIP_HEADER}.{i}" for i in range(1, len(headers))
    }
    assert sealed_and_opened(headers) == token


@pytest.mark.parametrize("length", [0, 999, 1000, 1001, 7999, 8000])
def test_credential_header_sizes_at_the_edges(length: int) -> None:
    token = "x" * length
    headers = credential_headers(token)
    assert sealed_and_opened(headers) == token
    assert headers[MEMBERSHIP_HEADER] == token[:1000]


def test_a_credential_over_8000_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="8000"):
        credential_headers("x" * 8001)


def test_no_membership_header_means_no_credential() -> None:
    assert sealed_and_opened({"other": "v"}) is None
    # a gap ends the credential: membership.2 without membership.1 is not joined
    assert sealed_and_opened({"membership": "ab", "membership.2": "cd"}) == "ab"


def step(action: str, kind: StepKind = StepKind.FORWARD) -> bytes:
    return encode_request(
        StepRequestBody(saga_id="s-1", step="charge", kind=kind, action=action, key="k-1")
    )


def test_operation_is_the_saga_action_of_a_step() -> None:
    assert operation_of(STEP_TYPE, step("payment.charge")) == "payment.charge"
    assert operation_of(STEP_TYPE, step("payment.refund", StepKind.COMPENSATE)) == "payment.refund"


@pytest.mark.parametrize(
    ("message_type", "body", "expected"),
    [
        ("quote.request", step("payment.charge"), "quote.request"),
        ("quote.request", b"", "quote.request"),
        (STEP_TYPE, b"", STEP_TYPE),
        (STEP_TYPE, b"\xc1garbage", STEP_TYPE),
        (STEP_TYPE, msgpack.packb({"v": 1, "action": "payment.charge"}), STEP_TYPE),
    ],
)
def test_operation_otherwise_is_the_message_type(
    message_type: str, body: bytes, expected: str
) -> None:
    assert operation_of(message_type, body) == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_operation_of_any_step_body_is_a_string(body: bytes) -> None:
    assert isinstance(operation_of(STEP_TYPE, body), str)


def test_store_keys_name_the_multibase_parts() -> None:
    org, agent = B_AUTH.did.removeprefix("did:key:"), B_AGENT.did.removeprefix("did:key:")
    assert federation_bucket("acme") == "acme_registry_federation"
    assert status_key(B_AUTH.did) == f"status.{org}"
    assert card_key(B_AUTH.did, B_AGENT.did) == f"card.{org}.{agent}"
    assert quarantine_key(B_AUTH.did, B_AGENT.did) == f"quarantine.{org}.{agent}"


@settings(max_examples=100, deadline=None)
@given(card=st.binary(max_size=2000), membership=st.text(TEXT, max_size=2000))
def test_partner_card_record_round_trips(card: bytes, membership: str) -> None:
    record = PartnerCardRecord(card, membership)
    assert decode_partner_card(record.encode()) == record


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb([b"card"]),
        msgpack.packb(["card", "token"]),
        msgpack.packb([b"card", b"token"]),
        msgpack.packb([b"card", "token", "extra"]),
        msgpack.packb({"card": b"x"}),
        msgpack.packb([b"c", "t"]) + b"\x00",
        msgpack.packb([b"x" * MAX_PARTNER_CARD_BYTES, "t"]),
    ],
)
def test_garbage_partner_cards_are_refused(data: bytes) -> None:
    with pytest.raises(FederationError) as info:
        decode_partner_card(data)
    assert type(info.value) is FederationError
    assert info.value.code == "federation_error"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_partner_card_raises_only_federation_error(data: bytes) -> None:
    with contextlib.suppress(FederationError):
        decode_partner_card(data)


ITEMS = st.lists(
    st.tuples(
        st.sampled_from(["status", "card", "order", "x"]),
        st.binary(max_size=64),
        st.text(TEXT, max_size=64),
    ),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(ITEMS)
def test_feed_round_trips(items: list[tuple[str, bytes, str]]) -> None:
    assert decode_feed(encode_feed(items)) == items


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb(1),
        msgpack.packb([2, []]),
        msgpack.packb([1, "items"]),
        msgpack.packb([1, [["status", b"x"]]]),
        msgpack.packb([1, [["status", "x", ""]]]),
        msgpack.packb([1, [[1, b"x", ""]]]),
        msgpack.packb([1, [["card", b"x", b"token"]]]),
        msgpack.packb([1, []]) + b"\x00",
        msgpack.packb([1, [], 3]),
        msgpack.packb([1, [["s", b"", ""]] * 10_001]),
    ],
)
def test_garbage_feeds_are_refused(data: bytes) -> None:
    with pytest.raises(FederationError) as info:
        decode_feed(data)
    assert type(info.value) is FederationError


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300)
    | st.lists(
        st.integers(-5, 5) | st.binary(max_size=4) | st.lists(st.text(max_size=3), max_size=3),
        max_size=3,
    ).map(msgpack.packb)
)
def test_decode_feed_raises_only_federation_error(data: bytes) -> None:
    with contextlib.suppress(FederationError):
        decode_feed(data)
