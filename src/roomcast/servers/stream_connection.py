"""Connections that write to an asyncio transport, with writes coalesced per loop tick.

Everything sent to one client within one event-loop iteration leaves in a single
``transport.write``: a member receiving many chat messages per tick costs one syscall,
not one per message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from roomcast.connection import Connection

if TYPE_CHECKING:
    from roomcast.api import Api

log = logging.getLogger("roomcast.servers")


class _Outbox:
    """The connections with queued bytes, flushed together once per loop iteration."""

    __slots__ = ("_loop", "_scheduled", "_waiting")

    def __init__(self) -> None:
        self._waiting: list[StreamConnection] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, connection: StreamConnection) -> None:
        self._waiting.append(connection)
        if not self._scheduled:
            self._scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        waiting, self._waiting = self._waiting, []
        for connection in waiting:
            connection.flush()


_outboxes: dict[asyncio.AbstractEventLoop, _Outbox] = {}


def _outbox() -> _Outbox:
    loop = asyncio.get_running_loop()
    outbox = _outboxes.get(loop)
    if outbox is None:
        if len(_outboxes) > 16:  # loops of finished asyncio.run() calls
            _outboxes.clear()
        outbox = _outboxes[loop] = _Outbox()
    return outbox


class StreamConnection(Connection):
    """A connection over an asyncio transport; subclasses define :meth:`frame`."""

    __slots__ = ("_outbox", "_queued", "_send_limit", "_transport")

    def __init__(self, api: Api, transport: asyncio.Transport, remote_ip: str,
                 remote_port: int, send_limit: int, fingerprint: str | None = None) -> None:
        super().__init__(api, remote_ip=remote_ip, remote_port=remote_port,
                         fingerprint=fingerprint)
        self._transport = transport
        self._send_limit = send_limit
        self._queued: list[bytes] | None = None
        self._outbox = _outbox()

    def write_frame(self, frame: Any) -> None:
        queued = self._queued
        if queued is None:
            self._queued = [frame]
            self._outbox.add(self)
        else:
            queued.append(frame)

    write_raw = write_frame

    def flush(self) -> None:
        """Write what was queued this tick; drop the client if it stopped reading."""
        queued, self._queued = self._queued, None
        transport = self._transport
        if not queued or transport.is_closing():
            return
        transport.write(queued[0] if len(queued) == 1 else b"".join(queued))
        if transport.get_write_buffer_size() > self._send_limit:
            log.warning("disconnecting %s: %d bytes unsent (send limit %d)", self.id,
                        transport.get_write_buffer_size(), self._send_limit)
            transport.abort()

    def close_transport(self) -> None:
        self.flush()
        self._transport.close()
