"""Signed status lists: round trip, and every malformed, foreign or forged list refused."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.federation import StatusListError, decode_status_list, issue_status_list
from agentmesh.federation.status import MAX_REVOKED, STATUS_DOMAIN, StatusList
from tests.agentmesh.federation.test_agreement import A_AUTH, B_AUTH, C_AUTH

ISSUED = 1_700_000_000_123


def fields_of(status: StatusList) -> list[object]:
    fields: list[object] = msgpack.unpackb(status.encode(), raw=False)
    return fields


def signed_fields(version: object, issued: object, revoked: object) -> bytes:
    """A list with these fields, properly signed by B: only the field rules can refuse it."""
    claim = STATUS_DOMAIN + msgpack.packb([B_AUTH.did, version, issued, revoked])
    signature = B_AUTH.sign(claim)
    packed: bytes = msgpack.packb([B_AUTH.did, version, issued, revoked, signature])
    return packed


def test_issue_and_decode_round_trip() -> None:
    status = issue_status_list(B_AUTH, version=3, revoked=[9, 1, 5, 1], now_ms=ISSUED)
    assert status.revoked == frozenset({1, 5, 9})
    assert (status.organization, status.version, status.issued_at_ms) == (B_AUTH.did, 3, ISSUED)
    assert fields_of(status)[3] == [1, 5, 9]
    decoded = decode_status_list(status.encode(), organization=B_AUTH.did)
    assert decoded == status
    assert decoded.is_revoked(5) is True
    assert decoded.is_revoked(2) is False
    assert decode_status_list(status.encode()) == status


def test_an_empty_list_round_trips() -> None:
    status = issue_status_list(B_AUTH, version=0, revoked=(), now_ms=0)
    assert decode_status_list(status.encode()).revoked == frozenset()


def test_a_list_of_another_organization_is_refused() -> None:
    data = issue_status_list(B_AUTH, version=1, revoked=[1], now_ms=ISSUED).encode()
    with pytest.raises(StatusListError, match="not of") as info:
        decode_status_list(data, organization=A_AUTH.did)
    assert info.value.code == "status_list_invalid"


def test_a_tampered_list_is_refused() -> None:
    fields = fields_of(issue_status_list(B_AUTH, version=1, revoked=[1, 5, 9], now_ms=ISSUED))
    fields[3] = [1, 9]  # un-revoke 5
    with pytest.raises(StatusListError, match="not signed by"):
        decode_status_list(msgpack.packb(fields))


@pytest.mark.parametrize("index", [1, 2])
def test_a_changed_version_or_time_is_refused(index: int) -> None:
    fields = fields_of(issue_status_list(B_AUTH, version=1, revoked=[1], now_ms=ISSUED))
    fields[index] = 99
    with pytest.raises(StatusListError, match="not signed by"):
        decode_status_list(msgpack.packb(fields))


def test_a_list_signed_by_another_key_is_refused() -> None:
    fields = fields_of(issue_status_list(C_AUTH, version=1, revoked=[1], now_ms=ISSUED))
    fields[0] = B_AUTH.did
    with pytest.raises(StatusListError, match=f"not signed by {B_AUTH.did}"):
        decode_status_list(msgpack.packb(fields))
    fields[4] = bytes(64)
    with pytest.raises(StatusListError, match="not signed by"):
        decode_status_list(msgpack.packb(fields))


@pytest.mark.parametrize("length", [0, 63, 65])
def test_a_signature_of_the_wrong_length_is_a_status_list_error(length: int) -> None:
    fields = fields_of(issue_status_list(B_AUTH, version=1, revoked=[1], now_ms=ISSUED))
    fields[4] = b"\x01" * length
    with pytest.raises(StatusListError):
        decode_status_list(msgpack.packb(fields))


@pytest.mark.parametrize(
    ("version", "issued", "revoked"),
    [
        (1, ISSUED, [9, 1, 5]),  # unsorted
        (1, ISSUED, [1, 1, 5]),  # duplicate
        (1, ISSUED, [-1, 5]),  # negative index
        (-1, ISSUED, [1]),  # negative version
        (1, -5, [1]),  # negative time
        (1, ISSUED, [True]),  # a bool is no index
        (True, ISSUED, [1]),
        (1, ISSUED, [1.0]),
        (1, ISSUED, ["1"]),
        (1, ISSUED, {"1": 1}),
        ("1", ISSUED, [1]),
    ],
)
def test_well_signed_lists_with_bad_fields_are_refused(
    version: object, issued: object, revoked: object
) -> None:
    with pytest.raises(StatusListError, match="wrong types or order"):
        decode_status_list(signed_fields(version, issued, revoked))


def test_the_well_signed_helper_makes_a_valid_list() -> None:
    assert decode_status_list(signed_fields(1, ISSUED, [1, 5])).revoked == frozenset({1, 5})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, 2, 3]),
        msgpack.packb(["did:key:zNope", 1, 1, [], b"s" * 64]),
        msgpack.packb({"a": 1}),
        msgpack.packb([B_AUTH.did, 1, 1, [], b"s" * 64, "extra"]),
        msgpack.packb([B_AUTH.did, 1, 1, [], "not bytes" * 8]),
        msgpack.packb(1) + msgpack.packb(2),
        b"\x91" * 10_000,
        b"\x00" * ((1 << 20) + 1),
    ],
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(StatusListError):
        decode_status_list(data)


def test_issue_refuses_negative_values_and_too_many_indices() -> None:
    with pytest.raises(StatusListError):
        issue_status_list(B_AUTH, version=-1, revoked=[], now_ms=0)
    with pytest.raises(StatusListError):
        issue_status_list(B_AUTH, version=1, revoked=[-3], now_ms=0)
    with pytest.raises(StatusListError):
        issue_status_list(B_AUTH, version=1, revoked=range(MAX_REVOKED + 1), now_ms=0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_decode_raises_only_status_list_error(data: bytes) -> None:
    with contextlib.suppress(StatusListError):
        decode_status_list(data)


MSGPACK_INT = st.integers(-(2**63), 2**64 - 1)
ANY_FIELD = st.one_of(MSGPACK_INT, st.binary(max_size=8), st.text(max_size=60), st.booleans())


@settings(max_examples=300, deadline=None)
@given(
    organization=st.just(B_AUTH.did) | ANY_FIELD,
    version=MSGPACK_INT | ANY_FIELD,
    issued=MSGPACK_INT | ANY_FIELD,
    revoked=st.lists(MSGPACK_INT | ANY_FIELD, max_size=5) | ANY_FIELD,
    signature=st.binary(min_size=64, max_size=64) | st.text(max_size=64),
)
def test_decode_of_five_field_arrays_raises_only_status_list_error(
    organization: object, version: object, issued: object, revoked: object, signature: object
) -> None:
    data = msgpack.packb([organization, version, issued, revoked, signature])
    with contextlib.suppress(StatusListError):
        decode_status_list(data)


@settings(max_examples=100, deadline=None)
@given(
    revoked=st.frozensets(st.integers(0, 2**40), max_size=200),
    version=st.integers(0, 2**63 - 1),
    issued=st.integers(0, 2**63 - 1),
)
def test_round_trip_of_any_index_set(revoked: frozenset[int], version: int, issued: int) -> None:
    status = issue_status_list(B_AUTH, version=version, revoked=revoked, now_ms=issued)
    decoded = decode_status_list(status.encode(), organization=B_AUTH.did)
    assert decoded == status
    assert decoded.revoked == revoked
    assert decoded.version == version
