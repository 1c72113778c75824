"""The node: ``Api`` holds config, connections, chat rooms, actions and cluster links,
and starts and stops them in order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import time
import urllib.parse
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from roomcast.actions.builtin import BUILTIN_ACTIONS
from roomcast.actions.processor import Actions
from roomcast.auth import NodeAuth
from roomcast.chat.errors import WIRE_ERRORS
from roomcast.chat.history import history_policy
from roomcast.chat.room import ChatRoom
from roomcast.cluster import REDIS_DOWN, Cluster
from roomcast.config import Config, ConfigError, validate
from roomcast.connection import Connections
from roomcast.metrics import NodeStats, watch_loop_lag
from roomcast.servers.admission import Admission
from roomcast.servers.outbox import Outbox, outboxes_for
from roomcast.servers.tls import server_context

log = logging.getLogger("roomcast")

STATIC_DIR = Path(__file__).parent / "static"


class Api:
    """One roomcast node. ``await api.start()`` … ``await api.stop()``, or ``async with``.

    Several can run in one process: nothing here is global.
    """

    def __init__(self, config: Config | None = None, **overrides: Any) -> None:
        config = config or Config()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.id: str = config.id
        self.connections = Connections()
        self.cluster = Cluster(
            node_id=config.id,
            token=config.server_token,
            redis_url=config.redis_url,
            pubsub_url=config.pubsub_url or config.redis_url,
            key_prefix=config.cluster.key_prefix,
            rpc_timeout=config.cluster.rpc_timeout,
            presence_ttl=config.cluster.presence_ttl,
            watchdog_interval=config.cluster.watchdog_interval,
            owns_connection=self.connections.__contains__,
            errors=WIRE_ERRORS,
            redis_cluster=config.redis_cluster,
        )
        self.redis = self.cluster.store.redis
        #: Counters of this node, exposed at ``/metrics``.
        self.stats = NodeStats()
        self.chat_room = ChatRoom(
            node_id=config.id,
            server_token=config.server_token,
            starting_rooms=config.chat.starting_chat_rooms,
            connections=self.connections,
            cluster=self.cluster,
            stats=self.stats,
            limits=config.limits,
            history=history_policy(
                config.chat.history_size, config.chat.history_ttl, config.chat.history_rooms
            ),
            presence_events=config.chat.presence_events,
        )
        self.connections.leave_rooms = self.chat_room.leave_all
        #: Signed tokens and private rooms (the ``[auth]`` table).
        self.auth = NodeAuth(config.auth)
        if self.auth.checks_joins:
            self.chat_room.join_check = self.auth.check_join
        #: Connections with output queued this loop tick (see :class:`Outbox`).
        self.outbox = Outbox()
        #: The outboxes of TCP and of WebSocket clients: :attr:`outbox`, or one that holds
        #: their output for ``[socket]`` / ``[web]`` ``write_delay`` (chosen at start).
        self.socket_outbox = self.outbox
        self.web_outbox = self.outbox
        #: The connection limits every listener asks before it builds a connection.
        self.admission = Admission(config.limits)
        #: The TLS context of every listener (built at start), or None for plaintext.
        self.tls: ssl.SSLContext | None = None
        self.actions = Actions(self)
        self.public_roots: list[Path] = [Path(config.public)] if config.public else []
        self.public_roots.append(STATIC_DIR)
        self.servers: list[Any] = []
        self.started_monotonic = time.monotonic()
        self.running = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the store, load actions, create starting rooms, open the listeners.

        If any step fails, what was already started is stopped again before the error
        propagates: a node that failed to start leaves no listener or task behind.
        Raises :class:`~roomcast.config.ConfigError` for a setting it cannot start with.
        """
        for warning in validate(self.config):
            log.warning("%s", warning)
        self.socket_outbox, self.web_outbox = outboxes_for(
            self.outbox, self.config.socket.write_delay, self.config.web.write_delay
        )
        try:
            self.auth.start()  # the key file is read here, once
        except (OSError, ValueError) as error:
            raise ConfigError(f"[auth] jwt_public_key: {error}") from None
        self.started_monotonic = time.monotonic()
        if self.config.tls_cert and self.config.tls_key:
            self.tls = server_context(self.config.tls_cert, self.config.tls_key)
        try:
            await self.cluster.start()
            for action in BUILTIN_ACTIONS:
                self.actions.add(action)
            for directory in self.config.actions:
                await self.actions.load_directory(directory)
            await self.chat_room.start()
            if self.config.socket_port:
                from roomcast.servers.tcp import TcpServer

                self.servers.append(TcpServer(self))
            if self.config.web_port:
                from roomcast.servers.web import WebServer

                self.servers.append(WebServer(self))
            for server in self.servers:
                await server.start()
            self.spawn(watch_loop_lag(self._record_loop_lag))
        except BaseException:
            await self._stop_started()
            raise
        self.running = True
        chat_page = ""
        if self.web_port:
            scheme = "https" if self.tls else "http"
            chat_page = f" chat={scheme}://{self.config.bind}:{self.web_port}/chat.html"
        log.info(
            "roomcast ready %s socket=%s web=%s store=%s%s",
            self.id,
            self.socket_port or "off",
            self.web_port or "off",
            describe_store(self.config.redis_url),
            chat_page,
        )

    async def _stop_started(self) -> None:
        """Undo a start that failed halfway: close the listeners that opened, stop the rest."""
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.stop()
        self.servers.clear()
        await self._cancel_tasks()
        with contextlib.suppress(Exception):
            await self.cluster.stop()

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a task that ignores its cancellation cannot hang the stop
            await asyncio.wait(tasks, timeout=5.0)

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, let actions finish (bounded), leave every room."""
        if not self.running:
            await self.cluster.stop()
            return
        self.running = False
        log.info("roomcast %s stopping", self.id)
        for server in self.servers:
            await server.stop_accepting()
        self.actions.shutting_down = True
        deadline = time.monotonic() + self.config.shutdown_timeout
        while time.monotonic() < deadline and any(c.pending_actions for c in self.connections):
            await asyncio.sleep(0.05)
        await asyncio.gather(*(c.destroy() for c in self.connections), return_exceptions=True)
        for server in self.servers:
            await server.stop()
        await self._cancel_tasks()
        await self.cluster.stop()
        log.info("roomcast %s stopped", self.id)

    async def __aenter__(self) -> Api:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # helpers -----------------------------------------------------------------------------

    @property
    def socket_port(self) -> int | None:
        return self._port_of("TcpServer")

    @property
    def web_port(self) -> int | None:
        return self._port_of("WebServer")

    def _port_of(self, kind: str) -> int | None:
        for server in self.servers:
            if type(server).__name__ == kind:
                port: int | None = server.port
                return port
        return None

    async def health_problem(self) -> str | None:
        """Why this node cannot serve now (not ready, Redis unreachable), or None."""
        if not self.running:
            return "the node is not running (starting or stopping)"
        try:
            async with asyncio.timeout(2.0):
                await self.cluster.store.ping()
        except (*REDIS_DOWN, TimeoutError) as error:
            return f"Redis unreachable: {error or type(error).__name__}"
        if not self.cluster.bus.connected:
            return "pub/sub connection to Redis lost; reconnecting"
        return None

    def _record_loop_lag(self, lag: float) -> None:
        self.stats.loop_lag = lag

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coroutine`` in the background, keeping a reference and logging its failure."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            with contextlib.suppress(Exception):
                log.error("background task failed", exc_info=task.exception())


def describe_store(redis_url: str | None) -> str:
    """``embedded``, or the Redis URL with any password left out (for logs)."""
    if redis_url is None:
        return "embedded"
    parts = urllib.parse.urlsplit(redis_url)
    if parts.password is None:
        return redis_url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=user + host))
