"""A node near its open-file limit refuses new connections with "server is busy" (and a
log line) instead of failing silently, stays up, and serves again once sockets close."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from limits_support import (
    BUSY_LINE,
    WELCOME_LINE,
    first_line,
    new_client_is_served,
    node_with,
    open_file_limit,
    upgrade_status,
)
from support import LOOPBACK, NodeProcess, wait_until

LIMIT = 256


@pytest.fixture
def small_node() -> Iterator[NodeProcess]:
    with node_with(preexec_fn=open_file_limit(LIMIT)) as node:
        yield node


def fill(node: NodeProcess, count: int) -> tuple[list[socket.socket], list[bytes]]:
    """Open ``count`` TCP clients one after another; their sockets and first lines."""
    sockets, lines = [], []
    for _ in range(count):
        sock = socket.create_connection((LOOPBACK, node.socket_port), timeout=5)
        sockets.append(sock)
        lines.append(first_line(sock))
    return sockets, lines


def test_clients_past_the_open_file_limit_are_told_the_server_is_busy(
    small_node: NodeProcess,
) -> None:
    sockets, lines = fill(small_node, LIMIT + 20)
    try:
        assert set(lines) == {WELCOME_LINE, BUSY_LINE}  # never a silent close
        assert lines.index(BUSY_LINE) > LIMIT // 2
        assert BUSY_LINE not in lines[: lines.index(BUSY_LINE)]
    finally:
        for sock in sockets:
            sock.close()


def test_the_open_file_refusal_is_logged_once_not_per_client(small_node: NodeProcess) -> None:
    sockets, _ = fill(small_node, LIMIT + 20)
    try:
        wait_until(lambda: "refusing new connections (open files)" in small_node.log)
        assert small_node.log.count("refusing new connections (open files)") == 1
    finally:
        for sock in sockets:
            sock.close()


def test_a_websocket_upgrade_near_the_open_file_limit_gets_503(small_node: NodeProcess) -> None:
    sockets, _ = fill(small_node, LIMIT + 5)
    try:
        assert upgrade_status(small_node.web_port) == b"HTTP/1.1 503 Service Unavailable"
    finally:
        for sock in sockets:
            sock.close()


def test_the_node_stays_up_and_serves_again_once_sockets_close(small_node: NodeProcess) -> None:
    sockets, lines = fill(small_node, LIMIT + 20)
    assert lines[-1] == BUSY_LINE
    for sock in sockets:
        sock.close()
    # the count of open files is taken again at most a second later
    wait_until(lambda: new_client_is_served(small_node), timeout=10, message="served again")
    assert small_node.process.poll() is None
