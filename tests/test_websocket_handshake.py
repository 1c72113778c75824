"""The WebSocket opening handshake and permessage-deflate negotiation, without sockets."""

from __future__ import annotations

import base64
import zlib

import pytest
from multidict import CIMultiDict

from roomcast.protocol import websocket_frames
from roomcast.protocol.websocket_handshake import (
    DeflateParameters,
    accept_upgrade,
    cookie,
    negotiate_deflate,
)

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the example of RFC 6455
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
BOTH_NO_TAKEOVER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


def upgrade_headers(**changes: str | None) -> CIMultiDict[str]:
    headers = CIMultiDict(
        {
            "Host": "x",
            "Upgrade": "websocket",
            "Connection": "keep-alive, Upgrade",
            "Sec-WebSocket-Key": RFC_KEY,
            "Sec-WebSocket-Version": "13",
        }
    )
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    return headers


# the upgrade -----------------------------------------------------------------------------


def test_a_valid_upgrade_gets_a_101_with_the_rfc_accept_key() -> None:
    upgrade = accept_upgrade("GET", "/ws", upgrade_headers())
    assert upgrade is not None
    assert upgrade.response() == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n"
        b"\r\n"
    )
    assert upgrade.deflate is None


@pytest.mark.parametrize(
    ("method", "path", "changes"),
    [
        ("POST", "/ws", {}),
        ("GET", "/wsx", {}),
        ("GET", "/ws", {"Upgrade": None}),
        ("GET", "/ws", {"Upgrade": "h2c"}),
        ("GET", "/ws", {"Connection": "keep-alive"}),
        ("GET", "/ws", {"Sec-WebSocket-Version": "8"}),
        ("GET", "/ws", {"Sec-WebSocket-Key": None}),
        ("GET", "/ws", {"Sec-WebSocket-Key": "not base64!"}),
        ("GET", "/ws", {"Sec-WebSocket-Key": base64.b64encode(b"short").decode()}),
    ],
)
def test_anything_but_a_valid_upgrade_to_ws_is_declined(
    method: str, path: str, changes: dict[str, str | None]
) -> None:
    assert accept_upgrade(method, path, upgrade_headers(**changes)) is None


def test_with_compression_off_a_deflate_offer_is_not_accepted() -> None:
    headers = upgrade_headers(Sec_WebSocket_Extensions="permessage-deflate")
    upgrade = accept_upgrade("GET", "/ws", headers, compress=False)
    assert upgrade is not None
    assert upgrade.deflate is None
    assert b"Sec-WebSocket-Extensions" not in upgrade.response()


def test_with_compression_on_a_deflate_offer_is_answered_in_the_101() -> None:
    headers = upgrade_headers(Sec_WebSocket_Extensions="permessage-deflate; client_max_window_bits")
    upgrade = accept_upgrade("GET", "/ws", headers, compress=True)
    assert upgrade is not None
    assert upgrade.deflate == DeflateParameters(15, True)
    assert f"Sec-WebSocket-Extensions: {BOTH_NO_TAKEOVER}\r\n".encode() in upgrade.response()


def test_with_compression_on_no_offer_means_no_extension() -> None:
    upgrade = accept_upgrade("GET", "/ws", upgrade_headers(), compress=True)
    assert upgrade is not None
    assert upgrade.deflate is None
    assert b"Sec-WebSocket-Extensions" not in upgrade.response()


def test_offers_spread_over_several_extension_headers_are_all_read() -> None:
    headers = upgrade_headers()
    headers.add("Sec-WebSocket-Extensions", "x-unknown")
    headers.add("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=12")
    upgrade = accept_upgrade("GET", "/ws", headers, compress=True)
    assert upgrade is not None
    assert upgrade.deflate == DeflateParameters(12)


def test_the_session_cookie_is_read_from_the_cookie_header() -> None:
    headers = CIMultiDict({"Cookie": "theme=dark; sessionID=abc-123"})
    assert cookie(headers, "sessionID") == "abc-123"
    assert cookie(CIMultiDict(), "sessionID") is None
    assert cookie(CIMultiDict({"Cookie": "other=1"}), "sessionID") is None


# negotiation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=10",
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; server_no_context_takeover",
        "PerMessage-Deflate; Client_Max_Window_Bits",
    ],
)
def test_an_offer_is_always_answered_with_no_context_takeover_on_both_sides(offer: str) -> None:
    assert negotiate_deflate(offer) == (BOTH_NO_TAKEOVER, DeflateParameters(15, True))


@pytest.mark.parametrize("bits", [9, 12, 15])
def test_server_max_window_bits_is_accepted_and_echoed(bits: int) -> None:
    response, parameters = negotiate_deflate(f"permessage-deflate; server_max_window_bits={bits}")
    assert response == f"{BOTH_NO_TAKEOVER}; server_max_window_bits={bits}"
    assert parameters == DeflateParameters(bits)


def test_a_quoted_window_size_is_read() -> None:
    _, parameters = negotiate_deflate('permessage-deflate; server_max_window_bits="10"')
    assert parameters == DeflateParameters(10)


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; client_max_window_bits=8",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; x_unknown_parameter",
        "permessage-deflate;",
        "x-webkit-deflate-frame",
        "",
    ],
)
def test_an_offer_that_cannot_be_accepted_is_declined(offer: str) -> None:
    assert negotiate_deflate(offer) == (None, None)


def test_the_first_acceptable_offer_wins() -> None:
    offers = (
        "permessage-deflate; server_max_window_bits=8, "
        "permessage-deflate; server_max_window_bits=11, permessage-deflate"
    )
    assert negotiate_deflate(offers)[1] == DeflateParameters(11)


@pytest.mark.parametrize("bits", [9, 10, 15])
def test_a_message_compressed_with_the_agreed_window_inflates_within_it(bits: int) -> None:
    text = ("a chat message that repeats itself, " * 40).encode()
    frame = websocket_frames.deflate_text_frame(text, bits)
    assert frame[0] == 0xC1  # FIN, RSV1, text
    assert frame[1] == len(frame) - 2 < 126  # unmasked, 7-bit length: much shorter
    payload = frame[2:]
    assert zlib.decompressobj(-bits).decompress(payload + b"\x00\x00\xff\xff") == text
