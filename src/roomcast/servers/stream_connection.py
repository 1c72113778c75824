"""Connections that write to an asyncio transport, with writes coalesced per loop tick.

Everything sent to one client within one event-loop iteration leaves in a single
``transport.write`` (through the node's :class:`~roomcast.servers.outbox.Outbox`): a
member receiving many chat messages per tick costs one syscall, not one per message.
With a ``write_delay`` the connection's outbox is a
:class:`~roomcast.servers.outbox.DelayedOutbox`: the same queue is held longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

from roomcast.connection import Connection

if TYPE_CHECKING:
    from roomcast.api import Api
    from roomcast.servers.outbox import Outbox

log = logging.getLogger("roomcast.servers")

#: The kernel's send buffer of a client is this fraction of its send limit: left to grow
#: by itself it reaches megabytes per client that stopped reading, memory that slows every
#: socket of the machine when hundreds stall at once.
_KERNEL_SHARE = 4


def limit_kernel_send_buffer(server: asyncio.Server, send_limit: int) -> None:
    """Set the kernel's send buffer of every client of ``server`` to a quarter of its send
    limit.

    The option is set once, on the listening sockets: an accepted socket inherits its
    listener's buffer sizes, so a client costs no system call for it.
    """
    buffer = max(4096, send_limit // _KERNEL_SHARE)
    for sock in server.sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)


class StreamConnection(Connection):
    """A connection over an asyncio transport; subclasses define :meth:`frame`.

    A client that stops reading is dropped before what it owes (frames queued for its
    next write plus the transport's unsent bytes) would pass ``send_limit``: its unsent
    output never grows past the limit, however many members stall at once. The
    transports keep the kernel's part small too (:func:`limit_kernel_send_buffer`, set
    on the listeners).

    Every frame (replies, chat messages, pings, the close frame) goes through the same
    queue, so they leave in the order they were queued, delayed or not.
    """

    # What waits for the next flush: the first frame alone in ``_queued`` (no list to
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
        outbox: Outbox | None = None,
    ) -> None:
        """``outbox``: the one that flushes this connection (default: the node's
        per-tick ``api.outbox``)."""
        super().__init__(api, remote_ip=remote_ip, remote_port=remote_port, fingerprint=fingerprint)
        self._transport = transport
        self._send_limit = send_limit
        self._queued: Any = None
        self._more: list[Any] | None = None
        self._outbox = api.outbox if outbox is None else outbox

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
        """Write what was queued since the last flush, unless the client is behind and
        this would leave more than the send limit unsent: then drop the client (it
        stopped reading) and write nothing.

        The queue holds the shared frames themselves; only what is written is the
        client's own, so the check comes before the frames are joined or written. A
        client with nothing unsent is written to at once (the check then costs no more
        than reading the buffer size): what it can owe stays under the limit plus one
        frame.
        """
        data = self._queued
        if data is None:
            return
        self._queued = None
        if self._more is not None:
            self._flush_joined(data)
            return
        # One frame since the last flush, once per member per message: every step here
        # shows in the fanout's cost per delivery (several frames: _flush_joined).
        transport = self._transport
        if transport.is_closing():
            return
        buffered = transport.get_write_buffer_size()
        if buffered and buffered + len(data) > self._send_limit:  # behind, and too far
            self._drop_slow_consumer(buffered + len(data))
            return
        transport.write(data)

    def _flush_joined(self, data: Any) -> None:
        more, self._more = self._more, None
        assert more is not None
        transport = self._transport
        if transport.is_closing():
            return
        owed = transport.get_write_buffer_size() + len(data)
        for frame in more:
            owed += len(frame)
        if owed > self._send_limit:
            self._drop_slow_consumer(owed)
            return
        transport.write(b"".join([data, *more]))

    def _drop_slow_consumer(self, owed: int) -> None:
        """Disconnect a client that would owe ``owed`` bytes, more than its send limit."""
        transport = self._transport
        if transport.is_closing():  # dropped already (or closing): say it once
            return
        log.warning(
            "disconnecting %s (%s:%s), a slow consumer: %d bytes unsent, over its "
            "send_buffer_limit of %d",
            self.id,
            self.remote_ip,
            self.remote_port,
            owed,
            self._send_limit,
        )
        self.api.stats.slow_consumers_dropped += 1
        transport.abort()

    def close_transport(self) -> None:
        self.flush()
        self._transport.close()
