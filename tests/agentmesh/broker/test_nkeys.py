"""nkeys: our encoder agrees with the ``nkeys`` package nats-py signs with, and rejects junk."""

from __future__ import annotations

import contextlib

import nkeys
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from agentmesh.broker.errors import InvalidNkey
from agentmesh.broker.nkeys import (
    KeyRole,
    decode_public,
    decode_seed,
    did_for_nkey,
    encode_public,
    encode_seed,
    user_nkey_for_did,
)
from iatp.identity import AgentIdentity

seeds = st.binary(min_size=32, max_size=32)


@given(seeds)
def test_user_seed_and_public_key_match_the_nkeys_package(seed: bytes) -> None:
    ours = encode_seed(KeyRole.USER, seed)
    theirs = nkeys.from_seed(bytearray(ours.encode()))
    assert theirs.seed.decode() == ours
    assert theirs.public_key.decode() == encode_public(
        KeyRole.USER, bytes(SigningKey(seed).verify_key)
    )


@pytest.mark.parametrize("role", list(KeyRole))
def test_every_role_round_trips_and_has_its_letter(role: KeyRole) -> None:
    identity = AgentIdentity.generate()
    public = encode_public(role, identity.public_key)
    assert public[0] == role.letter
    assert decode_public(public, role) == (role, identity.public_key)
    seed = encode_seed(role, identity.seed())
    assert seed[:2] == "S" + role.letter
    assert decode_seed(seed) == (role, identity.seed())
    assert nkeys.from_seed(bytearray(seed.encode())).public_key.decode() == public


def test_a_did_and_its_user_nkey_name_the_same_key() -> None:
    identity = AgentIdentity.generate()
    nkey = user_nkey_for_did(identity.did)
    assert nkey.startswith("U")
    assert did_for_nkey(nkey) == identity.did
    # The nkey the server would see from the seed nats-py signs with:
    seed = encode_seed(KeyRole.USER, identity.seed())
    assert nkeys.from_seed(bytearray(seed.encode())).public_key.decode() == nkey


def test_a_signature_by_the_did_key_verifies_as_the_nkey() -> None:
    identity = AgentIdentity.generate()
    keypair = nkeys.from_seed(bytearray(encode_seed(KeyRole.USER, identity.seed()).encode()))
    nonce = b"server-nonce"
    assert keypair.verify(nonce, identity.sign(nonce))


@given(
    seeds,
    st.integers(min_value=0, max_value=55),
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
)
def test_any_changed_character_is_refused(seed: bytes, index: int, char: str) -> None:
    public = encode_public(KeyRole.USER, bytes(SigningKey(seed).verify_key))
    changed = public[:index] + char + public[index + 1 :]
    if changed == public:
        return
    with pytest.raises(InvalidNkey):
        decode_public(changed, KeyRole.USER)


@given(st.text(max_size=80))
def test_decoders_raise_only_invalid_nkey(text: str) -> None:
    for decode in (decode_public, decode_seed):
        with contextlib.suppress(InvalidNkey):
            decode(text)  # type: ignore[operator]


def test_wrong_role_and_wrong_lengths_are_refused() -> None:
    key = AgentIdentity.generate().public_key
    account = encode_public(KeyRole.ACCOUNT, key)
    with pytest.raises(InvalidNkey, match="account key"):
        decode_public(account, KeyRole.USER)
    with pytest.raises(InvalidNkey):
        encode_public(KeyRole.USER, key[:31])
    with pytest.raises(InvalidNkey):
        encode_seed(KeyRole.USER, b"short")
    with pytest.raises(InvalidNkey, match="not an nkey seed"):
        decode_seed(account)
