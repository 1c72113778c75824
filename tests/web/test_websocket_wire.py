"""The WebSocket wire byte by byte against a real node: the opening handshake, frames
split or batched across TCP reads, control frames, protocol errors, permessage-deflate,
and an upgrade on a kept-alive connection.

These tests use a plain socket, so they see exactly the bytes the server writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websupport import WELCOME, RawWebSocket, create_room, unique_room

from roomcast.testing import TestNode
from support import LOOPBACK, NodeProcess, free_port, start_node

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the example of RFC 6455
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
DEFLATE_ACCEPTED = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
FIN, RSV1, TEXT, CLOSE, PING, PONG = 0x80, 0x40, 0x1, 0x8, 0x9, 0xA


def client_frame(
    payload: bytes, opcode: int = TEXT, *, fin: bool = True, rsv: int = 0, masked: bool = True
) -> bytes:
    """A client frame, masked as a client must unless told otherwise."""
    mask = os.urandom(4)
    head = bytes([(FIN if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(value: Any) -> bytes:
    return client_frame(json.dumps(value).encode())


def compressed_text(value: Any) -> bytes:
    """A JSON text message as a client compresses it (RSV1, raw deflate, tail removed)."""
    compressor = zlib.compressobj(wbits=-15)
    data = compressor.compress(json.dumps(value).encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return client_frame(data[:-4], rsv=RSV1)


def handshake(extensions: str | None = None) -> bytes:
    offer = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    return (
        f"GET /ws HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\n"
        f"Sec-WebSocket-Version: 13\r\n{offer}\r\n"
    ).encode()


HANDSHAKE = handshake()
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


class WireClient:
    """A socket with a bounded reader of HTTP heads and server frames."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=5)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self.fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    def read_body(self, head: bytes) -> bytes:
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        while len(self.buffer) < length:
            self.fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body

    def read_raw_frame(self) -> tuple[int, bytes]:
        """The next server frame: its first byte (FIN, RSV, opcode) and its payload."""
        while len(self.buffer) < 2:
            self.fill()
        first, size = self.buffer[0], self.buffer[1] & 0x7F
        assert not self.buffer[1] & 0x80, "server frames are never masked"
        start = 2
        if size == 126:
            while len(self.buffer) < 4:
                self.fill()
            size, start = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif size == 127:
            while len(self.buffer) < 10:
                self.fill()
            size, start = struct.unpack("!Q", self.buffer[2:10])[0], 10
        while len(self.buffer) < start + size:
            self.fill()
        payload = self.buffer[start : start + size]
        self.buffer = self.buffer[start + size :]
        return first, payload

    def read_frame(self) -> tuple[int, bytes]:
        """The next uncompressed, unfragmented frame: its opcode and payload."""
        first, payload = self.read_raw_frame()
        assert first & 0xF0 == FIN, f"FIN only, no RSV bit: {first:#x}"
        return first & 0x0F, payload

    def read_json(self) -> Any:
        opcode, payload = self.read_frame()
        assert opcode == TEXT, (opcode, payload)
        return json.loads(payload)

    def read_deflated_json(self, window_bits: int = 15) -> Any:
        """The next text frame, which must be compressed on its own (RSV1 set)."""
        first, payload = self.read_raw_frame()
        assert first == FIN | RSV1 | TEXT, f"not a compressed text frame: {first:#x}"
        # A fresh inflater per message: the server used no context takeover.
        inflated = zlib.decompressobj(-window_bits).decompress(payload + b"\x00\x00\xff\xff")
        return json.loads(inflated)

    def upgrade(self, extensions: str | None = None) -> bytes:
        """Send the handshake; return the 101's head (the welcome is not read)."""
        self.sock.sendall(handshake(extensions))
        head = self.read_head()
        assert head.startswith(b"HTTP/1.1 101 "), head
        return head

    def rest_until_closed(self) -> bytes:
        """Every byte the server still sends until it closes the connection."""
        rest, self.buffer = self.buffer, b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return rest
            if not chunk:
                return rest
            rest += chunk

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


Connect = Callable[[], WireClient]


def clients_of(node: NodeProcess) -> Iterator[Connect]:
    clients: list[WireClient] = []

    def connect() -> WireClient:
        client = WireClient(node.web_port)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def wire(web_node: NodeProcess) -> Iterator[Connect]:
    """Raw clients of the module's default node (compression off)."""
    yield from clients_of(web_node)


@pytest.fixture(scope="module")
def deflate_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with ``[web] compress = true``."""
    config = tmp_path_factory.mktemp("deflate") / "roomcast.toml"
    config.write_text("[web]\ncompress = true\n")
    node = start_node("--config", str(config))
    yield node
    node.stop()


@pytest.fixture
def deflate_wire(deflate_node: NodeProcess) -> Iterator[Connect]:
    """Raw clients of the compressing node."""
    yield from clients_of(deflate_node)


def after_a_kept_alive_request(client: WireClient) -> None:
    """Send one ordinary request on ``client`` and read its whole answer."""
    client.sock.sendall(f"GET /api/status HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
    head = client.read_head()
    assert head.startswith(b"HTTP/1.1 200 "), head
    client.read_body(head)


# the handshake ---------------------------------------------------------------------------


def test_a_handshake_trickling_in_byte_by_byte_is_answered(wire: Connect) -> None:
    client = wire()
    for byte in HANDSHAKE:
        client.sock.sendall(bytes([byte]))
    head = client.read_head()
    assert head.startswith(b"HTTP/1.1 101 ")
    assert f"Sec-WebSocket-Accept: {RFC_ACCEPT}".encode() in head
    assert client.read_json() == WELCOME


def test_the_101_and_the_welcome_leave_in_one_write(wire: Connect) -> None:
    client = wire()
    client.sock.sendall(HANDSHAKE)
    client.fill()  # the first segment the server sent
    head, _, rest = client.buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert rest == b"\x81" + bytes([len(json.dumps(WELCOME, separators=(",", ":")))]) + (
        json.dumps(WELCOME, separators=(",", ":")).encode()
    )


def test_a_bad_upgrade_gets_an_http_error(wire: Connect) -> None:
    client = wire()
    client.sock.sendall(HANDSHAKE.replace(RFC_KEY.encode(), b"c2hvcnQ="))  # 5 bytes
    status = client.read_head().split(b"\r\n")[0]
    assert status.startswith(b"HTTP/1.1 4"), status


def test_a_path_starting_like_ws_is_an_ordinary_request(wire: Connect) -> None:
    client = wire()
    client.sock.sendall(f"GET /wsx HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
    assert client.read_head().split(b"\r\n")[0] == b"HTTP/1.1 404 Not Found"


def test_with_compression_off_a_deflate_offer_gets_plain_frames(wire: Connect) -> None:
    client = wire()
    head = client.upgrade(DEFLATE_OFFER)
    assert b"sec-websocket-extensions" not in head.lower()
    assert client.read_json() == WELCOME  # RSV1 clear


# frames ----------------------------------------------------------------------------------


def test_frames_sent_with_the_handshake_are_answered_in_order(
    wire: Connect, web_node: NodeProcess
) -> None:
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


def test_a_fragmented_message_split_across_reads_is_one_request(wire: Connect) -> None:
    client = wire()
    client.upgrade()
    assert client.read_json() == WELCOME
    body = json.dumps({"event": "detailsView", "messageId": "frag"}).encode()
    data = client_frame(body[:5], fin=False) + client_frame(body[5:], opcode=0)
    for piece in (data[:3], data[3:9], data[9:]):
        client.sock.sendall(piece)
    reply = client.read_json()
    assert reply["messageId"] == "frag" and reply["status"] == "OK"


def test_a_ping_gets_a_pong_with_its_payload(wire: Connect) -> None:
    client = wire()
    client.sock.sendall(HANDSHAKE + client_frame(b"are you there", opcode=PING))
    client.read_head()
    frames = [client.read_frame(), client.read_frame()]
    assert (PONG, b"are you there") in frames  # the pong, before or after the welcome


# closing ---------------------------------------------------------------------------------


def test_a_client_close_is_echoed_and_the_connection_ends(wire: Connect) -> None:
    client = wire()
    client.upgrade()
    assert client.read_json() == WELCOME
    client.sock.sendall(client_frame(struct.pack("!H", 1000) + b"done", opcode=CLOSE))
    assert client.read_frame() == (CLOSE, struct.pack("!H", 1000))
    assert client.closed_by_server()


def test_an_empty_close_is_answered_with_a_normal_close(wire: Connect) -> None:
    client = wire()
    client.upgrade()
    assert client.read_json() == WELCOME
    client.sock.sendall(client_frame(b"", opcode=CLOSE))
    assert client.read_frame() == (CLOSE, struct.pack("!H", 1000))
    assert client.closed_by_server()


def test_quit_says_goodbye_and_closes_normally(wire: Connect) -> None:
    client = wire()
    client.sock.sendall(HANDSHAKE + text({"event": "quit"}))
    client.read_head()
    assert client.read_json() == WELCOME
    assert client.read_json() == {"status": "Bye!", "context": "api"}
    assert client.read_frame() == (CLOSE, struct.pack("!H", 1000))
    assert client.closed_by_server()


def test_an_unmasked_frame_closes_with_1002(wire: Connect) -> None:
    client = wire()
    client.upgrade()
    assert client.read_json() == WELCOME
    client.sock.sendall(client_frame(b'{"event":"detailsView"}', masked=False))
    assert client.read_frame() == (CLOSE, b"\x03\xea" + b"client frames must be masked")
    assert client.closed_by_server()


def test_invalid_utf8_closes_with_1007(wire: Connect) -> None:
    client = wire()
    client.upgrade()
    assert client.read_json() == WELCOME
    client.sock.sendall(client_frame(b"\xff\xfe"))
    assert client.read_frame() == (CLOSE, b"\x03\xef" + b"a text message must be UTF-8")
    assert client.closed_by_server()


def test_a_frame_header_over_the_size_limit_closes_with_1009_before_the_payload(
    wire: Connect,
) -> None:
    client = wire()
    client.upgrade()
    assert client.read_json() == WELCOME
    # Only the header of a 2 MiB frame (the limit is 1 MiB): the payload never comes.
    client.sock.sendall(b"\x81\xff" + struct.pack("!Q", 2 << 20) + os.urandom(4))
    assert client.read_frame() == (CLOSE, b"\x03\xf1" + b"a message is at most 1048576 bytes")
    assert client.closed_by_server()


# an upgrade on a kept-alive connection ---------------------------------------------------


def test_an_upgrade_after_a_kept_alive_request_is_answered_and_served(wire: Connect) -> None:
    client = wire()
    after_a_kept_alive_request(client)
    client.sock.sendall(HANDSHAKE + text({"event": "detailsView"}))
    head = client.read_head()
    assert head.startswith(b"HTTP/1.1 101 ")
    assert f"Sec-WebSocket-Accept: {RFC_ACCEPT}".encode() in head
    assert client.read_json() == WELCOME
    assert client.read_json()["status"] == "OK"


def test_an_upgrade_after_a_kept_alive_request_closes_an_unmasked_frame_with_1002(
    wire: Connect,
) -> None:
    client = wire()
    after_a_kept_alive_request(client)
    client.upgrade()
    assert client.read_json() == WELCOME
    client.sock.sendall(client_frame(b"{}", masked=False))
    assert client.read_frame() == (CLOSE, b"\x03\xea" + b"client frames must be masked")
    assert client.closed_by_server()


@pytest.mark.parametrize("kept_alive", [False, True], ids=["first-request", "kept-alive"])
def test_nothing_is_written_after_the_close_frame(wire: Connect, kept_alive: bool) -> None:
    client = wire()
    if kept_alive:
        after_a_kept_alive_request(client)
    client.upgrade()
    assert client.read_json() == WELCOME
    client.sock.sendall(text({"event": "quit"}))
    assert client.read_json() == {"status": "Bye!", "context": "api"}
    assert client.read_frame() == (CLOSE, struct.pack("!H", 1000))
    assert client.rest_until_closed() == b""


async def test_a_first_request_upgrade_runs_no_aiohttp_request_handler() -> None:
    def aiohttp_handlers() -> list[asyncio.Task[Any]]:
        return [
            task
            for task in asyncio.all_tasks()
            if "RequestHandler" in getattr(task.get_coro(), "__qualname__", "")
        ]

    async with TestNode(web_port=free_port()) as node:
        assert node.api.web_port is not None
        client = await RawWebSocket.open(node.api.web_port)
        try:
            assert await client.receive() == WELCOME
            assert [c.type for c in node.api.connections] == ["websocket"]
            assert aiohttp_handlers() == []  # the WebSocket protocol serves it alone
        finally:
            await client.close()


# permessage-deflate ----------------------------------------------------------------------


def test_with_compression_on_the_101_agrees_on_deflate_without_context_takeover(
    deflate_wire: Connect,
) -> None:
    client = deflate_wire()
    head = client.upgrade(DEFLATE_OFFER)
    assert f"Sec-WebSocket-Extensions: {DEFLATE_ACCEPTED}".encode() in head.split(b"\r\n")


def test_with_compression_on_chat_messages_arrive_compressed_and_inflate_to_the_json(
    deflate_wire: Connect, deflate_node: NodeProcess
) -> None:
    room = unique_room("deflate")
    create_room(deflate_node.web_port, room)
    client = deflate_wire()
    client.upgrade(DEFLATE_OFFER)
    assert client.read_deflated_json() == WELCOME
    client.sock.sendall(text({"event": "roomAdd", "room": room}))
    assert client.read_deflated_json()["status"] == "OK"
    client.sock.sendall(text({"event": "say", "room": room, "message": "squeezed " * 20}))
    frames = [client.read_deflated_json(), client.read_deflated_json()]
    said = next(frame for frame in frames if frame.get("context") == "user")
    assert said == {
        "message": "squeezed " * 20,
        "room": room,
        "from": said["from"],
        "context": "user",
        "sentAt": said["sentAt"],
    }


def test_a_message_the_client_sends_compressed_is_understood(
    deflate_wire: Connect, deflate_node: NodeProcess
) -> None:
    room = unique_room("inflate")
    create_room(deflate_node.web_port, room)
    client = deflate_wire()
    client.upgrade(DEFLATE_OFFER)
    assert client.read_deflated_json() == WELCOME
    client.sock.sendall(compressed_text({"event": "roomAdd", "room": room, "messageId": "z"}))
    assert client.read_deflated_json() == {
        "status": "OK",
        "context": "response",
        "data": True,
        "messageCount": 1,
        "messageId": "z",
    }


def test_compressed_members_of_a_room_receive_the_same_frame_bytes(
    deflate_wire: Connect, deflate_node: NodeProcess
) -> None:
    room = unique_room("shared")
    create_room(deflate_node.web_port, room)
    members = [deflate_wire(), deflate_wire()]
    for member in members:
        member.upgrade(DEFLATE_OFFER)
        assert member.read_deflated_json() == WELCOME
        member.sock.sendall(text({"event": "roomAdd", "room": room}))
        assert member.read_deflated_json()["status"] == "OK"
    members[0].sock.sendall(text({"event": "say", "room": room, "message": "one frame"}))
    chat_frames = []
    for member in members:
        while True:
            first, payload = member.read_raw_frame()
            message = json.loads(zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff"))
            if message.get("context") == "user":
                chat_frames.append((first, payload))
                break
    assert chat_frames[0] == chat_frames[1]


def test_a_client_limiting_the_server_window_gets_messages_within_that_window(
    deflate_wire: Connect,
) -> None:
    client = deflate_wire()
    head = client.upgrade("permessage-deflate; server_max_window_bits=9")
    accepted = f"Sec-WebSocket-Extensions: {DEFLATE_ACCEPTED}; server_max_window_bits=9"
    assert accepted.encode() in head.split(b"\r\n")
    assert client.read_deflated_json(window_bits=9) == WELCOME


def test_with_compression_on_a_client_offering_nothing_gets_plain_frames(
    deflate_wire: Connect,
) -> None:
    client = deflate_wire()
    head = client.upgrade()
    assert b"sec-websocket-extensions" not in head.lower()
    assert client.read_json() == WELCOME


def test_an_upgrade_after_a_kept_alive_request_agrees_on_deflate_too(
    deflate_wire: Connect,
) -> None:
    client = deflate_wire()
    after_a_kept_alive_request(client)
    head = client.upgrade(DEFLATE_OFFER)
    assert f"Sec-WebSocket-Extensions: {DEFLATE_ACCEPTED}".encode() in head.split(b"\r\n")
    assert client.read_deflated_json() == WELCOME
    client.sock.sendall(compressed_text({"event": "detailsView"}))
    assert client.read_deflated_json()["status"] == "OK"


async def test_aiohttp_client_with_deflate_chats_with_a_compressing_node(
    deflate_node: NodeProcess,
) -> None:
    client = await RawWebSocket.open(deflate_node.web_port, compress=15)
    try:
        assert client.ws.compress == 15  # permessage-deflate was agreed
        assert await client.receive() == WELCOME
        room = unique_room("aiohttp-deflate")
        create_room(deflate_node.web_port, room)
        assert (await client.request({"event": "roomAdd", "room": room}))["status"] == "OK"
        await client.send({"event": "say", "room": room, "message": "squeezed"})
        said = await client.read_until(lambda m: m.get("context") == "user")
        assert said["message"] == "squeezed"
    finally:
        await client.close()
