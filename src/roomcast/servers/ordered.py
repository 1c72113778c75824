"""One client's requests, answered in the order they arrived.

The socket and WebSocket protocols share this: parsed requests wait in a short list, and
a task answers them one after another. The task exists only while there is work, so an
idle client costs no task, and reading pauses while too many requests wait. A client with
many requests queued hands the event loop back every ``TIME_SLICE`` seconds, so other
clients are served while it is, and one that sends faster than it is answered gets one
large read per loop iteration (:meth:`OrderedRequests.large_read`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from roomcast.connection import ConnectionRefused

if TYPE_CHECKING:
    from roomcast.api import Api
    from roomcast.connection import Connection

log = logging.getLogger("roomcast.servers")

MAX_QUEUED = 256  # requests waiting per connection before we stop reading from it
#: Seconds one client's worker may run its queued requests before it lets others run.
TIME_SLICE = 0.002
#: Bytes of a read that counts as large (see :meth:`OrderedRequests.large_read`).
LARGE_READ = 4096


class OrderedRequests(asyncio.Protocol):
    """Base of a client protocol: ``accept`` queues a request, ``process`` answers one."""

    __slots__ = ("_burst_paused", "_bursting", "_paused", "_queue", "_worker")

    api: Api
    connection: Any  # the transport's Connection subclass
    _transport: asyncio.Transport | None

    def __init__(self) -> None:
        self._queue: list[tuple[int, Any]] = []  # at most MAX_QUEUED (+ one read) long
        self._paused = False
        self._worker: asyncio.Task[None] | None = None
        self._bursting = False  # a large read was taken in this loop iteration
        self._burst_paused = False

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
        if len(self._queue) > MAX_QUEUED:
            self.pause_reading()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())

    def pause_reading(self) -> None:
        """Stop reading from the client until the worker has caught up."""
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def large_read(self) -> None:
        """Count a read of more than ``LARGE_READ`` bytes (call it before parsing one).

        The first of a loop iteration goes ahead; a second pauses reading until the
        iteration's other callbacks have run. uvloop reads a socket up to 32 times in one
        callback, so a client with megabytes in flight would otherwise be read (and its
        lines cut and decoded) for tens of milliseconds while every other client waits.
        Small reads, all an interactive client makes, never come here.
        """
        if not self._bursting:
            self._bursting = True
            asyncio.get_running_loop().call_soon(self._end_burst)
        elif not self._burst_paused and self._transport is not None:
            self._burst_paused = True
            self._transport.pause_reading()

    def _end_burst(self) -> None:
        self._bursting = False
        if self._burst_paused:
            self._burst_paused = False
            if not self._paused and self._transport is not None:
                self._transport.resume_reading()

    def backlogged(self) -> bool:
        """Whether bytes already read wait to be parsed (subclasses that parse lazily)."""
        return False

    def refill(self) -> None:
        """Parse some of the bytes :meth:`backlogged` reports, accepting their requests."""

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
        queue = self._queue
        clock = time.perf_counter
        slice_start = clock()
        # Answered requests stay at the head of ``queue`` until the slice ends and are
        # dropped together: popping the head one by one would cost O(n) each.
        done = 0
        try:
            while done < len(queue) and connection.open:
                count, request = queue[done]
                done += 1
                try:
                    await self.process(count, request)
                except Exception:
                    log.exception("error answering %s", connection.id)
                waiting = len(queue) - done
                if not waiting and self.backlogged():
                    del queue[:done]
                    done = 0
                    self.refill()
                    waiting = len(queue)
                if self._paused and waiting < MAX_QUEUED // 2 and not self.backlogged():
                    self._paused = False
                    if self._transport is not None and not self._burst_paused:
                        self._transport.resume_reading()
                # Requests that never await I/O (a say on the embedded store) would
                # otherwise hold the loop for the whole queue; one request alone pays
                # nothing here.
                if waiting and clock() - slice_start > TIME_SLICE:
                    del queue[:done]
                    done = 0
                    await asyncio.sleep(0)
                    slice_start = clock()
        finally:
            del queue[:done]
        self._worker = None  # an idle client keeps no finished task alive
