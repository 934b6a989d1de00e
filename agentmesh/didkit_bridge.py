"""The one place that talks to didkit 0.3.3 (archived upstream, so kept behind a seam).

iatp derives ``did:key`` itself (pure and fast); tests cross-check it against
didkit here, and later features (organization membership credentials) issue and
verify W3C Verifiable Credentials through this module.
"""

from __future__ import annotations

import base64
import json

import didkit

from iatp.did import public_key_from_did
from iatp.errors import InvalidDID
from iatp.identity import AgentIdentity


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def identity_jwk(identity: AgentIdentity, *, private: bool = False) -> str:
    """The identity's key as an OKP/Ed25519 JWK (JSON text)."""
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64url(identity.public_key)}
    if private:
        jwk["d"] = _b64url(identity.seed())
    return json.dumps(jwk)


def didkit_did_for(identity: AgentIdentity) -> str:
    """The ``did:key`` that didkit derives for ``identity``'s public key."""
    return str(didkit.key_to_did("key", identity_jwk(identity)))


async def didkit_resolve_public_key(did: str) -> bytes:
    """Resolve ``did`` with didkit and return the Ed25519 key of its first method.

    Raises:
        InvalidDID: didkit cannot resolve it, or the document holds no Ed25519 key.
    """
    try:
        document = json.loads(await didkit.resolve_did(did, "{}"))
    except Exception as exc:  # didkit's exception class is untyped; nothing else raised here
        raise InvalidDID(did, f"didkit cannot resolve it: {exc}") from None
    methods = document.get("verificationMethod") or []
    for method in methods:
        jwk = method.get("publicKeyJwk") or {}
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            return _b64url_decode(jwk["x"])
    raise InvalidDID(did, "didkit's DID document has no Ed25519 verification method")


def cross_check(identity: AgentIdentity) -> bool:
    """True when iatp and didkit agree on the identity's DID."""
    return (
        didkit_did_for(identity) == identity.did
        and public_key_from_did(identity.did) == identity.public_key
    )


async def issue_jwt_credential(credential: dict[str, object], issuer: AgentIdentity) -> str:
    """Sign a W3C credential as a JWT-VC (EdDSA) with didkit; returns the compact JWS.

    Raises:
        ValueError: didkit refused the credential (the message says why).
    """
    options = {
        "proofFormat": "jwt",
        "proofPurpose": "assertionMethod",
        "verificationMethod": f"{issuer.did}#{issuer.did.removeprefix('did:key:')}",
    }
    try:
        token = await didkit.issue_credential(
            json.dumps(credential), json.dumps(options), identity_jwk(issuer, private=True)
        )
    except Exception as exc:  # didkit raises untyped errors
        raise ValueError(f"didkit could not issue the credential: {exc}") from None
    return str(token)


async def verify_jwt_credential(token: str) -> list[str]:
    """didkit's verdict on a JWT-VC: the list of errors (empty when it verifies)."""
    try:
        result = json.loads(
            await didkit.verify_credential(token, json.dumps({"proofFormat": "jwt"}))
        )
    except Exception as exc:  # didkit raises untyped errors
        return [f"didkit: {exc}"]
    errors = result.get("errors") or []
    return [str(e) for e in errors]
