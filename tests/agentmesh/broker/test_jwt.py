"""NATS JWTs: issued by a mesh identity, verified back; forged, altered or expired ones refused."""

from __future__ import annotations

import base64
import contextlib
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentmesh.broker.errors import InvalidJWT
from agentmesh.broker.jwt import (
    AccountLimits,
    SubjectRules,
    UserPermissions,
    account_claims,
    decode_jwt,
    encode_jwt,
    user_claims,
)
from agentmesh.broker.nkeys import KeyRole, encode_public, user_nkey_for_did
from iatp.identity import AgentIdentity

AUTHORITY = AgentIdentity.from_seed(b"a" * 32)
AGENT = AgentIdentity.from_seed(b"b" * 32)
ACCOUNT = encode_public(KeyRole.ACCOUNT, AgentIdentity.from_seed(b"c" * 32).public_key)
SIGNER = encode_public(KeyRole.ACCOUNT, AUTHORITY.public_key)


def user_token(**extra: object) -> str:
    claims = user_claims(
        user_nkey_for_did(AGENT.did),
        name="alice",
        issuer_account=ACCOUNT,
        permissions=UserPermissions(
            SubjectRules(allow=("m.agent.*.inbox",)), SubjectRules(allow=("m.agent.x.>",)), 1
        ),
    )
    claims.update(extra)
    return encode_jwt(claims, AUTHORITY, KeyRole.ACCOUNT)


def parts(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split(".")]


def test_user_jwt_round_trips_with_the_fields_nats_server_reads() -> None:
    token = decode_jwt(user_token(), kind="user", issuers=frozenset({SIGNER}))
    assert token.issuer == SIGNER
    assert token.subject == user_nkey_for_did(AGENT.did)
    nats = token.nats
    assert nats["issuer_account"] == ACCOUNT
    assert nats["pub"] == {"allow": ["m.agent.*.inbox"]}
    assert nats["sub"] == {"allow": ["m.agent.x.>"]}
    assert nats["resp"] == {"max": 1, "ttl": 0}
    assert nats["version"] == 2
    header = json.loads(parts(user_token())[0])
    assert header == {"alg": "ed25519-nkey", "typ": "JWT"}


def test_jti_is_the_hash_of_the_claims_so_equal_claims_give_equal_ids() -> None:
    first = decode_jwt(user_token(iat=1)).claims
    assert first["jti"] == decode_jwt(user_token(iat=1)).claims["jti"]
    assert len(first["jti"]) == 52  # base32 of SHA-512/256, as the Go library writes it


def test_a_changed_claim_breaks_the_signature() -> None:
    header, _claims, signature = user_token().split(".")
    body = json.loads(parts(user_token())[1])
    body["nats"]["pub"]["allow"] = [">"]  # an agent granting itself everything
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    with pytest.raises(InvalidJWT, match="signature"):
        decode_jwt(f"{header}.{forged}.{signature}")


def test_a_jwt_signed_by_another_key_is_not_the_authoritys() -> None:
    mallory = AgentIdentity.generate()
    token = encode_jwt(decode_jwt(user_token()).claims, mallory, KeyRole.ACCOUNT)
    decode_jwt(token)  # well formed and self-consistent...
    with pytest.raises(InvalidJWT, match="not by an allowed signing key"):
        decode_jwt(token, issuers=frozenset({SIGNER}))  # ...but not issued by the authority


def test_expired_and_wrong_kind_are_refused() -> None:
    with pytest.raises(InvalidJWT, match="expired"):
        decode_jwt(user_token(exp=int(time.time()) - 1))
    account = encode_jwt(
        account_claims(ACCOUNT, name="m", signing_keys=(SIGNER,), limits=AccountLimits()),
        AUTHORITY,
        KeyRole.OPERATOR,
    )
    with pytest.raises(InvalidJWT, match="account JWT, not a user JWT"):
        decode_jwt(account, kind="user")


def test_account_revocations_are_sorted_and_limits_spelled_for_the_server() -> None:
    claims = account_claims(
        ACCOUNT,
        name="m",
        signing_keys=(SIGNER,),
        limits=AccountLimits(disk_storage=10, max_connections=5),
        revocations={"UB": 2, "UA": 1},
    )
    assert list(claims["nats"]["revocations"]) == ["UA", "UB"]
    assert claims["nats"]["limits"]["disk_storage"] == 10
    assert claims["nats"]["limits"]["conn"] == 5


@given(st.text(max_size=200))
def test_decoder_raises_only_invalid_jwt(text: str) -> None:
    with contextlib.suppress(InvalidJWT):
        decode_jwt(text)


@given(st.binary(max_size=120), st.binary(max_size=60))
def test_decoder_refuses_arbitrary_parts(claims: bytes, signature: bytes) -> None:
    header = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"ed25519-nkey"}').decode()
    body = base64.urlsafe_b64encode(claims).decode()
    with pytest.raises(InvalidJWT):
        decode_jwt(f"{header}.{body}.{base64.urlsafe_b64encode(signature).decode()}")
