"""The node's outbox: connections with bytes queued this loop tick, flushed together.

Everything sent to one client within one event-loop iteration leaves in a single
``transport.write``. Each node owns one outbox (``api.outbox``), so nodes sharing a
process or a loop never flush each other's connections.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("roomcast.servers")


class Flushable(Protocol):
    id: str

    def flush(self) -> None: ...


class Outbox:
    """Connections to flush once the current loop iteration ends."""

    __slots__ = ("_loop", "waiting")

    def __init__(self) -> None:
        #: Connections to flush; the flush is scheduled exactly while this is non-empty.
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
        for connection in waiting:
            try:
                connection.flush()
            except Exception:  # one broken connection must not leave the others unflushed
                log.exception("flushing %s failed", connection.id)
