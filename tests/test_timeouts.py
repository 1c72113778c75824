"""[limits] idle_timeout (silent TCP clients) and handshake_timeout (web-port connections
that do not send a request head in time, kept-alive ones included)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from limits_support import WELCOME_LINE, first_line, http_status_line, node_with, upgrade_request
from support import LOOPBACK, LineClient, NodeProcess

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout"


@pytest.fixture(scope="module")
def timed_node() -> Iterator[NodeProcess]:
    with node_with("[limits]\nidle_timeout = 1\nhandshake_timeout = 1\n") as node:
        yield node


def seconds_until_closed(sock: socket.socket, limit: float = 6.0) -> tuple[float, bytes]:
    """How long until the server closes ``sock``, and every byte it sent meanwhile."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return time.monotonic() - started, received


def web_socket(node: NodeProcess) -> socket.socket:
    return socket.create_connection((LOOPBACK, node.web_port), timeout=5)


def test_a_silent_tcp_client_is_told_bye_and_closed_after_idle_timeout(
    timed_node: NodeProcess,
) -> None:
    with socket.create_connection((LOOPBACK, timed_node.socket_port), timeout=5) as sock:
        assert first_line(sock) == WELCOME_LINE
        elapsed, rest = seconds_until_closed(sock)
    assert 0.9 <= elapsed <= 3.0
    assert rest == b'{"status":"Bye!","context":"api"}\r\n'


def test_a_tcp_client_that_keeps_sending_is_not_closed_by_idle_timeout(
    timed_node: NodeProcess,
) -> None:
    client = LineClient(timed_node.socket_port)
    try:
        assert client.read_raw_line() == WELCOME_LINE
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert client.request("status")["id"] == timed_node.node_id
            time.sleep(0.3)
    finally:
        client.close()


def test_closing_an_idle_client_is_logged_with_its_id(timed_node: NodeProcess) -> None:
    client = LineClient(timed_node.socket_port)
    try:
        client.read_raw_line()
        client_id = client.request("detailsView")["data"]["id"]
        assert client.is_closed(timeout=4)
    finally:
        client.close()
    assert f"closing {client_id}: no byte received for 1 s (idle_timeout)" in timed_node.log


def test_a_web_connection_that_sends_nothing_gets_408_after_handshake_timeout(
    timed_node: NodeProcess,
) -> None:
    with web_socket(timed_node) as sock:
        elapsed, received = seconds_until_closed(sock)
    assert 0.9 <= elapsed <= 3.0
    assert received.startswith(REQUEST_TIMEOUT + b"\r\n")


def test_an_incomplete_request_head_is_closed_after_handshake_timeout(
    timed_node: NodeProcess,
) -> None:
    with web_socket(timed_node) as sock:
        sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        elapsed, received = seconds_until_closed(sock)
    assert elapsed <= 3.0
    assert received.startswith(REQUEST_TIMEOUT)


def test_an_incomplete_upgrade_head_is_closed_after_handshake_timeout(
    timed_node: NodeProcess,
) -> None:
    with web_socket(timed_node) as sock:
        sock.sendall(upgrade_request()[:-2])  # all but the blank line
        elapsed, received = seconds_until_closed(sock)
    assert elapsed <= 3.0
    assert received.startswith(REQUEST_TIMEOUT)


def test_a_head_sent_slowly_but_within_handshake_timeout_is_answered(
    timed_node: NodeProcess,
) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with web_socket(timed_node) as sock:
        for start in range(0, len(head), 15):
            sock.sendall(head[start : start + 15])
            time.sleep(0.2)
        assert http_status_line(sock) == b"HTTP/1.1 200 OK"


def test_an_idle_kept_alive_http_connection_is_closed_after_handshake_timeout(
    timed_node: NodeProcess,
) -> None:
    with web_socket(timed_node) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert http_status_line(sock) == b"HTTP/1.1 200 OK"
        elapsed, _ = seconds_until_closed(sock)
    assert elapsed <= 3.0


def test_an_upgraded_websocket_is_not_closed_by_handshake_timeout(timed_node: NodeProcess) -> None:
    with web_socket(timed_node) as sock:
        sock.sendall(upgrade_request())
        sock.settimeout(2.5)
        received = b""
        with pytest.raises(TimeoutError):  # still open after 2.5 s
            while chunk := sock.recv(65536):
                received += chunk
    assert received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b'"welcome"' in received
