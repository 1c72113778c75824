"""Attacks on a real node, each bounded in time: while it lasts, honest clients' p99 stays
within 50 ms (or 3x their p99 just before), the node stays under 250 MB of memory, and
it serves new clients afterwards. The p99 is checked last, and skipped (with the
numbers) on a machine too overloaded to measure wall-clock latency."""

from __future__ import annotations

import contextlib
import multiprocessing
import selectors
import socket
import threading
import time
from multiprocessing.connection import Connection

from attack_support import MAX_RSS, RssWatch, check_honest_latency

from limits_support import (
    BUSY_LINE,
    MIB,
    WELCOME_LINE,
    HonestMember,
    metric,
    new_client_is_served,
    node_with,
    open_file_limit,
    raise_own_file_limit,
    time_round_trips,
)
from support import LOOPBACK, NodeProcess, wait_until

STALLED = 600


def idle_members(node: NodeProcess, count: int, room: str) -> list[socket.socket]:
    """``count`` TCP members of ``room`` that never read (their receive buffers are tiny)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((LOOPBACK, node.socket_port))
        sock.sendall(f"roomAdd {room}\r\n".encode())
        sockets.append(sock)
    return sockets


class Listener(threading.Thread):
    """Reads an honest member's messages in a thread, counting the chat messages."""

    def __init__(self, member: HonestMember) -> None:
        super().__init__(daemon=True)
        self.member = member
        self.heard = 0

    def run(self) -> None:
        try:
            while True:
                if self.member.client.read().get("context") == "user":
                    self.heard += 1
        except (OSError, ConnectionError, ValueError):  # closed by the test
            return


def room_members(member: HonestMember) -> int:
    return int(member.client.request("roomView defaultRoom")["data"]["membersCount"])


def test_members_that_stop_reading_are_dropped_without_hurting_an_honest_chat() -> None:
    raise_own_file_limit(2000)
    # 30 KB messages: fanned out to 600 members, as many bytes a message as 60 KB to 300
    padding = " " + "x" * 30_000
    with node_with() as node:
        honest = HonestMember(node)
        listener = Listener(HonestMember(node))
        listener.start()
        stalled: list[socket.socket] = []
        try:
            before = time_round_trips(honest, 1.5, interval=0.05, padding=padding)
            with RssWatch(node) as rss:
                stalled = idle_members(node, STALLED, "defaultRoom")
                wait_until(
                    lambda: room_members(honest) == STALLED + 2, message="the stalled joined"
                )
                during: list[float] = []
                deadline = time.monotonic() + 15
                while metric(node, "roomcast_slow_consumers_dropped_total") < STALLED:
                    assert time.monotonic() < deadline, "the stalled members were not dropped"
                    during.extend(time_round_trips(honest, 0.5, interval=0.1, padding=padding))
                during.extend(time_round_trips(honest, 1.0, interval=0.05, padding=padding))
            assert rss.peak < MAX_RSS, f"node RSS peaked at {rss.peak / MIB:.0f} MiB"
            assert metric(node, "roomcast_slow_consumers_dropped_total") == STALLED
            # the listener kept up: it heard every message and was never dropped
            wait_until(lambda: listener.heard == honest.count, message="listener heard all")
            assert room_members(honest) == 2
            assert new_client_is_served(node)
            check_honest_latency(before, during)
        finally:
            for sock in stalled:
                sock.close()
            honest.close()
            listener.member.close()


def first_lines(sockets: list[socket.socket], timeout: float = 10.0) -> list[bytes]:
    """The first line each socket receives (b"" for one closed without a line)."""
    lines: dict[socket.socket, bytes] = {}
    buffers = dict.fromkeys(sockets, b"")
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while len(lines) < len(sockets) and time.monotonic() < deadline:
            for key, _ in selector.select(0.2):
                fileobj = key.fileobj
                assert isinstance(fileobj, socket.socket)
                sock = fileobj
                try:
                    chunk = sock.recv(4096)
                except ConnectionError:
                    chunk = b""
                buffers[sock] += chunk
                if b"\r\n" in buffers[sock] or not chunk:
                    lines[sock] = buffers[sock].partition(b"\r\n")[0]
                    selector.unregister(sock)
    finally:
        selector.close()
    return [lines.get(sock, b"<nothing>") for sock in sockets]


def _hold_idle_sockets(port: int, count: int, pipe: Connection) -> None:
    """In a process of its own (the attack must not compete with the honest client for
    this process's GIL): open ``count`` idle TCP sockets, send their first lines, hold
    them until told to close."""
    sockets = [socket.create_connection((LOOPBACK, port), timeout=10) for _ in range(count)]
    pipe.send(first_lines(sockets))
    pipe.recv()
    for sock in sockets:
        sock.close()
    pipe.send("closed")


def test_idle_sockets_past_the_open_file_limit_are_refused_and_honest_clients_carry_on() -> None:
    raise_own_file_limit(3000)
    with node_with(preexec_fn=open_file_limit(1024)) as node:
        honest = HonestMember(node)
        pipe, child_end = multiprocessing.Pipe()
        attacker = multiprocessing.Process(
            target=_hold_idle_sockets, args=(node.socket_port, 1100, child_end), daemon=True
        )
        try:
            before = time_round_trips(honest, 1.5, interval=0.02)
            with RssWatch(node) as rss:
                attacker.start()
                during = []
                while not pipe.poll():
                    during += time_round_trips(honest, 0.2, interval=0.01)
                lines = pipe.recv()
                during += time_round_trips(honest, 1.0, interval=0.01)
            assert rss.peak < MAX_RSS, f"node RSS peaked at {rss.peak / MIB:.0f} MiB"
            assert len(lines) == 1100
            assert set(lines) == {WELCOME_LINE, BUSY_LINE}, set(lines)  # never a silent close
            assert lines.count(WELCOME_LINE) > 900
            assert "refusing new connections (open files)" in node.log
            pipe.send("close")
            assert pipe.poll(10) and pipe.recv() == "closed"
            wait_until(lambda: new_client_is_served(node), message="a new client served again")
            assert honest.still_served()
            check_honest_latency(before, during)
        finally:
            honest.close()
            attacker.kill()
            attacker.join(5)


def _slowloris(port: int, count: int, seconds: float, pipe: Connection) -> None:
    """In a process of its own: ``count`` connections to the web port, each sending one
    more byte of a request head every second; sends back how long each stayed open and
    how many were still open after ``seconds``."""
    heads = (b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    selector = selectors.DefaultSelector()
    opened: dict[socket.socket, tuple[float, bytes]] = {}
    for index in range(count):
        sock = socket.create_connection((LOOPBACK, port), timeout=10)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        opened[sock] = (time.monotonic(), heads[index % 2] + b"a" * 100)
    lifetimes: list[float] = []
    deadline = time.monotonic() + seconds
    sent = 0
    next_drip = time.monotonic()
    while opened and time.monotonic() < deadline:
        if time.monotonic() >= next_drip:
            for sock, (_, head) in opened.items():
                with contextlib.suppress(OSError):  # closed by the node: noticed below
                    sock.send(head[sent : sent + 1])
            sent += 1
            next_drip += 1.0
        for key, _ in selector.select(0.1):
            fileobj = key.fileobj
            assert isinstance(fileobj, socket.socket)
            sock = fileobj
            with contextlib.suppress(OSError):
                if sock.recv(4096):
                    continue  # the 408; the close follows
            started, _ = opened.pop(sock)
            lifetimes.append(time.monotonic() - started)
            selector.unregister(sock)
            sock.close()
    pipe.send((lifetimes, len(opened)))
    for sock in opened:
        sock.close()


def http_round_trip(node: NodeProcess) -> float:
    """Seconds for a new HTTP connection to get ``/health`` answered."""
    started = time.perf_counter()
    with socket.create_connection((LOOPBACK, node.web_port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK"), reply[:100]
    return time.perf_counter() - started


def test_slowloris_connections_are_closed_after_handshake_timeout_and_others_are_served() -> None:
    raise_own_file_limit(4000)
    timeout = 3
    with node_with(f"[limits]\nhandshake_timeout = {timeout}\n") as node:
        honest = HonestMember(node)
        pipe, child_end = multiprocessing.Pipe()
        attacker = multiprocessing.Process(
            target=_slowloris, args=(node.web_port, 1700, timeout + 8, child_end), daemon=True
        )
        try:
            before = time_round_trips(honest, 1.0, interval=0.02)
            web_before = [http_round_trip(node) for _ in range(30)]
            with RssWatch(node) as rss:
                attacker.start()
                during: list[float] = []
                web_during: list[float] = []
                while not pipe.poll():
                    during += time_round_trips(honest, 0.2, interval=0.02)
                    web_during.append(http_round_trip(node))
                lifetimes, still_open = pipe.recv()
            assert still_open == 0
            assert len(lifetimes) == 1700
            assert timeout - 0.5 <= min(lifetimes) <= max(lifetimes) <= timeout + 3
            assert rss.peak < MAX_RSS, f"node RSS peaked at {rss.peak / MIB:.0f} MiB"
            assert new_client_is_served(node)
            check_honest_latency(before, during)
            check_honest_latency(web_before, web_during)
        finally:
            honest.close()
            attacker.kill()
            attacker.join(5)
