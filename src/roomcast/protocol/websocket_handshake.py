"""The WebSocket opening handshake without sockets: a parsed HTTP request in, a 101 out.

The web port's first request is parsed by aiohttp's HTTP parser; this module decides
whether it is a WebSocket upgrade roomcast answers itself and builds the response. A
request it declines (wrong path, a missing or bad header) goes to aiohttp unchanged,
which answers it as it would any other request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie

from aiohttp.http import WS_KEY

#: Every upgrade roomcast answers itself starts with these bytes.
PREFIX = b"GET /ws"
PATH = "/ws"


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + WS_KEY).digest()).decode()


def upgrade_response(method: str, path: str, headers: Mapping[str, str]) -> bytes | None:
    """The ``101 Switching Protocols`` answer to a valid upgrade to ``/ws``, else None.

    ``headers`` must look names up case-insensitively (aiohttp's ``CIMultiDictProxy``).
    No extension is negotiated: frames go out uncompressed and pre-framed.
    """
    if method != "GET" or path != PATH:
        return None
    if "websocket" not in _tokens(headers.get("Upgrade", "")):
        return None
    if "upgrade" not in _tokens(headers.get("Connection", "")):
        return None
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        return None
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        "\r\n"
    ).encode()


def cookie(headers: Mapping[str, str], name: str) -> str | None:
    """The value of cookie ``name`` in the request's ``Cookie`` header, if any."""
    raw = headers.get("Cookie")
    if not raw or name not in raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}
