"""The WebSocket wire byte by byte: the opening handshake roomcast answers itself, frames
split or batched across TCP reads, control frames, and requests handed to aiohttp.

These tests use a plain socket, so they see exactly the bytes the server writes.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any

import pytest
from multidict import CIMultiDict
from websupport import WELCOME, create_room, unique_room

from roomcast.protocol import websocket_frames, websocket_handshake
from support import LOOPBACK, NodeProcess

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the example of RFC 6455 §1.3
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


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


# the handshake, without sockets ----------------------------------------------------------


def test_a_valid_upgrade_gets_the_rfc_accept_key():
    response = websocket_handshake.upgrade_response("GET", "/ws", upgrade_headers())
    assert response is not None
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert f"Sec-WebSocket-Accept: {RFC_ACCEPT}\r\n".encode() in response
    assert response.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Extensions" not in response  # never compressed


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
def test_anything_but_a_valid_upgrade_to_ws_is_declined(method, path, changes):
    assert websocket_handshake.upgrade_response(method, path, upgrade_headers(**changes)) is None


def test_the_session_cookie_is_read_from_the_cookie_header():
    headers = CIMultiDict({"Cookie": "theme=dark; sessionID=abc-123"})
    assert websocket_handshake.cookie(headers, "sessionID") == "abc-123"
    assert websocket_handshake.cookie(CIMultiDict(), "sessionID") is None
    assert websocket_handshake.cookie(CIMultiDict({"Cookie": "other=1"}), "sessionID") is None


def test_control_frames_fit_the_rfc_limits():
    assert websocket_frames.close_frame(1001) == b"\x88\x02\x03\xe9"
    assert websocket_frames.pong_frame(b"abc") == b"\x8a\x03abc"
    assert len(websocket_frames.close_frame(1000, "x" * 500)) == 2 + 125
    assert websocket_frames.PING == b"\x89\x00"


# on the wire -----------------------------------------------------------------------------


def client_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(value: Any) -> bytes:
    return client_frame(json.dumps(value).encode())


HANDSHAKE = (
    f"GET /ws HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\n"
    f"Connection: Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
).encode()


class WireClient:
    """A socket with a bounded reader of HTTP heads and server frames."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=5)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    def read_frame(self) -> tuple[int, bytes]:
        while len(self.buffer) < 2:
            self._fill()
        opcode, size = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
        assert not self.buffer[1] & 0x80, "server frames are never masked"
        start = 2
        if size == 126:
            while len(self.buffer) < 4:
                self._fill()
            size, start = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif size == 127:
            while len(self.buffer) < 10:
                self._fill()
            size, start = struct.unpack("!Q", self.buffer[2:10])[0], 10
        while len(self.buffer) < start + size:
            self._fill()
        payload = self.buffer[start : start + size]
        self.buffer = self.buffer[start + size :]
        return opcode, payload

    def read_json(self) -> Any:
        opcode, payload = self.read_frame()
        assert opcode == 1, (opcode, payload)
        return json.loads(payload)

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


@pytest.fixture
def wire(web_node: NodeProcess):
    clients: list[WireClient] = []

    def connect() -> WireClient:
        client = WireClient(web_node.web_port)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def test_a_handshake_trickling_in_byte_by_byte_is_answered(wire):
    client = wire()
    for byte in HANDSHAKE:
        client.sock.sendall(bytes([byte]))
    head = client.read_head()
    assert head.startswith(b"HTTP/1.1 101 ")
    assert f"Sec-WebSocket-Accept: {RFC_ACCEPT}".encode() in head
    assert client.read_json() == WELCOME


def test_frames_sent_with_the_handshake_are_answered_in_order(wire, web_node):
    room = unique_room("wire")
    create_room(web_node.web_port, room)
    client = wire()
    client.sock.sendall(
        HANDSHAKE
        + text({"event": "roomAdd", "room": room})
        + text({"event": "roomView", "room": room})
    )
    assert client.read_head().startswith(b"HTTP/1.1 101 ")
    assert client.read_json() == WELCOME
    joined = client.read_json()
    assert joined["status"] == "OK" and joined["messageCount"] == 1
    viewed = client.read_json()
    assert viewed["messageCount"] == 2 and viewed["data"]["room"] == room


def test_a_fragmented_message_split_across_reads_is_one_request(wire):
    client = wire()
    client.sock.sendall(HANDSHAKE)
    client.read_head()
    assert client.read_json() == WELCOME
    body = json.dumps({"event": "detailsView", "messageId": "frag"}).encode()
    data = client_frame(body[:5], fin=False) + client_frame(body[5:], opcode=0)
    for piece in (data[:3], data[3:9], data[9:]):
        client.sock.sendall(piece)
    reply = client.read_json()
    assert reply["messageId"] == "frag" and reply["status"] == "OK"


def test_a_ping_gets_a_pong_with_its_payload(wire):
    client = wire()
    client.sock.sendall(HANDSHAKE + client_frame(b"are you there", opcode=9))
    client.read_head()
    frames = [client.read_frame(), client.read_frame()]
    assert (10, b"are you there") in frames  # the pong, before or after the welcome


def test_a_client_close_is_echoed_and_the_connection_ends(wire):
    client = wire()
    client.sock.sendall(HANDSHAKE)
    client.read_head()
    assert client.read_json() == WELCOME
    client.sock.sendall(client_frame(struct.pack("!H", 1000) + b"done", opcode=8))
    assert client.read_frame() == (8, struct.pack("!H", 1000))
    assert client.closed_by_server()


def test_quit_says_goodbye_and_closes_normally(wire):
    client = wire()
    client.sock.sendall(HANDSHAKE + text({"event": "quit"}))
    client.read_head()
    assert client.read_json() == WELCOME
    assert client.read_json() == {"status": "Bye!", "context": "api"}
    assert client.read_frame() == (8, struct.pack("!H", 1000))
    assert client.closed_by_server()


def test_invalid_utf8_closes_with_1007(wire):
    client = wire()
    client.sock.sendall(HANDSHAKE)
    client.read_head()
    assert client.read_json() == WELCOME
    client.sock.sendall(client_frame(b"\xff\xfe"))
    opcode, payload = client.read_frame()
    assert opcode == 8 and struct.unpack("!H", payload[:2])[0] == 1007
    assert client.closed_by_server()


def test_a_bad_upgrade_is_answered_by_aiohttp(wire):
    client = wire()
    client.sock.sendall(HANDSHAKE.replace(RFC_KEY.encode(), b"c2hvcnQ="))  # 5 bytes
    status = client.read_head().split(b"\r\n")[0]
    assert status.startswith(b"HTTP/1.1 4"), status


def test_a_path_starting_like_ws_is_an_ordinary_request(wire):
    client = wire()
    client.sock.sendall(f"GET /wsx HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
    assert client.read_head().split(b"\r\n")[0] == b"HTTP/1.1 404 Not Found"


def test_an_upgrade_after_a_kept_alive_request_is_served_by_aiohttp(wire):
    client = wire()
    client.sock.sendall(f"GET /api/status HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
    head = client.read_head()
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    while len(client.buffer) < length:
        client._fill()
    client.buffer = client.buffer[length:]
    client.sock.sendall(HANDSHAKE + text({"event": "detailsView"}))
    assert client.read_head().startswith(b"HTTP/1.1 101 ")
    assert client.read_json() == WELCOME
    assert client.read_json()["status"] == "OK"


async def test_with_compression_on_aiohttp_serves_websockets_deflated(tmp_path):
    from websupport import RawWebSocket

    from support import start_node

    config = tmp_path / "roomcast.toml"
    config.write_text("[web]\ncompress = true\n")
    node = start_node("--config", str(config))
    client = None
    try:
        client = await RawWebSocket.open(node.web_port, compress=15)
        assert client.ws.compress  # permessage-deflate was negotiated
        assert await client.receive() == WELCOME
        room = unique_room("deflate")
        create_room(node.web_port, room)
        assert (await client.request({"event": "roomAdd", "room": room}))["status"] == "OK"
        await client.send({"event": "say", "room": room, "message": "squeezed"})
        said = await client.read_until(lambda m: m.get("context") == "user")
        assert said["message"] == "squeezed"
    finally:
        if client is not None:
            await client.close()
        node.stop()


def test_an_empty_close_is_answered_with_a_normal_close(wire):
    client = wire()
    client.sock.sendall(HANDSHAKE)
    client.read_head()
    assert client.read_json() == WELCOME
    client.sock.sendall(client_frame(b"", opcode=8))
    assert client.read_frame() == (8, struct.pack("!H", 1000))
    assert client.closed_by_server()


async def test_a_first_request_upgrade_keeps_no_aiohttp_response():
    from websupport import RawWebSocket

    from roomcast.testing import TestNode
    from support import free_port

    async with TestNode(web_port=free_port()) as node:
        client = await RawWebSocket.open(node.api.web_port)
        try:
            assert await client.receive() == WELCOME
            sockets = [c for c in node.api.connections if c.type == "websocket"]
            assert len(sockets) == 1
            assert sockets[0].ws is None  # served by servers.websocket, not aiohttp
        finally:
            await client.close()
