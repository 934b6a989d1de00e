"""did:key derivation and strict resolution (pure iatp; didkit cross-checks live in
``test_did_didkit.py``)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iatp.base58 import ALPHABET, b58decode, b58encode
from iatp.did import (
    DID_KEY_PREFIX,
    ED25519_MULTICODEC,
    MAX_DID_LENGTH,
    did_from_public_key,
    is_did,
    public_key_from_did,
    verify_key_for_did,
)
from iatp.errors import InvalidDID
from iatp.identity import AgentIdentity

# RFC 8032, section 7.1, test 1.
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_DID = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"


def _did_of(raw: bytes) -> str:
    return DID_KEY_PREFIX + "z" + b58encode(raw)


def _valid_did() -> str:
    return did_from_public_key(os.urandom(32))


def test_did_of_rfc8032_key_is_the_known_value() -> None:
    assert did_from_public_key(RFC8032_PUBLIC) == RFC8032_DID
    assert public_key_from_did(RFC8032_DID) == RFC8032_PUBLIC


def test_every_ed25519_did_starts_with_z6mk_and_has_56_characters() -> None:
    for _ in range(100):
        did = _valid_did()
        assert did.startswith("did:key:z6Mk")
        assert len(did) == 56


def test_did_from_public_key_refuses_keys_of_the_wrong_length() -> None:
    for size in (0, 31, 33, 64):
        with pytest.raises(InvalidDID):
            did_from_public_key(b"\x01" * size)


def test_all_zero_and_all_ff_keys_round_trip() -> None:
    # Leading zero bytes are the classic base58 pitfall.
    for key in (b"\x00" * 32, b"\xff" * 32, b"\x00" * 31 + b"\x01"):
        assert public_key_from_did(did_from_public_key(key)) == key


@pytest.mark.parametrize(
    ("did", "why"),
    [
        ("did:web:example.com", "wrong method"),
        ("did:peer:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw", "wrong method"),
        ("z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw", "missing prefix"),
        ("key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw", "missing prefix"),
        ("DID:KEY:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw", "prefix is case-sensitive"),
        (" did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw", "leading space"),
        ("did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw ", "trailing space"),
        ("did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw\n", "trailing newline"),
        ("did:key:", "empty multibase"),
        ("did:key:z", "empty key"),
        ("did:key:u7QE", "multibase 'u' (base64url) is not 'z'"),
        ("did:key:f" + "ed01" + "00" * 32, "multibase 'f' (hex) is not 'z'"),
        ("did:key:Z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw", "upper-case Z"),
        ("", "empty"),
    ],
)
def test_malformed_did_raises_invalid_did(did: str, why: str) -> None:
    with pytest.raises(InvalidDID) as info:
        public_key_from_did(did)
    assert info.value.code == "invalid_did"
    assert not is_did(did), why


@pytest.mark.parametrize("bad_char", ["0", "O", "l", "I", "+", "/", "=", "é", "\x00"])
def test_character_outside_base58_raises_invalid_did(bad_char: str) -> None:
    did = _valid_did()
    for position in (len("did:key:z"), len(did) // 2, len(did) - 1):
        tampered = did[:position] + bad_char + did[position + 1 :]
        with pytest.raises(InvalidDID, match="base58"):
            public_key_from_did(tampered)


@pytest.mark.parametrize(
    ("codec", "key_len", "name"),
    [
        (b"\xe7\x01", 33, "secp256k1-pub"),
        (b"\xec\x01", 32, "x25519-pub"),
        (b"\x80\x24", 33, "p256-pub"),
        (b"\x12\x20", 32, "sha2-256 multihash"),
        (b"\xed", 32, "ed25519 codec without the varint continuation byte"),
        (b"\xed\x02", 32, "0xed with the wrong second byte"),
        (b"", 32, "no multicodec at all"),
    ],
)
def test_wrong_multicodec_raises_invalid_did(codec: bytes, key_len: int, name: str) -> None:
    did = _did_of(codec + os.urandom(key_len))
    with pytest.raises(InvalidDID):
        public_key_from_did(did)
    assert not is_did(did), name


@pytest.mark.parametrize("key_len", [0, 1, 16, 31, 33, 34, 64])
def test_wrong_key_length_raises_invalid_did(key_len: int) -> None:
    did = _did_of(ED25519_MULTICODEC + os.urandom(key_len))
    with pytest.raises(InvalidDID, match="bytes"):
        public_key_from_did(did)


@pytest.mark.parametrize("value", [None, 42, 4.2, b"did:key:z6Mk", bytearray(b"did"), ("did",)])
def test_non_string_raises_invalid_did(value: object) -> None:
    with pytest.raises(InvalidDID):
        public_key_from_did(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [None, 42, b"did:key:z6Mk", ["did:key:z6Mk"], {"did": 1}])
def test_verify_key_for_did_and_is_did_refuse_non_strings_with_invalid_did(value: object) -> None:
    # Unhashable values must not leak a TypeError out of the lru_cache.
    with pytest.raises(InvalidDID):
        verify_key_for_did(value)  # type: ignore[arg-type]
    assert is_did(value) is False  # type: ignore[arg-type]


def test_overlong_did_raises_invalid_did_before_decoding() -> None:
    valid = _valid_did()
    overlong = valid + "1" * (MAX_DID_LENGTH - len(valid) + 1)
    with pytest.raises(InvalidDID, match="longer"):
        public_key_from_did(overlong)
    with pytest.raises(InvalidDID, match="longer"):
        public_key_from_did("did:key:z" + "2" * 100_000)


def test_invalid_did_message_truncates_huge_input() -> None:
    with pytest.raises(InvalidDID) as info:
        public_key_from_did("did:web:" + "a" * 10_000)
    assert len(str(info.value)) < 300
    assert info.value.did.startswith("did:web:")


def test_non_canonical_base58_with_extra_leading_one_is_refused() -> None:
    did = _valid_did()
    # A leading '1' is a leading zero byte, so the multicodec no longer matches.
    tampered = "did:key:z1" + did[len("did:key:z") :]
    with pytest.raises(InvalidDID):
        public_key_from_did(tampered)


def test_verify_key_for_did_is_cached() -> None:
    did = _valid_did()
    first = verify_key_for_did(did)
    second = verify_key_for_did(did)
    assert first is second
    assert bytes(first) == public_key_from_did(did)


def test_verify_key_for_did_does_not_cache_failures() -> None:
    with pytest.raises(InvalidDID):
        verify_key_for_did("did:key:zbad0")
    with pytest.raises(InvalidDID):
        verify_key_for_did("did:key:zbad0")


def test_verify_key_for_did_verifies_signatures_of_its_identity() -> None:
    identity = AgentIdentity.generate()
    signature = identity.sign(b"hello")
    assert verify_key_for_did(identity.did).verify(b"hello", signature) == b"hello"


def test_base58_round_trips_leading_zeros() -> None:
    for data in (b"", b"\x00", b"\x00\x00\x01", b"\x00" * 5 + b"\xff" * 3):
        assert b58decode(b58encode(data)) == data
    assert b58encode(b"\x00\x00") == "11"


@settings(max_examples=300)
@given(st.binary(min_size=32, max_size=32))
def test_any_32_byte_key_round_trips(key: bytes) -> None:
    did = did_from_public_key(key)
    assert public_key_from_did(did) == key
    assert is_did(did)
    assert bytes(verify_key_for_did(did)) == key


@settings(max_examples=500)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_invalid_did(text: str) -> None:
    _resolve_or_invalid(text)


@settings(max_examples=500)
@given(st.text(alphabet=ALPHABET + "0OlI", min_size=0, max_size=60))
def test_arbitrary_did_key_z_suffix_raises_only_invalid_did(suffix: str) -> None:
    _resolve_or_invalid("did:key:z" + suffix)


@settings(max_examples=300)
@given(st.binary(min_size=0, max_size=40), st.sampled_from([b"", b"\xed\x01", b"\xed", b"\x00"]))
def test_arbitrary_multicodec_bytes_raise_only_invalid_did(body: bytes, prefix: bytes) -> None:
    _resolve_or_invalid(_did_of(prefix + body))


def _resolve_or_invalid(text: str) -> None:
    try:
        key = public_key_from_did(text)
    except InvalidDID:
        assert not is_did(text)
        return
    # Anything accepted is canonical: it re-encodes to exactly the same text.
    assert len(key) == 32
    assert did_from_public_key(key) == text
    assert is_did(text)
