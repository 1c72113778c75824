"""Helpers for the connection-limit and attack tests: nodes with a settings file or a low
open-file limit, an honest member that times its messages, and the node's memory."""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from support import LOOPBACK, LineClient, NodeProcess, start_node, wait_until

BUSY_LINE = b'{"status":"error","error":"server is busy","context":"api"}'
WELCOME_LINE = b'{"welcome":"Hello! Welcome to the roomcast api","context":"api"}'
MIB = 1 << 20


def write_settings(text: str) -> str:
    """A TOML settings file holding ``text``; returns its path."""
    directory = Path(tempfile.mkdtemp(prefix="roomcast-limits-"))
    path = directory / "roomcast.toml"
    path.write_text(text)
    return str(path)


def open_file_limit(limit: int) -> Callable[[], None]:
    """A ``preexec_fn`` giving the child ``limit`` open files, soft and hard (the node
    cannot raise it back)."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return lower


@contextlib.contextmanager
def node_with(settings: str = "", *extra: str, **kwargs: Any) -> Iterator[NodeProcess]:
    """A running node started with a settings file holding ``settings``."""
    args = ("--config", write_settings(settings), *extra) if settings else extra
    node = start_node(*args, **kwargs)
    try:
        yield node
    finally:
        node.stop()


def raise_own_file_limit(needed: int) -> None:
    """Let this test process hold ``needed`` sockets (skip when the system forbids it)."""
    import pytest

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the open-file hard limit ({hard}) is below the {needed} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def first_line(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """The first line the server sends on ``sock`` (without ``\\r\\n``); b"" if it closed."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    return data.partition(b"\r\n")[0]


def node_rss(node: NodeProcess) -> int:
    """The node process's resident memory, in bytes."""
    return int(psutil.Process(node.pid).memory_info().rss)


def metric(node: NodeProcess, name: str) -> float:
    """One unlabelled sample of the node's ``/metrics``."""
    url = f"http://{LOOPBACK}:{node.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def status(node: NodeProcess) -> dict[str, Any]:
    """The node's ``status`` verb, asked on a fresh TCP connection."""
    client = LineClient(node.socket_port)
    try:
        assert client.read_raw_line() == WELCOME_LINE
        reply: dict[str, Any] = client.request("status")
        return reply
    finally:
        client.close()


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class HonestMember:
    """A TCP member of ``room`` that says a message and times until it hears it back."""

    def __init__(self, node: NodeProcess, room: str = "defaultRoom") -> None:
        self.room = room
        self.client = LineClient(node.socket_port, timeout=10)
        assert self.client.read_raw_line() == WELCOME_LINE
        assert self.client.request(f"roomAdd {room}")["data"] is True
        self.count = 0

    def round_trip(self, padding: str = "") -> float:
        """Seconds from sending a say to reading it back (every member hears its own)."""
        self.count += 1
        marker = f"honest-{self.count}"
        started = time.perf_counter()
        self.client.send_line(f"say {self.room} {marker}{padding}")
        self.client.read_until(
            lambda m: m.get("context") == "user" and str(m.get("message")).startswith(marker),
            limit=1000,
        )
        elapsed = time.perf_counter() - started
        self.client.read_until(lambda m: m.get("context") == "response")  # the say's "OK"
        return elapsed

    def still_served(self) -> bool:
        return bool(self.client.request("status").get("id"))

    def close(self) -> None:
        self.client.close()


def time_round_trips(
    member: HonestMember, seconds: float, interval: float = 0.02, padding: str = ""
) -> list[float]:
    """Round trips of ``member`` for ``seconds``, one every ``interval`` at most."""
    samples: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(member.round_trip(padding))
        time.sleep(interval)
    return samples


def new_client_is_served(node: NodeProcess) -> bool:
    """A new TCP client gets the welcome and an answer to ``status``."""
    client = LineClient(node.socket_port)
    try:
        return client.read_raw_line() == WELCOME_LINE and bool(client.request("status")["id"])
    finally:
        client.close()


def wait_for_metric(node: NodeProcess, name: str, value: float, timeout: float = 10.0) -> float:
    return float(
        wait_until(
            lambda: metric(node, name) if metric(node, name) >= value else None,
            timeout,
            message=f"{name} >= {value}",
        )
    )


def json_line(data: bytes) -> Any:
    return json.loads(data)


def upgrade_request(origin: str | None = None) -> bytes:
    """The head of a WebSocket upgrade to ``/ws``, with an ``Origin`` header when given."""
    head = (
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
    if origin is not None:
        head += f"Origin: {origin}\r\n"
    return (head + "\r\n").encode()


def http_status_line(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """The status line of the next response on ``sock``; its head and body are read."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data.partition(b"\r\n")[0]
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length: *(\d+)", head)
    length = int(found.group(1)) if found else 0
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return head.partition(b"\r\n")[0]


def upgrade_status(port: int, origin: str | None = None, kept_alive: bool = False) -> bytes:
    """The status line answering a raw WebSocket upgrade on a new connection to ``port``;
    ``kept_alive``: the upgrade is that connection's second request (after a ``GET``)."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        if kept_alive:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert http_status_line(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(upgrade_request(origin))
        return http_status_line(sock)


def is_closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True once the server closes ``sock`` (anything still sent is read and ignored)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


def connections_gauge(node: NodeProcess, transport: str) -> float:
    """``roomcast_connections{transport=...}`` of the node's ``/metrics`` (0 when absent)."""
    url = f"http://{LOOPBACK}:{node.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(
        rf'^roomcast_connections\{{transport="{transport}"\}} (\S+)$', text, re.MULTILINE
    )
    return float(found.group(1)) if found else 0.0


def stalled_member(node: NodeProcess, room: str = "defaultRoom") -> tuple[socket.socket, str]:
    """A TCP member of ``room`` that will never read again (a tiny receive buffer, so the
    node's output backs up soon); returns its socket and connection id."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((LOOPBACK, node.socket_port))
    client = LineClient(node.socket_port, sock=sock, timeout=10)
    assert client.read_raw_line() == WELCOME_LINE
    connection_id = client.request("detailsView")["data"]["id"]
    assert client.request(f"roomAdd {room}")["data"] is True
    return sock, str(connection_id)


def masked_text_frame(text: str) -> bytes:
    """A client's (masked) WebSocket text frame; payloads under 126 bytes."""
    payload = text.encode()
    assert len(payload) < 126
    mask = b"\x01\x02\x03\x04"
    return (
        bytes([0x81, 0x80 | len(payload)])
        + mask
        + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    )
