"""Signed tokens for the tests: HS256 with a shared secret, RS256 and ES256 key pairs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
AUDIENCE = "roomcast-tests"


def claims(sub: str = "alice", ttl: float = 300, **more: Any) -> dict[str, Any]:
    """Claims of a token for ``sub`` that expires in ``ttl`` seconds (negative: expired)."""
    return {"sub": sub, "exp": int(time.time() + ttl), **more}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def unsigned(payload: dict[str, Any]) -> str:
    """A token with ``alg: none`` and no signature."""
    return jwt.encode(payload, None, algorithm="none")  # type: ignore[arg-type]  # typed for signing keys only


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_key(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token whose HMAC key is ``key`` (e.g. a public key's PEM: the confusion
    attack; PyJWT itself refuses to sign one)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


class KeyPair:
    """A private key to sign with and its public key as PEM (to configure a node with)."""

    def __init__(self, kind: str = "rsa") -> None:
        self.private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
        if kind == "rsa":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.algorithm = "RS256"
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.algorithm = "ES256"
        self.public_pem = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, payload: dict[str, Any]) -> str:
        return jwt.encode(payload, self.private, algorithm=self.algorithm)

    def write_public(self, path: Path) -> Path:
        path.write_bytes(self.public_pem)
        return path

    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
