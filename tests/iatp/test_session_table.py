"""SessionTable without a network: lookup by id, supersession, grace, expiry, choice, cap."""

from __future__ import annotations

import os

import pytest

from iatp.envelope import new_envelope
from iatp.errors import InvalidSessionMAC, SessionExpired, UnknownSession
from iatp.handshake import PeerOffer, SessionKeys
from iatp.identity import AgentIdentity
from iatp.session_frame import SessionFrame, parse_session_frame, seal_session_frame
from iatp.session_table import SessionLimits, SessionTable

NOW = 1_700_000_000_000
ME = AgentIdentity.generate().did
PEER = AgentIdentity.generate()


def keys(initiator: str, issued_at_ms: int, key: bytes | None = None) -> SessionKeys:
    session_id = os.urandom(16)
    return SessionKeys(
        session_id,
        PeerOffer(PEER.did, session_id, (), ()),
        send_key=os.urandom(32),
        receive_key=key or os.urandom(32),
        transcript_hash=bytes(32),
        initiator=initiator,
        issued_at_ms=issued_at_ms,
    )


def frame_under(held: SessionKeys, now_ms: int = NOW) -> SessionFrame:
    """A frame the peer seals under ``held`` (its send key is our receive key)."""
    theirs = SessionKeys(
        held.session_id,
        PeerOffer(ME, held.session_id, (), ()),
        send_key=held.receive_key,
        receive_key=held.send_key,
        transcript_hash=held.transcript_hash,
    )
    envelope = new_envelope(sender=PEER.did, type="t", recipient=ME, body=b"x", now_ms=now_ms)
    return parse_session_frame(seal_session_frame(envelope, theirs))


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="rekey_margin_ms"):
        SessionLimits(max_age_ms=10, rekey_margin_ms=10)
    with pytest.raises(ValueError, match="rekey_margin_messages"):
        SessionLimits(max_messages=10, rekey_margin_messages=10)
    with pytest.raises(ValueError, match="grace_ms"):
        SessionLimits(grace_ms=-1)
    with pytest.raises(ValueError, match="max_per_peer"):
        SessionLimits(max_per_peer=1)
    defaults = SessionLimits(max_age_ms=1_200, max_messages=50)
    assert (defaults.rekey_at_age_ms, defaults.rekey_at_messages) == (1_100, 45)


def test_a_newer_session_of_the_same_initiator_supersedes_on_first_use() -> None:
    table = SessionTable(SessionLimits(grace_ms=1_000))
    old, new = keys(PEER.did, NOW), keys(PEER.did, NOW + 1)
    table.add(old, now_ms=NOW)
    table.add(new, now_ms=NOW)
    table.open(frame_under(old), now_ms=NOW)  # both open until the new one is used
    table.open(frame_under(new), now_ms=NOW + 10)
    table.open(frame_under(old), now_ms=NOW + 1_010)  # within the grace window
    with pytest.raises(UnknownSession):
        table.open(frame_under(old), now_ms=NOW + 1_011)
    assert table.get(PEER.did, old.session_id) is None


def test_sessions_of_the_other_initiator_are_not_superseded() -> None:
    table = SessionTable(SessionLimits(grace_ms=0))
    theirs, mine = keys(PEER.did, NOW), keys(ME, NOW + 5)
    table.add(theirs, now_ms=NOW)
    table.add(mine, now_ms=NOW)
    table.open(frame_under(mine), now_ms=NOW)
    table.open(frame_under(theirs), now_ms=NOW + 60_000)


def test_sender_prefers_its_own_newest_session_and_rekeys_near_the_limits() -> None:
    limits = SessionLimits(
        max_age_ms=100, rekey_margin_ms=20, max_messages=10, rekey_margin_messages=3
    )
    table = SessionTable(limits)
    theirs = keys(PEER.did, NOW + 50)
    table.add(theirs, now_ms=NOW)
    chosen = table.for_sending(PEER.did, now_ms=NOW)
    assert chosen is not None
    assert chosen.keys is theirs
    mine_old, mine_new = keys(ME, NOW), keys(ME, NOW + 1)
    table.add(mine_old, now_ms=NOW)
    table.add(mine_new, now_ms=NOW, established=False)  # waiting for the responder's ok
    chosen = table.for_sending(PEER.did, now_ms=NOW)
    assert chosen is not None
    assert chosen.keys is mine_old
    table.establish(PEER.did, mine_new.session_id)
    chosen = table.for_sending(PEER.did, now_ms=NOW)
    assert chosen is not None
    assert chosen.keys is mine_new
    assert not chosen.rekey_due(NOW + 79, limits)
    assert chosen.rekey_due(NOW + 80, limits)
    chosen.sent = 7
    assert chosen.rekey_due(NOW, limits)
    chosen.sent = 10  # at the message limit: never sent under again
    again = table.for_sending(PEER.did, now_ms=NOW)
    assert again is not None
    assert again.keys is mine_old


def test_expired_sessions_are_refused_then_forgotten() -> None:
    table = SessionTable(SessionLimits(max_age_ms=100, rekey_margin_ms=10, grace_ms=50))
    held = keys(PEER.did, NOW)
    table.add(held, now_ms=NOW)
    assert table.for_sending(PEER.did, now_ms=NOW + 100) is None
    with pytest.raises(SessionExpired):
        table.open(frame_under(held), now_ms=NOW + 100)
    with pytest.raises(UnknownSession):
        table.open(frame_under(held), now_ms=NOW + 150)


def test_limits_are_checked_before_the_mac() -> None:
    table = SessionTable(SessionLimits(max_messages=1, rekey_margin_messages=0))
    held = keys(PEER.did, NOW)
    table.add(held, now_ms=NOW)
    genuine = frame_under(held)
    forged = SessionFrame(genuine.sender, genuine.session_id, bytes(24), genuine.ciphertext)
    with pytest.raises(InvalidSessionMAC):
        table.open(forged, now_ms=NOW)
    table.open(genuine, now_ms=NOW)  # a frame that fails its MAC is not counted
    with pytest.raises(SessionExpired):
        table.open(forged, now_ms=NOW)


def test_the_per_peer_cap_drops_superseded_sessions_first_and_never_the_newest() -> None:
    table = SessionTable(SessionLimits(max_per_peer=3))
    theirs = keys(PEER.did, NOW - 1_000)
    table.add(theirs, now_ms=NOW)
    mine = [keys(ME, NOW + index) for index in range(4)]
    table.add(mine[0], now_ms=NOW)
    table.add(mine[1], now_ms=NOW)
    table.open(frame_under(mine[1]), now_ms=NOW)  # supersedes mine[0]
    table.add(mine[2], now_ms=NOW)
    assert table.get(PEER.did, mine[0].session_id) is None  # superseded: first to go
    table.add(mine[3], now_ms=NOW)
    assert table.get(PEER.did, mine[1].session_id) is None  # then the oldest of mine
    assert table.get(PEER.did, theirs.session_id) is not None  # the peer's newest stays
    assert len(table) == 3
