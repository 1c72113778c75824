"""Attacks on a real node, each run by a process of its own (so that it does not compete
with the honest client for the test's GIL), and how the attack tests measure the node
meanwhile: an honest member's round trips and the node's peak memory.

An attack process is forked before any thread starts; it sets up (connects, joins), sends
``"ready"``, waits for ``"go"``, attacks, and sends back what it was answered.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from limits_support import (
    MIB,
    WELCOME_LINE,
    HonestMember,
    new_client_is_served,
    node_rss,
    p99,
    time_round_trips,
)
from support import LOOPBACK, LineClient, NodeProcess

MAX_RSS = 250 * MIB
#: The most CPU time (ms) the node's event loop may be held at once during a megabyte
#: attack: a few milliseconds per read or request, never the whole of a client's backlog.
MAX_HELD_MS = 20.0
ATTACK_TIMEOUT = 20.0
PROBES = Path(__file__).parent.parent / "load_actions"


@dataclass
class Attacked:
    """An honest member's round trips (s) before and during an attack, the node's peak
    memory and worst event-loop hold (CPU ms spent elsewhere while its watcher waited:
    a busy machine hardly inflates it) meanwhile, and what the attack process sent back."""

    before: list[float]
    during: list[float]
    rss_peak: int
    held_ms: float
    outcome: Any

    def check_node_kept_up(self, node: NodeProcess, max_held_ms: float | None = None) -> None:
        """The node stayed under ``MAX_RSS``, serves a new client, held its loop under
        ``max_held_ms`` (when given), and kept the honest p99 (checked last: it may skip)."""
        assert self.rss_peak < MAX_RSS, f"node RSS peaked at {self.rss_peak / MIB:.0f} MiB"
        assert new_client_is_served(node)
        if max_held_ms is not None:
            assert self.held_ms < max_held_ms, f"the loop was held {self.held_ms} ms"
        check_honest_latency(self.before, self.during, held_ms=self.held_ms)


def machine_too_busy() -> str | None:
    """Why wall-clock latency cannot be trusted here (a load average over twice the
    cores), or None."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 2 * cores:
        return f"load average {load:.1f} on {cores} cores"
    return None


def assert_honest_latency(before: list[float], during: list[float], floor: float = 0.050) -> None:
    """Honest p99 during an attack stays within ``floor`` (50 ms), or 3x its p99 before."""
    allowed = max(floor, 3 * p99(before))
    assert p99(during) <= allowed, (
        f"honest p99 {p99(during) * 1000:.1f} ms during the attack, "
        f"{p99(before) * 1000:.1f} ms before (allowed {allowed * 1000:.1f} ms)"
    )


def check_honest_latency(
    before: list[float], during: list[float], floor: float = 0.050, held_ms: float | None = None
) -> None:
    """:func:`assert_honest_latency`, skipped (saying so, with the numbers) when the
    machine is too overloaded to measure wall-clock latency at all: call it last."""
    held = "" if held_ms is None else f"; the node's event loop was held {held_ms:.1f} ms"
    try:
        assert_honest_latency(before, during, floor)
    except AssertionError as error:
        busy = machine_too_busy()
        if busy is None:
            raise AssertionError(f"{error}{held}") from None
        pytest.skip(f"machine too busy to measure latency ({busy}): {error}{held}")


class RssWatch:
    """Samples the node's resident memory in a thread; ``peak`` is the largest seen."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.peak = node_rss(node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, node_rss(self.node))


@contextlib.contextmanager
def attack_process(target: Callable[..., None], *args: Any) -> Iterator[Connection]:
    """``target(*args, pipe)`` in a forked process, once it has said ``"ready"``."""
    pipe, child_end = multiprocessing.get_context("fork").Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=target, args=(*args, child_end), daemon=True
    )
    process.start()
    try:
        assert pipe.poll(60), "the attack process did not get ready"
        assert pipe.recv() == "ready"
        yield pipe
    finally:
        process.kill()
        process.join(5)


def measure_attack(
    node: NodeProcess, honest: HonestMember, pipe: Connection, timeout: float = ATTACK_TIMEOUT
) -> Attacked:
    """Round trips before, then ``"go"``, then round trips until the attack reports back.
    The node runs the probe actions of ``tests/load_actions`` (``loopLag``)."""
    before = time_round_trips(honest, 1.5, interval=0.02)
    probe = LineClient(node.socket_port)
    try:
        assert probe.read_raw_line() == WELCOME_LINE
        probe.request('{"action":"loopLag","params":{"reset":"yes"}}')
        with RssWatch(node) as rss:
            pipe.send("go")
            during: list[float] = []
            deadline = time.monotonic() + timeout
            while not pipe.poll():
                assert time.monotonic() < deadline, "the attack did not end"
                during += time_round_trips(honest, 0.2, interval=0.02)
            outcome = pipe.recv()
        held = float(probe.request("loopLag")["heldMs"])
    finally:
        probe.close()
    return Attacked(before, during, rss.peak, held, outcome)


# the attack processes -------------------------------------------------------------------


def joined_socket(port: int, room: str, receive_buffer: int = 0) -> socket.socket:
    """A TCP member of ``room`` (its join answered), left non-blocking."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect((LOOPBACK, port))
    sock.sendall(f"roomAdd {room}\n".encode())
    received = b""
    while b'"context":"response"' not in received:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed while joining")
        received += chunk
    assert b'"status":"OK"' in received, received
    sock.setblocking(False)
    return sock


def drain(sockets: list[socket.socket]) -> int:
    """Read what waits on every socket; how many the node has closed."""
    closed = 0
    for sock in sockets:
        try:
            while sock.recv(1 << 20):
                pass
            closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


class Replies:
    """Reads one blocking client's replies (``context: response`` lines), counting them
    by their error text, stepping over chat messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed by the node")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def reply(self) -> bytes:
        while b'"context":"response"' not in (line := self.line()):
            pass
        return line


def reply_text(line: bytes) -> str:
    """A reply's error text (``status`` of a verb, ``error`` of an action) or "OK"."""
    import json

    reply = json.loads(line)
    return str(reply.get("error") or reply.get("status"))


def _welcomed(port: int) -> tuple[socket.socket, Replies]:
    sock = socket.create_connection((LOOPBACK, port), timeout=30)
    replies = Replies(sock)
    assert replies.line() == WELCOME_LINE
    return sock, replies


def control_byte_says(port: int, room: str, members: int, seconds: float, pipe: Connection) -> None:
    """``members`` TCP members of ``room`` (drained as they are sent to) and one more that
    says a line of 1,000,000 ``\\x01`` bytes, five at a time (0.2 s apart), for
    ``seconds``: sends back the count of each reply text, and how many members the node
    closed."""
    sockets = [joined_socket(port, room) for _ in range(members)]
    sayer, replies = _welcomed(port)
    sayer.sendall(f"roomAdd {room}\n".encode())
    assert reply_text(replies.reply()) == "OK"
    line = f"say {room} ".encode() + b"\x01" * 1_000_000 + b"\n"
    pipe.send("ready")
    assert pipe.recv() == "go"
    answers: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sayer.sendall(line * 5)
        for _ in range(5):
            answers[reply_text(replies.reply())] += 1
        drain(sockets)
        time.sleep(0.2)
    pipe.send((dict(answers), drain(sockets)))


def param_flood(port: int, count: int, size: int, pipe: Connection) -> None:
    """One connection sends ``count`` ``paramAdd``s of ``size`` bytes, then asks
    ``detailsView``: sends back the count of each reply text and the detailsView line."""
    sock, replies = _welcomed(port)
    value = b"v" * size
    pipe.send("ready")
    assert pipe.recv() == "go"
    answers: Counter[str] = Counter()
    for start in range(0, count, 10):
        sock.sendall(b"".join(b"paramAdd k%d=%s\n" % (n, value) for n in range(start, start + 10)))
        for _ in range(10):
            answers[reply_text(replies.reply())] += 1
    sock.sendall(b"detailsView\n")
    pipe.send((dict(answers), replies.reply()))


def room_join_flood(port: int, prefix: str, count: int, pipe: Connection) -> None:
    """One connection pipelines ``roomAdd`` of ``count`` rooms: sends back the count of
    each reply text; then, told ``"quit"``, quits and reports the node closed it."""
    sock, replies = _welcomed(port)
    pipe.send("ready")
    assert pipe.recv() == "go"
    answers: Counter[str] = Counter()
    batch = 1000
    for start in range(0, count, batch):
        sock.sendall(
            b"".join(b"roomAdd %s-%d\n" % (prefix.encode(), n) for n in range(start, start + batch))
        )
        for _ in range(batch):
            answers[reply_text(replies.reply())] += 1
    pipe.send(dict(answers))
    assert pipe.recv() == "quit"
    sock.sendall(b"quit\n")
    sock.settimeout(10)
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass
    pipe.send("closed")


def status_storm(web_port: int, parallel: int, seconds: float, pipe: Connection) -> None:
    """``parallel`` threads calling ``GET /api/status`` over and over for ``seconds``:
    sends back every call's seconds, and the set of room counts and HTTP statuses seen."""
    import http.client
    import json

    pipe.send("ready")
    assert pipe.recv() == "go"
    times: list[float] = []
    seen: set[tuple[int, Any]] = set()
    deadline = time.monotonic() + seconds

    def call() -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            connection = http.client.HTTPConnection(LOOPBACK, web_port, timeout=30)
            try:
                connection.request("GET", "/api/status")
                response = connection.getresponse()
                body = json.loads(response.read())
            finally:
                connection.close()
            times.append(time.perf_counter() - started)
            seen.add((response.status, body.get("rooms")))

    threads = [threading.Thread(target=call) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    pipe.send((times, seen))
