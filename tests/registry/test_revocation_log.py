"""The revocation log's pure parts: chain, signed heads, and the completeness check."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iatp.identity import AgentIdentity
from registry.errors import InvalidRevocation, RevocationError, RevocationSignatureInvalid
from registry.revocation import RevocationKind, sign_revocation
from registry.revocation_log import (
    IssuerLog,
    RevocationHead,
    chain_link,
    chain_start,
    decode_head,
    sign_head,
)

AUTHORITY = AgentIdentity.from_seed(b"A" * 32)


def entries(n: int) -> list:
    return [
        sign_revocation(
            AUTHORITY,
            subject=AgentIdentity.from_seed(bytes([i]) * 32).did,
            kind=RevocationKind.QUARANTINED,
            reason=f"r{i}",
            issued_at_ms=1000 + i,
            sequence=i,
        )
        for i in range(1, n + 1)
    ]


def logged(n: int) -> tuple[IssuerLog, RevocationHead]:
    log = IssuerLog(AUTHORITY.did)
    link = chain_start(AUTHORITY.did)
    for index, entry in enumerate(entries(n), 1):
        log.add(index, entry)
        link = chain_link(link, entry)
    head = sign_head(AUTHORITY, count=n, chain_hash=link, issued_at_ms=5000)
    log.offer_head(head)
    return log, head


def test_a_whole_log_checks() -> None:
    log, head = logged(5)
    assert log.check() is None
    assert decode_head(head.encode()) == head
    assert log.next_index == 6


def test_a_missing_entry_is_named() -> None:
    log, _ = logged(5)
    del log.entries[3]
    problem = log.check()
    assert problem is not None
    assert "1 of 5 entries" in problem
    assert "index 3" in problem


def test_replaced_or_moved_entries_break_the_chain() -> None:
    log, _ = logged(5)
    log.entries[2], log.entries[4] = log.entries[4], log.entries[2]  # moved
    assert "replaced or moved" in (log.check() or "")
    log, _ = logged(5)
    log.entries[5] = entries(6)[5]  # another genuine entry of the issuer, in its place
    assert "replaced or moved" in (log.check() or "")


def test_entries_beyond_the_head_are_fine_and_heads_only_grow() -> None:
    log, head = logged(3)
    log.add(4, entries(4)[3])  # issued after the head was signed: not yet covered
    assert log.check() is None
    older = sign_head(AUTHORITY, count=2, chain_hash=b"x" * 32, issued_at_ms=1)
    assert not log.offer_head(older)
    assert log.head == head


def test_two_entries_claiming_one_index_are_a_fork() -> None:
    log, _ = logged(2)
    assert not log.add(2, entries(3)[2])


def test_a_head_is_bound_to_its_issuer() -> None:
    _, head = logged(2)
    mallory = AgentIdentity.generate()
    forged = RevocationHead(
        head.issuer, 99, head.chain_hash, head.issued_at_ms, mallory.sign(b"anything")
    )
    with pytest.raises(RevocationSignatureInvalid):
        decode_head(forged.encode())
    with pytest.raises(InvalidRevocation):
        decode_head(head.encode() + b"\x00")


@given(st.binary(max_size=300))
def test_head_decoder_raises_only_registry_errors(data: bytes) -> None:
    with contextlib.suppress(RevocationError):
        decode_head(data)
