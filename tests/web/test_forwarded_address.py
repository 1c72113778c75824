"""``[web] trusted_proxies``: behind a trusted proxy a client's ``remote_ip`` comes from
``X-Forwarded-For``, on HTTP and on both WebSocket upgrade paths; otherwise the header is
ignored."""

from __future__ import annotations

import json
import os
import socket
import struct
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websupport import RawWebSocket

from support import LOOPBACK, NodeProcess, start_node

WHOAMI = str(Path(__file__).parent / "whoami")
CLIENT = "203.0.113.7"
FORWARDED = {"X-Forwarded-For": f"198.51.100.1, {CLIENT}"}


@pytest.fixture(scope="module")
def proxied_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node that trusts the loopback address as its reverse proxy."""
    config = tmp_path_factory.mktemp("proxied") / "roomcast.toml"
    config.write_text('[web]\ntrusted_proxies = ["127.0.0.0/8"]\n')
    node = start_node("--config", str(config), "--actions", WHOAMI)
    yield node
    node.stop()


@pytest.fixture(scope="module")
def direct_node() -> Iterator[NodeProcess]:
    """A node that trusts no proxy (the default)."""
    node = start_node("--actions", WHOAMI)
    yield node
    node.stop()


def http_remote_ip(node: NodeProcess) -> str:
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{node.web_port}/api/whoami", headers=FORWARDED
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        return str(json.loads(reply.read())["remoteIP"])


async def websocket_remote_ip(node: NodeProcess) -> str:
    client = await RawWebSocket.open(node.web_port, headers=FORWARDED)
    try:
        await client.receive()  # welcome
        await client.send({"event": "detailsView"})
        return str((await client.receive())["data"]["remoteIP"])
    finally:
        await client.close()


def test_an_http_action_behind_a_trusted_proxy_sees_the_forwarded_client(
    proxied_node: NodeProcess,
) -> None:
    assert http_remote_ip(proxied_node) == CLIENT


def test_an_http_action_without_trusted_proxies_sees_the_peer(direct_node: NodeProcess) -> None:
    assert http_remote_ip(direct_node) == LOOPBACK


async def test_a_websocket_behind_a_trusted_proxy_sees_the_forwarded_client(
    proxied_node: NodeProcess,
) -> None:
    assert await websocket_remote_ip(proxied_node) == CLIENT


async def test_a_websocket_without_trusted_proxies_sees_the_peer(
    direct_node: NodeProcess,
) -> None:
    assert await websocket_remote_ip(direct_node) == LOOPBACK


def _read_exactly(sock: socket.socket, buffer: bytearray, size: int) -> bytes:
    while len(buffer) < size:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    data = bytes(buffer[:size])
    del buffer[:size]
    return data


def _read_head(sock: socket.socket, buffer: bytearray) -> bytes:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    buffer[:] = rest
    return head


def _read_text_frame(sock: socket.socket, buffer: bytearray) -> object:
    first, size = _read_exactly(sock, buffer, 2)
    assert first == 0x81, f"expected one unfragmented text frame, got {first:#x}"
    if size == 126:
        size = struct.unpack("!H", _read_exactly(sock, buffer, 2))[0]
    return json.loads(_read_exactly(sock, buffer, size))


def test_an_upgrade_on_a_kept_alive_connection_sees_the_forwarded_client(
    proxied_node: NodeProcess,
) -> None:
    with socket.create_connection((LOOPBACK, proxied_node.web_port), timeout=5) as sock:
        buffer = bytearray()
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
        head = _read_head(sock, buffer)
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        _read_exactly(sock, buffer, length)
        mask = os.urandom(4)
        payload = b'{"event":"detailsView"}'
        frame = bytes([0x81, 0x80 | len(payload)]) + mask
        frame += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: {LOOPBACK}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nX-Forwarded-For: {CLIENT}\r\n\r\n"
            ).encode()
            + frame
        )
        assert _read_head(sock, buffer).startswith(b"HTTP/1.1 101 ")
        _read_text_frame(sock, buffer)  # welcome
        details = _read_text_frame(sock, buffer)
        assert isinstance(details, dict)
        assert details["data"]["remoteIP"] == CLIENT
