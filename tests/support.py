"""Helpers for end-to-end tests: free ports, roomcast node processes, a private redis-server.

Every process started here is stopped by its pid; every wait is a poll with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@dataclass
class NodeProcess:
    """A ``roomcast start`` process; ``log`` holds everything it printed."""

    process: subprocess.Popen[bytes]
    node_id: str
    socket_port: int
    web_port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.process.pid

    def logged(self, text: str, times: int = 1) -> Callable[[], bool]:
        """A predicate for :func:`wait_until`: has the node printed ``text`` ``times`` times?"""
        return lambda: self.log.count(text) >= times

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for exit; returns the exit code (kills after ``timeout``)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        return int(self.process.returncode)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def start_node(
    *extra: str,
    node_id: str | None = None,
    socket_port: int | None = None,
    web_port: int | None = None,
    env: dict[str, str] | None = None,
    ready_timeout: float = 20.0,
    log_dir: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> NodeProcess:
    """Start ``python -m roomcast start`` on free ports and wait for its ready line.

    ``preexec_fn`` runs in the child before roomcast starts (to lower a resource limit).
    """
    socket_port = free_port() if socket_port is None else socket_port
    web_port = free_port() if web_port is None else web_port
    node_id = node_id or f"node-{socket_port}"
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="roomcast-test-"))
    log_path = log_dir / f"{node_id}.log"
    args = [
        sys.executable,
        "-m",
        "roomcast",
        "start",
        "--id",
        node_id,
        "--bind",
        LOOPBACK,
        "--socket-port",
        str(socket_port),
        "--web-port",
        str(web_port),
        *extra,
    ]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
    full_env.update(env or {})
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
    node = NodeProcess(process, node_id, socket_port, web_port, log_path, args)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"node {node_id} exited early:\n{node.log}")
        return "roomcast ready" in node.log

    try:
        wait_until(ready, ready_timeout, message=f"node {node_id} ready")
    except BaseException:
        node.kill()
        raise
    return node


@dataclass
class RedisProcess:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)
            self.process.wait(10)


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def start_redis(port: int | None = None, directory: Path | None = None) -> RedisProcess:
    """Start a private, disk-less redis-server on a free loopback port."""
    binary = redis_server_path()
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port() if port is None else port
    directory = directory or Path(tempfile.mkdtemp(prefix="roomcast-redis-"))
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = RedisProcess(process, port, directory)
    try:
        wait_until(server.ping, 10, message=f"redis-server on {port}")
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running_node(*extra: str, **kwargs: Any) -> Iterator[NodeProcess]:
    node = start_node(*extra, **kwargs)
    try:
        yield node
    finally:
        node.stop()


class LineClient:
    """A blocking TCP client for the socket protocol: send lines, read JSON lines."""

    def __init__(
        self,
        port: int,
        host: str = LOOPBACK,
        timeout: float = 5.0,
        sock: socket.socket | None = None,
    ) -> None:
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self._buffer = b""

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def send_line(self, line: str) -> None:
        self.send(line + "\n")

    def read_raw_line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; unread {self._buffer!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def read(self) -> Any:
        import json

        return json.loads(self.read_raw_line())

    def read_until(self, predicate: Callable[[Any], bool], limit: int = 200) -> Any:
        """Read messages until one satisfies ``predicate`` (at most ``limit`` messages)."""
        for _ in range(limit):
            message = self.read()
            if predicate(message):
                return message
        raise AssertionError("no matching message")

    def request(self, line: str) -> Any:
        """Send a line and return the next ``context: response`` message."""
        self.send_line(line)
        return self.read_until(lambda m: isinstance(m, dict) and m.get("context") == "response")

    def is_closed(self, timeout: float = 3.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self._buffer += chunk
        except (TimeoutError, OSError):
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def health(port: int) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a node's ``/health``."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/health", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
