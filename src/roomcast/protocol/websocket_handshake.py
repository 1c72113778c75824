"""The WebSocket opening handshake without sockets: a parsed HTTP request in, a 101 out.

The web port parses a request head; :func:`accept_upgrade` decides whether it is a
WebSocket upgrade to ``/ws`` and, if so, returns the response headers and what was
agreed for permessage-deflate. A request it declines (wrong path, a missing or bad
header) is answered as an ordinary HTTP request by the caller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

#: The GUID every server appends to the client's key to prove it read the handshake.
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Every upgrade roomcast answers itself starts with these bytes.
PREFIX = b"GET /ws"
PATH = "/ws"
EXTENSIONS = "Sec-WebSocket-Extensions"
_MIN_WINDOW_BITS, _MAX_WINDOW_BITS = 9, 15  # zlib cannot compress raw deflate with 8
#: Body of the 403 an upgrade or a request from an origin not allowed gets.
ORIGIN_REFUSED = "origin not allowed"
#: Body of the 408 a connection gets when its first request head came too slowly.
TOO_SLOW = "request head not received in time"
_REASONS = {403: "Forbidden", 408: "Request Timeout", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class DeflateParameters:
    """permessage-deflate as agreed with one client.

    The server always compresses each message on its own (``server_no_context_takeover``)
    with a window of ``server_max_window_bits``; ``client_no_context_takeover`` says the
    client does the same, so its inflater need not outlive a message.
    """

    server_max_window_bits: int = _MAX_WINDOW_BITS
    client_no_context_takeover: bool = True


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An accepted upgrade: what the 101 says, and the compression agreed (None: none)."""

    accept: str  # Sec-WebSocket-Accept
    extensions: str | None  # Sec-WebSocket-Extensions, when an extension was agreed
    deflate: DeflateParameters | None

    def headers(self) -> dict[str, str]:
        """The 101's headers, for an HTTP server that writes the status line itself."""
        headers = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Accept": self.accept,
        }
        if self.extensions is not None:
            headers[EXTENSIONS] = self.extensions
        return headers

    def response(self) -> bytes:
        """The complete ``101 Switching Protocols`` head to write before any frame."""
        extensions = "" if self.extensions is None else f"{EXTENSIONS}: {self.extensions}\r\n"
        return (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {self.accept}\r\n{extensions}\r\n"
        ).encode()


def refusal(status: int, text: str) -> bytes:
    """A complete HTTP/1.1 response refusing a request: ``status`` (403, 408 or 503) with
    ``text`` as its body; the caller writes it and then closes the connection."""
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def accept_upgrade(
    method: str, path: str, headers: Mapping[str, str], *, compress: bool = False
) -> Upgrade | None:
    """The answer to a valid WebSocket upgrade to ``/ws``, else None.

    ``headers`` must look names up case-insensitively (a ``CIMultiDict``; with
    ``getall`` every ``Sec-WebSocket-Extensions`` header is read). With ``compress``
    false no extension is ever accepted.
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
    if not compress:
        return Upgrade(accept_key(key), None, None)
    getall = getattr(headers, "getall", None)
    offers = getall(EXTENSIONS, ()) if getall is not None else [headers.get(EXTENSIONS, "")]
    extensions, deflate = negotiate_deflate(", ".join(offers))
    return Upgrade(accept_key(key), extensions, deflate)


def negotiate_deflate(offers: str) -> tuple[str | None, DeflateParameters | None]:
    """Accept the first acceptable permessage-deflate offer in a ``Sec-WebSocket-Extensions``
    value: the response header value and the parameters, or ``(None, None)``.

    The response always asks for no context takeover on both sides: each server message
    is compressed on its own (one compressed frame serves every client), and a client's
    inflater lives only while its message is read. An offer with an unknown, repeated or
    out-of-range parameter is declined; other extensions are ignored.
    """
    for offer in offers.split(","):
        name, *raw_params = (part.strip() for part in offer.split(";"))
        if name.lower() != "permessage-deflate":
            continue
        window_bits = _server_window_bits(raw_params)
        if window_bits is None:
            continue
        response = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        if window_bits:  # an offer limiting the server's window is answered with the limit
            response += f"; server_max_window_bits={window_bits}"
        return response, DeflateParameters(window_bits or _MAX_WINDOW_BITS)
    return None, None


def _server_window_bits(raw_params: list[str]) -> int | None:
    """The ``server_max_window_bits`` of one offer (0 when absent), None to decline it."""
    seen: set[str] = set()
    window_bits = 0
    for raw in raw_params:
        key, has_value, value = (item.strip() for item in raw.partition("="))
        key = key.lower()
        value = value.strip('"')
        if not key or key in seen:
            return None
        seen.add(key)
        if key in ("server_no_context_takeover", "client_no_context_takeover"):
            if has_value:
                return None
        elif key == "server_max_window_bits":
            bits = _window_bits(value)
            if bits is None:
                return None
            window_bits = bits
        elif key == "client_max_window_bits":
            if has_value and _window_bits(value) is None:
                return None
        else:
            return None
    return window_bits


def _window_bits(value: str) -> int | None:
    if not value.isdigit() or value.startswith("0"):
        return None
    bits = int(value)
    return bits if _MIN_WINDOW_BITS <= bits <= _MAX_WINDOW_BITS else None


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


def query_value(query: str, key: str) -> str | None:
    """The value of ``key`` in a URL query string (without ``?``), or None."""
    if f"{key}=" not in query:  # the usual upgrade URL has none: skip parsing it
        return None
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name == key:
            return value
    return None
