"""One client's requests, answered in the order they arrived.

The socket and WebSocket protocols share this: parsed requests wait in a short list, and
a task answers them one after another. The task exists only while there is work, so an
idle client costs no task, and reading pauses while too many requests wait.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from roomcast.connection import ConnectionRefused

if TYPE_CHECKING:
    from roomcast.api import Api
    from roomcast.connection import Connection

log = logging.getLogger("roomcast.servers")

MAX_QUEUED = 256  # requests waiting per connection before we stop reading from it


class OrderedRequests(asyncio.Protocol):
    """Base of a client protocol: ``accept`` queues a request, ``process`` answers one."""

    __slots__ = ("_paused", "_queue", "_worker")

    api: Api
    connection: Any  # the transport's Connection subclass
    _transport: asyncio.Transport | None

    def __init__(self) -> None:
        self._queue: list[tuple[int, Any]] = []  # at most MAX_QUEUED (+ one read) long
        self._paused = False
        self._worker: asyncio.Task[None] | None = None

    def register(self, connection: Connection) -> None:
        """Track the new client: at once when no create middleware must run, else in the
        worker, before any request is answered. :meth:`registered` runs after; a client
        that create middleware refuses is told why and closed, and nothing it sent is
        answered."""
        if self.api.connections.register_now(connection):
            self.registered()
        else:
            self._worker = asyncio.create_task(self._register_then_run())

    def registered(self) -> None:
        """Called once the client is registered (the transport sends its welcome here)."""

    def accept(self, count: int, request: Any) -> None:
        """Queue request number ``count``; it is answered after those before it."""
        self._queue.append((count, request))
        if len(self._queue) > MAX_QUEUED and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())

    async def process(self, count: int, request: Any) -> None:
        """Answer one request (subclasses)."""
        raise NotImplementedError

    async def _register_then_run(self) -> None:
        connection = self.connection
        try:
            await self.api.connections.register(connection)
        except ConnectionRefused as refusal:
            self._queue.clear()
            connection.refuse(str(refusal))
            return
        self.registered()
        await self._run()

    async def _run(self) -> None:
        connection = self.connection
        while self._queue and connection.open:
            count, request = self._queue.pop(0)
            try:
                await self.process(count, request)
            except Exception:
                log.exception("error answering %s", connection.id)
            if self._paused and len(self._queue) < MAX_QUEUED // 2 and self._transport:
                self._paused = False
                self._transport.resume_reading()
        self._worker = None  # an idle client keeps no finished task alive
