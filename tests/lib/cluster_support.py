"""Helpers for the cluster tests: a Redis-backed group of node processes and chat clients.

Every process is stopped by its pid (see ``support``); every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

from support import LOOPBACK, NodeProcess, RedisProcess, start_node, start_redis, wait_until

CLUSTER_TESTS = Path(__file__).parents[1] / "cluster"
ACTIONS = CLUSTER_TESTS / "actions"
REFUSING = CLUSTER_TESTS / "refusing"
TOKEN = "cluster-test-secret"
PREFIX = "roomcast:"

# Small timings so the suite is quick; the code reads them from the [cluster] table.
PRESENCE_TTL = 2.0
RPC_TIMEOUT = 1.0
WATCHDOG_INTERVAL = 0.5

CONFIG = f"""\
server_token = "{TOKEN}"

[cluster]
presence_ttl = {PRESENCE_TTL}
rpc_timeout = {RPC_TIMEOUT}
watchdog_interval = {WATCHDOG_INTERVAL}
"""


class ChatClient:
    """A TCP line-protocol client that keeps pushed messages apart from replies.

    Replies (``context: response``) answer :meth:`request`; everything else lands in
    ``inbox`` so no chat message is lost while waiting for a reply.
    """

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.timeout = timeout
        self.inbox: list[Any] = []
        #: Every message received, replies included, in arrival order.
        self.received: list[Any] = []
        self._replies: list[Any] = []
        self._buffer = b""
        self.welcome = self._next(lambda: bool(self.inbox), timeout)
        self.id: str = self.request("detailsView")["data"]["id"]

    # reading -----------------------------------------------------------------------------

    def _read_some(self, wait: float) -> bool:
        """Read what arrives within ``wait`` seconds; False when the peer closed."""
        ready, _, _ = select.select([self.sock], [], [], max(0.0, wait))
        if not ready:
            return True
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self._buffer += chunk
        while b"\r\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\r\n")
            message = json.loads(line)
            self.received.append(message)
            if isinstance(message, dict) and message.get("context") == "response":
                self._replies.append(message)
            else:
                self.inbox.append(message)
        return True

    def _next(self, ready: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not ready():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s; inbox {self.inbox!r}")
            if not self._read_some(min(left, 0.1)):
                raise ConnectionError(f"connection closed; inbox {self.inbox!r}")
        return True

    def drain(self, seconds: float) -> None:
        """Collect everything that arrives during ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self._read_some(min(left, 0.1)):
                return

    def chat(self, room: str | None = None) -> list[dict[str, Any]]:
        """Chat messages (context ``user``) received so far, optionally of one room."""
        return [
            m
            for m in self.inbox
            if isinstance(m, dict)
            and m.get("context") == "user"
            and (room is None or m.get("room") == room)
        ]

    def wait_chat(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """Wait for a chat message matching ``predicate``; return it."""
        found: list[dict[str, Any]] = []

        def matched() -> bool:
            found[:] = [m for m in self.chat() if predicate(m)]
            return bool(found)

        self._next(matched, timeout)
        return found[0]

    # requests ----------------------------------------------------------------------------

    def request(self, line: str, timeout: float | None = None) -> dict[str, Any]:
        """Send one line and return its reply."""
        self.sock.sendall(line.encode() + b"\n")
        self._next(lambda: bool(self._replies), timeout or self.timeout)
        reply: dict[str, Any] = self._replies.pop(0)
        return reply

    def send(self, line: str) -> None:
        """Send one line without waiting: :meth:`reply` reads its answer later."""
        self.sock.sendall(line.encode() + b"\n")

    def reply(self, timeout: float | None = None) -> dict[str, Any]:
        """The next reply to a line sent with :meth:`send`."""
        self._next(lambda: bool(self._replies), timeout or self.timeout)
        reply: dict[str, Any] = self._replies.pop(0)
        return reply

    def action(self, action: str, timeout: float | None = None, **params: Any) -> dict[str, Any]:
        """Call ``action`` with ``params``; returns the reply (``error`` on failure)."""
        return self.request(json.dumps({"action": action, "params": params}), timeout)

    def join(self, room: str, create: bool = True) -> None:
        """Join ``room``, creating it first unless ``create`` is False."""
        if create:
            self.action("createChatRoom", name=room)  # "room exists" is fine too
        reply = self.request(f"roomAdd {room}")
        assert reply["status"] == "OK", reply

    def leave(self, room: str) -> None:
        reply = self.request(f"roomLeave {room}")
        assert reply["status"] == "OK", reply

    def say(self, room: str, message: str) -> None:
        reply = self.request(f"say {room} {message}")
        assert reply["status"] == "OK", reply

    def rooms(self) -> list[str]:
        rooms: list[str] = self.request("detailsView")["data"]["rooms"]
        return rooms

    def quit(self) -> None:
        """Say ``quit`` and wait until the node has closed the connection."""
        self.sock.sendall(b"quit\n")
        deadline = time.monotonic() + self.timeout
        while self._read_some(0.1):
            assert time.monotonic() < deadline, "still open after quit"
        assert {"status": "Bye!", "context": "api"} in self.inbox

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass
class Cluster:
    """Nodes sharing one Redis; everything started here is stopped by :meth:`close`."""

    redis_server: RedisProcess
    config_path: Path
    pubsub_server: RedisProcess | None = None
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    clients: list[ChatClient] = field(default_factory=list)
    _restarted: list[RedisProcess] = field(default_factory=list)

    def start(
        self, node_id: str, *extra: str, refusing: bool = False, socket_port: int | None = None
    ) -> NodeProcess:
        """Start one node with the test actions (and, if asked, the refusing middleware)."""
        args = [
            "--config",
            str(self.config_path),
            "--redis-url",
            self.redis_server.url,
            "--actions",
            str(ACTIONS),
        ]
        if self.pubsub_server is not None:
            args += ["--pubsub-url", self.pubsub_server.url]
        if refusing:
            args += ["--actions", str(REFUSING)]
        node = start_node(
            *args,
            *extra,
            node_id=node_id,
            web_port=0,
            socket_port=socket_port,
            log_dir=self.config_path.parent,
        )
        self.nodes[node_id] = node
        return node

    def restart(self, node_id: str) -> NodeProcess:
        """Start a node again with its id, port and arguments of last time."""
        old = self.nodes[node_id]
        log_dir = self.config_path.parent / f"restart-{time.monotonic_ns()}"
        log_dir.mkdir()
        node = start_node(
            *old.args[old.args.index("--web-port") + 2 :],
            node_id=node_id,
            socket_port=old.socket_port,
            web_port=0,
            log_dir=log_dir,
        )
        self.nodes[node_id] = node
        return node

    def kill_redis(self) -> None:
        """SIGKILL the key-store Redis; its data is gone (it never saves)."""
        self.redis_server.stop(signal.SIGKILL)

    def restart_redis(self) -> None:
        """Start an empty Redis on the port of the killed one."""
        server = start_redis(port=self.redis_server.port)
        self._restarted.append(server)
        self.redis_server = server

    def client(self, node_id: str) -> ChatClient:
        client = ChatClient(self.nodes[node_id].socket_port)
        self.clients.append(client)
        return client

    def redis(self) -> Redis:
        """A client of the key-store Redis, for looking at what the nodes wrote."""
        return Redis(host=LOOPBACK, port=self.redis_server.port, decode_responses=True)

    def pubsub_redis(self) -> Redis:
        server = self.pubsub_server or self.redis_server
        return Redis(host=LOOPBACK, port=server.port, decode_responses=True)

    def members(self, room: str) -> set[str]:
        """Connection ids stored as members of ``room``."""
        with self.redis() as client:
            return set(client.hkeys(f"{PREFIX}members:{room}"))

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for node in self.nodes.values():
            if node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.pid, signal.SIGCONT)  # in case a test left it stopped
            node.stop(signal.SIGTERM, timeout=5)
        for server in self._restarted:
            server.stop()


class RedisProxy:
    """A TCP proxy to Redis that fails in two ways Redis itself does not.

    After :meth:`silence_subscribers`, bytes Redis sends to the connections that had
    issued SUBSCRIBE by then are dropped; their sockets stay open, and every other
    connection, including later subscribers, works. That is the "connected but deaf"
    failure the watchdog exists for. :meth:`cut` drops every connection and refuses new
    ones until :meth:`mend`: Redis is unreachable but keeps its data (a partition).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self._subscribers: list[threading.Event] = []
        self._sockets: list[socket.socket] = [self.listener]
        self._cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        for sock in self._sockets[1:]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets[1:] = []

    def mend(self) -> None:
        self._cut.clear()

    def silence_subscribers(self) -> int:
        """Make every current subscriber connection deaf; returns how many there were."""
        for silenced in self._subscribers:
            silenced.set()
        return len(self._subscribers)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection((LOOPBACK, self.target_port))
            self._sockets += [client, upstream]
            silenced = threading.Event()
            threading.Thread(
                target=self._to_redis, args=(client, upstream, silenced), daemon=True
            ).start()
            threading.Thread(
                target=self._from_redis, args=(upstream, client, silenced), daemon=True
            ).start()

    def _to_redis(
        self, source: socket.socket, sink: socket.socket, silenced: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if b"SUBSCRIBE" in chunk.upper() and silenced not in self._subscribers:
                    self._subscribers.append(silenced)
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _from_redis(
        self, source: socket.socket, sink: socket.socket, silenced: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if not silenced.is_set():  # a silenced connection hears nothing, ever
                    sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


def forge_publish(client: Redis, channel: str, data: bytes | str) -> int:
    """Publish raw bytes as if a node had; returns how many subscribers got them."""
    return int(client.publish(channel, data))


def subscriber_channels(client: Redis, node_id: str) -> int:
    """How many channels the pub/sub connection of ``node_id`` is subscribed to."""
    for entry in client.client_list():
        if entry.get("name") == f"roomcast:{node_id}" and int(entry.get("sub", 0)) > 0:
            return int(entry["sub"])
    return 0


__all__ = [
    "CONFIG",
    "PRESENCE_TTL",
    "RPC_TIMEOUT",
    "TOKEN",
    "ChatClient",
    "Cluster",
    "forge_publish",
    "subscriber_channels",
    "wait_until",
]
