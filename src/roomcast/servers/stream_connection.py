"""Connections that write to an asyncio transport, with writes coalesced per loop tick.

Everything sent to one client within one event-loop iteration leaves in a single
``transport.write`` (through the node's :class:`~roomcast.servers.outbox.Outbox`): a
member receiving many chat messages per tick costs one syscall, not one per message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from roomcast.connection import Connection

if TYPE_CHECKING:
    from roomcast.api import Api

log = logging.getLogger("roomcast.servers")


class StreamConnection(Connection):
    """A connection over an asyncio transport; subclasses define :meth:`frame`."""

    # What waits for this tick's flush: the first frame alone in ``_queued`` (no list to
    # allocate for the usual one message per member per tick), later ones in ``_more``.
    __slots__ = ("_more", "_outbox", "_queued", "_send_limit", "_transport")

    def __init__(
        self,
        api: Api,
        transport: asyncio.Transport,
        remote_ip: str,
        remote_port: int,
        send_limit: int,
        fingerprint: str | None = None,
    ) -> None:
        super().__init__(api, remote_ip=remote_ip, remote_port=remote_port, fingerprint=fingerprint)
        self._transport = transport
        self._send_limit = send_limit
        self._queued: Any = None
        self._more: list[Any] | None = None
        self._outbox = api.outbox

    def write_frame(self, frame: Any) -> None:
        if self._queued is None:
            self._queued = frame
            waiting = self._outbox.waiting  # inlined Outbox.add: this runs per member
            waiting.append(self)
            if len(waiting) == 1:
                self._outbox.schedule()
        elif self._more is None:
            self._more = [frame]
        else:
            self._more.append(frame)

    write_raw = write_frame

    def flush(self) -> None:
        """Write what was queued this tick; drop the client if it stopped reading."""
        data = self._queued
        if data is None:
            return
        self._queued = None
        if self._more is not None:
            data = b"".join([data, *self._more])
            self._more = None
        transport = self._transport
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self._send_limit:
            log.warning(
                "disconnecting %s: %d bytes unsent (send limit %d)",
                self.id,
                transport.get_write_buffer_size(),
                self._send_limit,
            )
            self.api.stats.slow_consumers_dropped += 1
            transport.abort()

    def close_transport(self) -> None:
        self.flush()
        self._transport.close()
