"""The pure part of scale-out: partition keys, owners, member specs, subjects."""

from __future__ import annotations

import contextlib
import os
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentmesh.node import partitions
from agentmesh.node.partitions import (
    MAX_PARTITIONS,
    Partition,
    PeerPartitions,
    WrongPartition,
    envelope_id_of,
    handshake_session_id,
    partition_of,
    partition_subject,
    session_id_source,
)
from agentmesh.node.wire import encode_step
from iatp.clock import SystemClock
from iatp.envelope import EnvelopeLimits, new_envelope, seal_envelope
from iatp.errors import InvalidDID
from iatp.handshake import SESSION_ID_BYTES, HandshakeInitiator
from iatp.identity import AgentIdentity

ALICE = AgentIdentity.generate()
BOB = AgentIdentity.generate()


def test_public_names_are_sorted_and_exist() -> None:
    assert partitions.__all__ == sorted(partitions.__all__)
    for name in partitions.__all__:
        assert hasattr(partitions, name)


@given(st.binary(min_size=0, max_size=64), st.integers(1, MAX_PARTITIONS))
def test_the_owner_is_in_range_and_a_function_of_the_key(key: bytes, count: int) -> None:
    owner = partition_of(key, count)
    assert 0 <= owner < count
    assert partition_of(key, count) == owner
    assert sum(Partition(i, count).owns(key) for i in range(count)) == 1


def test_one_partition_owns_everything() -> None:
    assert {partition_of(os.urandom(16), 1) for _ in range(100)} == {0}


def test_random_ids_spread_evenly_over_members() -> None:
    counts = Counter(partition_of(os.urandom(16), 4) for _ in range(8000))
    # 2000 expected per member; 5 standard deviations (~39 each) of slack.
    assert all(1800 < counts[i] < 2200 for i in range(4)), counts


@given(st.integers(0, MAX_PARTITIONS - 1), st.integers(1, MAX_PARTITIONS))
def test_member_specs_parse_or_refuse(index: int, count: int) -> None:
    text = f"{index}/{count}"
    if index < count:
        member = Partition.parse(text)
        assert (member.index, member.count) == (index, count)
        assert str(member) == text
    else:
        with pytest.raises(ValueError, match="index"):
            Partition.parse(text)


@pytest.mark.parametrize(
    "text", ["", "1", "1/", "/2", "a/2", "1/b", "-1/2", "1/2/3", " 0/2", "0/0"]
)
def test_malformed_member_specs_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Partition.parse(text)


@given(st.text(max_size=12))
def test_member_spec_parser_never_fails_other_than_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        Partition.parse(text)


def test_out_of_range_members_are_refused() -> None:
    with pytest.raises(ValueError, match="count"):
        Partition(0, MAX_PARTITIONS + 1)
    with pytest.raises(ValueError, match="index"):
        Partition(2, 2)


def test_check_refuses_a_key_of_another_member_with_its_fields() -> None:
    key = next(k for k in iter(lambda: os.urandom(16), None) if partition_of(k, 2) == 1)
    Partition(1, 2).check(key, envelope_id=key, sender=ALICE.did)
    with pytest.raises(WrongPartition) as caught:
        Partition(0, 2).check(key, envelope_id=key, sender=ALICE.did)
    assert caught.value.code == "wrong_partition"
    assert (caught.value.envelope_id, caught.value.sender) == (key, ALICE.did)


def test_session_ids_drawn_for_a_member_are_its_own() -> None:
    member = Partition(2, 3)
    draw = session_id_source(member)
    for _ in range(50):
        assert member.owns(draw(SESSION_ID_BYTES))
    assert len(draw(32)) == 32  # other randomness is not filtered
    initiator = HandshakeInitiator(ALICE, BOB.did, clock=SystemClock(), random_bytes=draw)
    assert member.owns(initiator.session_id)


def test_senders_route_listed_peers_to_the_owner_and_others_unchanged() -> None:
    routes = PeerPartitions()
    assert not routes
    subject = "m.agent.key.inbox"
    key = os.urandom(16)
    assert routes.subject(BOB.did, subject, key) == subject
    routes.set(BOB.did, 3)
    assert routes
    assert len(routes) == 1
    assert routes.count(BOB.did) == 3
    assert routes.subject(BOB.did, subject, key) == f"{subject}.3.{partition_of(key, 3)}"
    assert routes.subject(ALICE.did, subject, key) == subject
    routes.set(BOB.did, 1)
    assert not routes
    with pytest.raises(InvalidDID):
        routes.set("did:key:nope", 2)
    with pytest.raises(ValueError):
        routes.set(BOB.did, 0)
    assert partition_subject(subject, 2, 1) == f"{subject}.2.1"


def test_partition_keys_are_read_from_frames_without_verifying() -> None:
    envelope = new_envelope(sender=ALICE.did, type="t", recipient=BOB.did, body=b"x", now_ms=1_000)
    assert envelope_id_of(seal_envelope(envelope, ALICE), EnvelopeLimits()) == envelope.id
    for junk in (b"", b"\xc1", b"\x94\x01\xa1x\xc4\x01\x00\xc4\x00", os.urandom(40)):
        assert envelope_id_of(junk, EnvelopeLimits()) is None
    initiator = HandshakeInitiator(ALICE, BOB.did, clock=SystemClock())
    step = encode_step("hello", initiator.hello())
    assert handshake_session_id(step) == initiator.session_id
    for junk in (b"", b"\x92\xa5hello\xc4\x00", encode_step("hello", b"\x92\x01\x02")):
        assert handshake_session_id(junk) is None
