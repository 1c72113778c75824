"""[limits] max_connections, max_connections_per_ip and connection_rate, end to end: a
refused TCP client gets one "server is busy" line, a refused upgrade a 503, and nothing
of theirs is built or stored."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from limits_support import (
    BUSY_LINE,
    WELCOME_LINE,
    connections_gauge,
    first_line,
    http_status_line,
    is_closed_by_server,
    new_client_is_served,
    node_with,
    upgrade_request,
    upgrade_status,
)
from support import LOOPBACK, NodeProcess, wait_until

SERVICE_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable"
SWITCHING = b"HTTP/1.1 101 Switching Protocols"


def connect(node: NodeProcess) -> socket.socket:
    return socket.create_connection((LOOPBACK, node.socket_port), timeout=5)


@pytest.fixture(scope="module")
def two_per_node() -> Iterator[NodeProcess]:
    with node_with("[limits]\nmax_connections = 2\n") as node:
        yield node


@pytest.fixture
def full_node(two_per_node: NodeProcess) -> Iterator[NodeProcess]:
    """``two_per_node`` with its two persistent connections taken (freed afterwards)."""
    held = [connect(two_per_node) for _ in range(2)]
    for sock in held:
        assert first_line(sock) == WELCOME_LINE
    yield two_per_node
    for sock in held:
        sock.close()
    wait_until(lambda: connections_gauge(two_per_node, "socket") == 0, message="slots freed")


def test_a_tcp_client_over_max_connections_gets_one_busy_line_and_is_closed(
    full_node: NodeProcess,
) -> None:
    with connect(full_node) as sock:
        sock.settimeout(5)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received == BUSY_LINE + b"\r\n"


def test_a_refused_tcp_client_is_never_answered(full_node: NodeProcess) -> None:
    with connect(full_node) as sock:
        sock.sendall(b"roomAdd defaultRoom\r\nstatus\r\n")
        assert first_line(sock) == BUSY_LINE
        assert is_closed_by_server(sock)


def test_a_refused_client_is_not_counted_as_a_connection(full_node: NodeProcess) -> None:
    for _ in range(3):
        with connect(full_node) as sock:
            assert first_line(sock) == BUSY_LINE
    assert connections_gauge(full_node, "socket") == 2


def test_a_first_request_upgrade_over_max_connections_gets_503(full_node: NodeProcess) -> None:
    assert upgrade_status(full_node.web_port) == SERVICE_UNAVAILABLE


def test_a_kept_alive_upgrade_over_max_connections_gets_503(full_node: NodeProcess) -> None:
    assert upgrade_status(full_node.web_port, kept_alive=True) == SERVICE_UNAVAILABLE


def test_http_requests_are_not_persistent_connections_and_are_served_at_the_limit(
    full_node: NodeProcess,
) -> None:
    url = f"http://{LOOPBACK}:{full_node.web_port}/api/status"
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200


def test_websocket_clients_count_against_max_connections_too(two_per_node: NodeProcess) -> None:
    held = [socket.create_connection((LOOPBACK, two_per_node.web_port)) for _ in range(2)]
    try:
        for sock in held:
            sock.sendall(upgrade_request())
            assert http_status_line(sock) == SWITCHING
        with connect(two_per_node) as sock:
            assert first_line(sock) == BUSY_LINE
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: connections_gauge(two_per_node, "websocket") == 0, message="ws freed")


def test_a_slot_freed_by_a_leaving_client_admits_the_next_one(two_per_node: NodeProcess) -> None:
    first, second = connect(two_per_node), connect(two_per_node)
    try:
        assert first_line(first) == first_line(second) == WELCOME_LINE
        first.close()
        wait_until(lambda: new_client_is_served(two_per_node), message="a freed slot")
    finally:
        first.close()
        second.close()


def test_max_connections_per_ip_refuses_the_extra_connection_of_one_address() -> None:
    with node_with("[limits]\nmax_connections_per_ip = 2\n") as node:
        held = [connect(node) for _ in range(2)]
        try:
            assert [first_line(sock) for sock in held] == [WELCOME_LINE, WELCOME_LINE]
            with connect(node) as sock:
                assert first_line(sock) == BUSY_LINE
            assert upgrade_status(node.web_port) == SERVICE_UNAVAILABLE
        finally:
            for sock in held:
                sock.close()


def test_connection_rate_refuses_a_burst_beyond_its_bucket_then_admits_again() -> None:
    with node_with("[limits]\nconnection_rate = 2\n") as node:
        burst = [connect(node) for _ in range(8)]
        try:
            lines = [first_line(sock) for sock in burst]
        finally:
            for sock in burst:
                sock.close()
        assert set(lines) == {WELCOME_LINE, BUSY_LINE}
        # the bucket holds 2 and refills 2 a second while the burst is read
        assert 2 <= lines.count(WELCOME_LINE) <= 5
        time.sleep(1.0)  # the bucket refills: one more connection is welcome
        assert new_client_is_served(node)


def test_connection_limits_are_off_by_default(node: NodeProcess) -> None:
    held = [connect(node) for _ in range(40)]
    try:
        assert {first_line(sock) for sock in held} == {WELCOME_LINE}
    finally:
        for sock in held:
            sock.close()
