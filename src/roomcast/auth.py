"""Signed tokens: who a client is, and which private rooms it may join.

:class:`TokenVerifier` is pure: a JWT in, its claims out, or :class:`InvalidToken`. Each
key verifies one algorithm only (a secret HS256, an RSA key RS256, a P-256 key ES256), so
a token can neither pass unsigned (``alg: none``) nor pass a public key off as an HMAC
secret. ``exp`` and ``sub`` are required; ``aud`` is checked when an audience is set.

:class:`NodeAuth` (``api.auth``) applies the ``[auth]`` table to connections: it sets
``connection.user`` / ``connection.claims`` for a good token, refuses joins of private
rooms without a matching ``rooms`` claim, and, when tokens are required, joins and says
of clients that presented none.
"""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from roomcast.chat.errors import ChatError

if TYPE_CHECKING:
    from roomcast.config import AuthSettings
    from roomcast.connection import Connection

log = logging.getLogger("roomcast.auth")

INVALID_TOKEN = "invalid token"
NOT_AUTHORIZED = "not authorized"
AUTHENTICATION_REQUIRED = "authentication required"

#: The verbs a client of a node with ``[auth] required = true`` needs a token for.
GUARDED_VERBS = frozenset({"roomAdd", "say"})

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class InvalidToken(Exception):
    """A token that is malformed, badly signed, expired or for another audience.

    ``str()`` is always ``invalid token`` (what the client is told); ``reason`` says
    which check failed, for the node's debug log only.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(INVALID_TOKEN)
        self.reason = reason


class NotAuthorized(ChatError):
    """A join of a private room without a token whose ``rooms`` claim matches it."""

    def __init__(self) -> None:
        super().__init__(NOT_AUTHORIZED)


class AuthenticationRequired(ChatError):
    """A join or say by a client without a valid token, on a node that requires one."""

    def __init__(self) -> None:
        super().__init__(AUTHENTICATION_REQUIRED)


def load_public_key(path: str | Path) -> tuple[PublicKey, str]:
    """Read a PEM public key (or certificate) and return it with the algorithm it checks.

    Raises ``OSError`` when the file cannot be read and ``ValueError`` saying why the
    content is not an RSA (2048 bits or more, RS256) or P-256 (ES256) public key.
    """
    data = Path(path).read_bytes()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as error:
        raise ValueError(f"not a PEM public key or certificate ({error})") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"an RSA key of {key.key_size} bits is too short (2048 or more)")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ValueError("only RSA (RS256) and P-256 EC (ES256) public keys are supported")


class TokenVerifier:
    """Checks JWTs against a secret (HS256), a public key (RS256 or ES256), or both.

    The token header's ``alg`` picks the key; an ``alg`` no configured key is for is
    refused, so each key only ever verifies its own algorithm.
    """

    __slots__ = ("_audience", "_keys")

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        public_key: PublicKey | None = None,
        audience: str | None = None,
    ) -> None:
        self._keys: dict[str, Any] = {}
        if secret:
            self._keys["HS256"] = secret.encode() if isinstance(secret, str) else secret
        if public_key is not None:
            if isinstance(public_key, rsa.RSAPublicKey):
                self._keys["RS256"] = public_key
            elif isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
                public_key.curve, ec.SECP256R1
            ):
                self._keys["ES256"] = public_key
            else:
                raise ValueError("only RSA and P-256 EC public keys are supported")
        self._audience = audience or None

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> TokenVerifier:
        """The verifier of an ``[auth]`` table; reads the public key file (call once, at start).

        Raises ``OSError``/``ValueError`` for a key file that cannot be used.
        """
        path = settings.jwt_public_key
        public_key = load_public_key(path)[0] if path else None
        return cls(
            secret=settings.jwt_secret or None,
            public_key=public_key,
            audience=settings.audience or None,
        )

    @property
    def algorithms(self) -> list[str]:
        """The algorithms a token may be signed with, e.g. ``["HS256"]``."""
        return sorted(self._keys)

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid ``token``; raise :class:`InvalidToken` otherwise."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("no token")
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as error:
            raise InvalidToken(f"malformed: {error}") from None
        if not isinstance(algorithm, str) or algorithm not in self._keys:
            raise InvalidToken(f"algorithm {algorithm!r} is not accepted here")
        key = self._keys[algorithm]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as error:
            raise InvalidToken(str(error) or type(error).__name__) from None
        if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
            raise InvalidToken("sub must be a string")
        return claims


def rooms_claim_allows(claims: dict[str, Any] | None, room: str) -> bool:
    """True when ``claims["rooms"]`` (a glob or a list of globs) matches ``room``."""
    if claims is None:
        return False
    globs = claims.get("rooms")
    if isinstance(globs, str):
        globs = [globs]
    if not isinstance(globs, list):
        return False
    return any(isinstance(glob, str) and fnmatchcase(room, glob) for glob in globs)


class NodeAuth:
    """The ``[auth]`` settings applied to this node's connections (``api.auth``).

    ``start()`` builds the verifier (reading the key file) once; until then, and when no
    key is configured, every token is invalid.
    """

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        #: True when clients need a valid token to join or say.
        self.required = settings.required
        self._private_rooms = tuple(settings.private_rooms)
        self.verifier: TokenVerifier | None = None

    def start(self) -> None:
        """Load the keys; raises ``OSError``/``ValueError`` when the key file is unusable."""
        settings = self._settings
        if settings.jwt_secret or settings.jwt_public_key:
            self.verifier = TokenVerifier.from_settings(settings)

    @property
    def checks_joins(self) -> bool:
        """Whether :meth:`check_join` can refuse anything (else the chat room skips it)."""
        return self.required or bool(self._private_rooms)

    def authenticate(self, connection: Connection, token: str) -> dict[str, Any]:
        """Check ``token``; on success the connection's ``user`` is its ``sub`` claim and
        ``claims`` all of them. Raises :class:`InvalidToken` (the connection keeps what
        it had)."""
        if self.verifier is None:
            raise InvalidToken("no [auth] key is configured")
        try:
            claims = self.verifier.verify(token)
        except InvalidToken as error:
            log.debug("token of %s refused: %s", connection.id, error.reason)
            raise
        connection.claims = claims
        connection.user = claims["sub"]
        log.debug("%s authenticated as %s", connection.id, connection.user)
        return claims

    def check_request(self, connection: Connection, verb: str) -> None:
        """Raise :class:`AuthenticationRequired` for a join or say without a valid token."""
        if verb in GUARDED_VERBS and connection.claims is None:
            raise AuthenticationRequired()

    def check_join(self, connection: Connection, room: str) -> None:
        """Refuse a join this connection's token does not allow (before join middleware)."""
        if connection.claims is None and self.required:
            raise AuthenticationRequired()
        private = self._private_rooms
        if (
            private
            and any(fnmatchcase(room, glob) for glob in private)
            and not rooms_claim_allows(connection.claims, room)
        ):
            raise NotAuthorized()

    def authenticate_on_connect(self, connection: Connection, token: str) -> bool:
        """Apply the token a client gave with its connection request (``?token=``).

        False when it is invalid: the caller then refuses the connection with
        ``invalid token`` (``Connections.refuse``) and answers nothing it sends.
        """
        try:
            self.authenticate(connection, token)
        except InvalidToken:
            return False
        return True


def token_in_query(query: str | bytes) -> str | None:
    """The ``token`` parameter of a URL query string (without ``?``), or None."""
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    if "token=" not in query:  # the usual URL has no token: skip parsing it
        return None
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token":
            return value
    return None
