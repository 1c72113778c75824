"""A member that stops reading is disconnected before its unsent output passes its
send_buffer_limit, with a log line naming it, and counted in /metrics; the others keep
getting every message."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from limits_support import (
    HonestMember,
    http_status_line,
    is_closed_by_server,
    masked_text_frame,
    metric,
    node_with,
    stalled_member,
    upgrade_request,
)
from support import LOOPBACK, NodeProcess, wait_until

LIMIT = 65536
BIG = "x" * 30_000
DROPPED = "roomcast_slow_consumers_dropped_total"


@pytest.fixture
def limited_node() -> Iterator[NodeProcess]:
    settings = f"[socket]\nsend_buffer_limit = {LIMIT}\n[web]\nsend_buffer_limit = {LIMIT}\n"
    with node_with(settings) as node:
        yield node


def chat_until(member: HonestMember, done: Callable[[], bool], seconds: float = 15.0) -> int:
    """Say big messages (each heard back) until ``done()``; how many were said."""
    deadline = time.monotonic() + seconds
    said = 0
    while not done():
        assert time.monotonic() < deadline, "the stalled member was never dropped"
        member.round_trip(BIG)
        said += 1
    return said


def test_a_tcp_member_that_stops_reading_is_disconnected(limited_node: NodeProcess) -> None:
    stalled, _ = stalled_member(limited_node)
    honest = HonestMember(limited_node)
    try:
        chat_until(honest, lambda: metric(limited_node, DROPPED) >= 1)
        assert is_closed_by_server(stalled)
        assert honest.still_served()
    finally:
        stalled.close()
        honest.close()


def test_the_drop_is_logged_with_the_id_the_address_and_the_bytes_owed(
    limited_node: NodeProcess,
) -> None:
    stalled, connection_id = stalled_member(limited_node)
    honest = HonestMember(limited_node)
    port = stalled.getsockname()[1]
    try:
        chat_until(honest, lambda: "a slow consumer" in limited_node.log)
    finally:
        stalled.close()
        honest.close()
    line = re.search(
        rf"disconnecting {connection_id} \(127\.0\.0\.1:{port}\), a slow consumer: (\d+) bytes "
        rf"unsent, over its send_buffer_limit of {LIMIT}",
        limited_node.log,
    )
    assert line, limited_node.log[-2000:]
    assert LIMIT < int(line.group(1)) <= LIMIT + len(BIG) + 200  # one message past, no more


def test_each_slow_consumer_is_counted_once_in_metrics(limited_node: NodeProcess) -> None:
    stalled = [stalled_member(limited_node)[0] for _ in range(3)]
    honest = HonestMember(limited_node)
    try:
        chat_until(honest, lambda: metric(limited_node, DROPPED) >= 3)
        for _ in range(20):  # more messages after the drops count nothing more
            honest.round_trip(BIG)
        assert metric(limited_node, DROPPED) == 3
    finally:
        for sock in stalled:
            sock.close()
        honest.close()


def test_a_websocket_member_that_stops_reading_is_disconnected(limited_node: NodeProcess) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((LOOPBACK, limited_node.web_port))
    honest = HonestMember(limited_node)
    try:
        sock.sendall(upgrade_request())
        assert http_status_line(sock) == b"HTTP/1.1 101 Switching Protocols"
        sock.sendall(masked_text_frame('{"event":"roomAdd","room":"defaultRoom"}'))
        wait_until(
            lambda: honest.client.request("roomView defaultRoom")["data"]["membersCount"] == 2
        )
        chat_until(honest, lambda: metric(limited_node, DROPPED) >= 1)
        assert is_closed_by_server(sock)
    finally:
        sock.close()
        honest.close()


def test_members_that_read_are_never_dropped(limited_node: NodeProcess) -> None:
    members = [HonestMember(limited_node) for _ in range(3)]
    try:
        for _ in range(60):
            members[0].round_trip(BIG)
            for other in members[1:]:  # they read what was said, a little later
                other.client.read_until(lambda m: m.get("context") == "user")
        assert metric(limited_node, DROPPED) == 0
    finally:
        for member in members:
            member.close()
