"""User-space instructions a node spends per delivery or per connection, counted by
callgrind: a figure that other load on the machine does not move.

    python bench/instructions.py fanout --transport tcp --members 1000 --says 30
    python bench/instructions.py connect --transport ws --count 1000 [--close]
    python bench/instructions.py connect --transport tcp --count 500 --redis
    PYTHONPATH=<other checkout>/src python bench/instructions.py ...   # the code to count

A ``roomcast start`` process (embedded store, or with ``--redis`` a ``redis-server`` this
script starts on a free loopback port; WebSocket pings off; whichever ``roomcast`` the
environment imports) runs under ``valgrind --tool=callgrind`` with
instrumentation off. Clients are plain blocking sockets in this process. Once they are
set up (and warmed up), instrumentation is switched on for the measured work only, then
for the same wall time with nothing to do: the node's idle timers over that time are
subtracted.

- ``fanout``: ``--members`` members of one room (drained by a thread) and a TCP client
  that says ``--says`` short messages ``--pace`` seconds apart. The pace must leave the
  node (some 50 times slower under valgrind) idle between says, or frames are joined
  per member and the count measures batching instead: 0.4 s suits 1,000 members.
- ``connect``: ``--count`` clients connect, read the welcome and join the room one after
  another; they stay open (``--close``: each closes before the next, which adds the
  leave).

Needs valgrind (``callgrind_control`` too). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import glob
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"
ROOM = b"defaultRoom"
MARK = b"instructions-fanout"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def client_frame(payload: bytes) -> bytes:
    """A masked text frame (zero key) of a short payload."""
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def join(transport: str, socket_port: int, web_port: int) -> socket.socket:
    """A member of the room, its join answered."""
    if transport == "tcp":
        sock = socket.create_connection((HOST, socket_port))
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"roomAdd " + ROOM + b"\n")
        while b'"context":"response"' not in reader.readline():
            pass
        return sock
    sock = socket.create_connection((HOST, web_port))
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    received = received[received.index(b"\r\n\r\n") + 4 :]
    sock.sendall(client_frame(b'{"event":"roomAdd","room":"' + ROOM + b'"}'))
    while b'"context":"response"' not in received:
        received += sock.recv(65536)
    return sock


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A ``redis-server`` on a free loopback port, answering; the caller kills it."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", HOST, "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port)):
            return process, f"redis://{HOST}:{port}/0"
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.1)


class Node:
    """``roomcast start`` under callgrind, instrumentation off until asked."""

    def __init__(self, redis: bool = False) -> None:
        self.folder = tempfile.mkdtemp(prefix="roomcast-instructions-")
        self.socket_port, self.web_port = free_port(), free_port()
        self.redis: subprocess.Popen[bytes] | None = None
        store: list[str] = []
        if redis:  # only this node's work is counted: Redis runs outside valgrind
            self.redis, url = start_redis()
            store = ["--redis-url", url]
        # No WebSocket pings: these clients do not answer them, and the runs are long.
        with open(f"{self.folder}/node.toml", "w") as config:
            config.write("[web]\nheartbeat = 0\n")
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={self.folder}/callgrind.%p",
            sys.executable,
            "-m",
            "roomcast",
            "start",
            "--config",
            f"{self.folder}/node.toml",
            "--socket-port",
            str(self.socket_port),
            "--web-port",
            str(self.web_port),
            *store,
        ]
        self.log = open(f"{self.folder}/node.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while b"roomcast ready" not in Path(f"{self.folder}/node.log").read_bytes():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()  # the Redis it started too
                raise RuntimeError(f"the node did not start: see {self.folder}/node.log")
            time.sleep(0.5)

    def control(self, *arguments: str) -> None:
        subprocess.run(
            ["callgrind_control", *arguments, str(self.process.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )

    def count(self, work: Callable[[], object]) -> tuple[int, int]:
        """Instructions while ``work()`` runs, and over the same time doing nothing."""
        started = time.perf_counter()
        self.control("-i", "on")
        work()
        self.control("-i", "off")
        busy_seconds = time.perf_counter() - started
        self.control("-d")
        time.sleep(0.5)
        self.control("-i", "on")
        time.sleep(busy_seconds)
        self.control("-i", "off")
        self.control("-d")
        time.sleep(1.0)
        totals = []
        for path in sorted(glob.glob(f"{self.folder}/callgrind.*"), key=os.path.getmtime):
            with open(path) as dump:
                for line in dump:
                    if line.startswith("totals:"):
                        totals.append(int(line.split()[1]))
                        break
        busy, idle = [total for total in totals if total][-2:]
        return busy, idle

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(30)
        self.log.close()
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait(30)


def fanout(node: Node, transport: str, members: int, says: int, pace: float) -> dict[str, float]:
    sockets = [join(transport, node.socket_port, node.web_port) for _ in range(members)]
    for sock in sockets:
        sock.setblocking(False)
    received = [0]
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            readable, _, _ = select.select(sockets, [], [], 0.1)
            for sock in readable:
                with contextlib.suppress(BlockingIOError):
                    received[0] += sock.recv(1 << 20).count(MARK)

    threading.Thread(target=drain, daemon=True).start()
    sayer = join("tcp", node.socket_port, node.web_port)  # a member too: it hears itself

    def say(count: int) -> None:
        for n in range(count):
            sayer.sendall(b"say %s %s %d\n" % (ROOM, MARK, n))
            time.sleep(pace)

    say(5)  # warm-up
    time.sleep(2.0)
    first = received[0]

    def measured() -> None:
        say(says)
        deadline = time.monotonic() + 120
        while received[0] < first + says * members and time.monotonic() < deadline:
            time.sleep(0.05)

    busy, idle = node.count(measured)
    done.set()
    deliveries = received[0] - first
    return {
        "deliveries": deliveries,
        "busy": busy,
        "idle": idle,
        "per_delivery": round((busy - idle) / max(1, deliveries)),
    }


def connect(node: Node, transport: str, count: int, close: bool) -> dict[str, float]:
    kept = []

    def one() -> None:
        sock = join(transport, node.socket_port, node.web_port)
        if close:
            sock.close()
        else:
            kept.append(sock)

    for _ in range(30):  # warm-up
        one()
    time.sleep(1.0)

    def measured() -> None:
        for _ in range(count):
            one()

    busy, idle = node.count(measured)
    return {
        "connections": count,
        "busy": busy,
        "idle": idle,
        "per_connection": round((busy - idle) / count),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["fanout", "connect"])
    parser.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--says", type=int, default=30)
    parser.add_argument("--pace", type=float, default=0.4)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--close", action="store_true")
    parser.add_argument(
        "--redis", action="store_true", help="a redis-server, not the embedded store"
    )
    options = parser.parse_args()
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    node = Node(redis=options.redis)
    try:
        if options.scenario == "fanout":
            result = fanout(node, options.transport, options.members, options.says, options.pace)
        else:
            result = connect(node, options.transport, options.count, options.close)
    finally:
        node.stop()
    store = "redis" if options.redis else "embedded"
    print({"scenario": options.scenario, "transport": options.transport, "store": store, **result})


if __name__ == "__main__":
    main()
