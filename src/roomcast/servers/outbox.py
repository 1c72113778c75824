"""The node's outboxes: connections with bytes queued, flushed together.

:class:`Outbox` flushes at the end of the current loop iteration: everything sent to one
client within one iteration leaves in a single ``transport.write``. Each node owns one
(``api.outbox``), so nodes sharing a process or a loop never flush each other's
connections.

:class:`DelayedOutbox` (``[socket]`` / ``[web]`` ``write_delay``) holds a connection's
output for up to the delay instead: the first frame queued for a connection opens its
batch, every frame queued before the batch is written joins it. Connections whose batch
opened within the same :data:`GRAIN` share one bucket and one timer, so a message to a
thousand members starts one timer, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("roomcast.servers")

#: Connections whose batch opened within this many seconds of each other are flushed
#: together; each waits between ``delay - GRAIN`` and ``delay``, never longer.
GRAIN = 0.001


class Flushable(Protocol):
    id: str

    def flush(self) -> None: ...


class Outbox:
    """Connections to flush once the current loop iteration ends."""

    __slots__ = ("_loop", "waiting")

    def __init__(self) -> None:
        #: Connections to flush; the flush is scheduled exactly while this is non-empty.
        #: A connection appends itself when its first frame of a batch is queued.
        self.waiting: list[Flushable] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def schedule(self) -> None:
        """Flush :attr:`waiting` in the next loop iteration (call once it stops being empty)."""
        loop = self._loop
        if loop is None:  # bound on first use: a node is built before its loop runs
            loop = self._loop = asyncio.get_running_loop()
        loop.call_soon(self.flush)

    def flush(self) -> None:
        waiting, self.waiting = self.waiting, []
        _flush_each(waiting)


class DelayedOutbox(Outbox):
    """Connections whose output is held for up to ``delay`` seconds, then flushed together.

    :attr:`waiting` is the open bucket: connections whose batch opened less than
    :data:`GRAIN` ago. Its first connection schedules two timers: one that closes the
    bucket (later connections open the next one) and one, ``delay`` after it opened,
    that flushes it. A connection flushed early (it is closing) is flushed again as a
    no-op when its bucket is due; :meth:`flush` flushes the open bucket at once.
    """

    __slots__ = ("_grain", "delay")

    def __init__(self, delay: float) -> None:
        """``delay``: seconds, more than 0."""
        super().__init__()
        #: The longest a queued frame waits, in seconds.
        self.delay = delay
        self._grain = min(GRAIN, delay / 2)

    def schedule(self) -> None:
        """Open a bucket with :attr:`waiting` (call once it stops being empty)."""
        loop = self._loop
        if loop is None:  # bound on first use: a node is built before its loop runs
            loop = self._loop = asyncio.get_running_loop()
        bucket = self.waiting
        opened = loop.time()
        loop.call_at(opened + self._grain, self._close, bucket)
        loop.call_at(opened + self.delay, self._flush_bucket, bucket)

    def _close(self, bucket: list[Flushable]) -> None:
        if self.waiting is bucket:
            self.waiting = []

    def _flush_bucket(self, bucket: list[Flushable]) -> None:
        self._close(bucket)  # both timers may be due in the same iteration, in either order
        _flush_each(bucket)


def _flush_each(connections: list[Flushable]) -> None:
    for connection in connections:
        try:
            connection.flush()
        except Exception:  # one broken connection must not leave the others unflushed
            log.exception("flushing %s failed", connection.id)


def outboxes_for(tick: Outbox, *delays_ms: float) -> list[Outbox]:
    """The outbox for each write delay (in milliseconds): ``tick`` for 0, otherwise a
    :class:`DelayedOutbox`, one per distinct delay (listeners with the same delay share
    its timers)."""
    made: dict[float, Outbox] = {0: tick}
    for delay in delays_ms:
        if delay not in made:
            made[delay] = DelayedOutbox(delay / 1000)
    return [made[delay] for delay in delays_ms]
