"""Service-account keys and the JWT bearer assertions Google's grant signs with them.

:func:`make_service_account` writes a key file shaped like the JSON key the Google Cloud
console hands out (a fresh RSA key); :func:`verify_assertion` checks an RS256 assertion
(RFC 7523) the way Google's token endpoint does, for :mod:`.server`. cryptography is
imported when a key is made or checked, so loading the test fixtures needs none.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_service_account(path: Path, client_email: str, token_uri: str) -> bytes:
    """Write a service-account key file to *path* (0600); return the public key (PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    info = {
        "type": "service_account",
        "project_id": "inbox-poller-test",
        "private_key_id": "test-key-1",
        "private_key": private,
        "client_email": client_email,
        "client_id": "100000000000000000001",
        "token_uri": token_uri,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=1), encoding="utf-8")
    path.chmod(0o600)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class AssertionRefused(Exception):
    """The assertion is malformed, badly signed, expired or for someone else."""


def verify_assertion(
    assertion: str, public_keys: dict[str, bytes], audience: str, now: float | None = None
) -> dict[str, Any]:
    """Return the claims of *assertion* once its RS256 signature and times check out.

    *public_keys* maps each known ``iss`` (client e-mail) to its public key.
    :raises AssertionRefused:
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        header = json.loads(_b64url_decode(header_b64))
        claims = json.loads(_b64url_decode(claims_b64))
        signature = _b64url_decode(signature_b64)
    except ValueError:
        raise AssertionRefused("not a JWT") from None
    if not isinstance(header, dict) or header.get("alg") != "RS256" or not isinstance(claims, dict):
        raise AssertionRefused("not an RS256 JWT")
    pem = public_keys.get(str(claims.get("iss")))
    if pem is None:
        raise AssertionRefused("unknown issuer")
    public = serialization.load_pem_public_key(pem)
    assert isinstance(public, rsa.RSAPublicKey)
    try:
        public.verify(
            signature,
            f"{header_b64}.{claims_b64}".encode("ascii"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        raise AssertionRefused("bad signature") from None
    now = time.time() if now is None else now
    if claims.get("aud") != audience:
        raise AssertionRefused("wrong audience")
    if not (float(claims.get("iat", 0)) - 300 <= now <= float(claims.get("exp", 0)) + 300):
        raise AssertionRefused("expired or not yet valid")
    return claims
