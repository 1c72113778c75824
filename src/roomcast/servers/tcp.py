"""The TCP socket server: ActionHero's line protocol over plain TCP or TLS.

This module only moves bytes: :mod:`roomcast.protocol.socket_lines` cuts and parses lines,
:mod:`roomcast.dispatch` answers them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, cast

from roomcast import jsonwire
from roomcast.dispatch import PublicFileNotFound, answer, read_public_file
from roomcast.protocol import replies
from roomcast.protocol.requests import ActionRequest, FileRequest, QuitRequest
from roomcast.protocol.socket_lines import (
    Interrupt,
    Line,
    LineEvent,
    LineSplitter,
    NotUtf8,
    TooLong,
    parse_line,
)
from roomcast.servers.ordered import LARGE_READ, MAX_QUEUED, OrderedRequests
from roomcast.servers.stream_connection import StreamConnection, limit_kernel_send_buffer

if TYPE_CHECKING:
    from roomcast.api import Api

log = logging.getLogger("roomcast.tcp")

_GOODBYE = jsonwire.dumps(replies.GOODBYE) + b"\r\n"
#: Bytes of one read cut into lines at a time. A read of many small pipelined lines is
#: parsed a slice at a time as the client's worker catches up, never all in one callback.
PARSE_SLICE = 4096
_BUSY = jsonwire.dumps(replies.refused(replies.BUSY)) + b"\r\n"
#: The idle sweep runs this many times per idle_timeout: a silent client is closed
#: after between idle_timeout and 1.25 x idle_timeout.
_IDLE_STEPS = 4
#: Idle clients closed per loop iteration.
_CLOSES_PER_TICK = 16


def _line_end(data: bytes, start: int) -> int:
    """Just past the first ``\\n`` or ``\\r`` at or after ``start``, or the length of
    ``data`` when there is none: two memchr scans, no copy."""
    newline = data.find(b"\n", start)
    stop = len(data) if newline < 0 else newline
    ret = data.find(b"\r", start, stop)
    if ret >= 0:
        return ret + 1
    return len(data) if newline < 0 else newline + 1


@functools.lru_cache(maxsize=8)
def _welcome_line(text: str) -> bytes:
    """The encoded welcome line (the same for every client of a node)."""
    return jsonwire.dumps(replies.welcome(text)) + b"\r\n"


class SocketConnection(StreamConnection):
    """A TCP client; messages are JSON lines ending in ``\\r\\n``."""

    __slots__ = ()
    type = "socket"
    framing = "line"

    def __init__(
        self, api: Api, transport: asyncio.Transport, remote_ip: str, remote_port: int
    ) -> None:
        super().__init__(
            api,
            transport,
            remote_ip,
            remote_port,
            api.config.socket.send_buffer_limit,
            outbox=api.socket_outbox,
        )

    def frame(self, data: bytes) -> bytes:
        return data + b"\r\n"

    def goodbye(self) -> None:
        self.write_raw(_GOODBYE)


class SocketProtocol(OrderedRequests):
    """One TCP client: feeds bytes to a :class:`LineSplitter` and answers lines in order.

    Verbs are answered one after another (so ``roomAdd`` then ``say`` in one write works);
    actions run concurrently, each reply tagged with the messageCount of its request.
    """

    # Slots and a plain list keep an idle client to a few hundred bytes of Python objects.
    __slots__ = (
        "_parsed_to",
        "_splitter",
        "_transport",
        "_unparsed",
        "_watched",
        "api",
        "connection",
        "silent_steps",
    )

    def __init__(self, api: Api, watched: set[SocketProtocol] | None = None) -> None:
        """``watched``: the set the server's idle sweep walks (None: no idle timeout)."""
        super().__init__()
        self.api = api
        self.connection: SocketConnection | None = None
        self._splitter = LineSplitter(api.config.socket.max_data_length)
        self._transport: asyncio.Transport | None = None
        self._unparsed: bytes | None = None  # a read parsed as we go, from _parsed_to on
        self._parsed_to = 0
        self._watched = watched
        #: Idle sweeps since the client last sent a byte.
        self.silent_steps = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        remote_ip = str(peer[0])
        refusal = self.api.admission.refusal(remote_ip)
        if refusal is not None:  # before any connection, id or store write exists
            log.debug("refused %s:%s: %s", remote_ip, peer[1], refusal)
            transport.write(_BUSY)
            transport.close()
            return
        connection = SocketConnection(self.api, transport, remote_ip, int(peer[1]))
        self.connection = connection
        if self._watched is not None:
            self._watched.add(self)
        self.register(connection)

    def registered(self) -> None:
        assert self.connection is not None
        self.connection.write_raw(_welcome_line(self.api.config.socket.welcome))

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection is None or connection.destroyed:
            return
        self.silent_steps = 0
        unparsed = self._unparsed
        if unparsed is None and len(data) <= PARSE_SLICE:
            self._parse(data)
            return
        if len(data) > LARGE_READ:
            self.large_read()
        if unparsed is not None:  # read before the pause took effect: keep the order
            self._unparsed = unparsed[self._parsed_to :] + data
        else:
            self._unparsed = data
        self._parsed_to = 0
        self.refill()

    def backlogged(self) -> bool:
        return self._unparsed is not None

    def refill(self) -> None:
        """Parse slices of the unparsed bytes until enough requests wait or none is left;
        reading stays paused while some are left."""
        data = self._unparsed
        if data is None:
            return
        at, size = self._parsed_to, len(data)
        while at < size and len(self._queue) < MAX_QUEUED:
            # A slice of short lines, or the whole of a long one (to its end, or to the
            # end of the read): a megabyte line costs a few splitter calls, not hundreds.
            end = at + PARSE_SLICE
            if end < size and data.find(b"\n", at, end) < 0 and data.find(b"\r", at, end) < 0:
                end = _line_end(data, end)
            self._parse(data[at:end])
            at = end
        if at < size:
            self._parsed_to = at
            self.pause_reading()
        else:
            self._unparsed = None

    def _parse(self, data: bytes) -> None:
        connection = self.connection
        assert connection is not None
        for event in self._splitter.feed(data):
            connection.message_count += 1
            self.accept(connection.message_count, event)

    def connection_lost(self, exc: Exception | None) -> None:
        connection = self.connection
        if connection is None:  # refused: nothing was counted or built
            return
        self.api.admission.release(connection.remote_ip)
        if self._watched is not None:
            self._watched.discard(self)
        if not connection.destroyed:
            self.api.spawn(connection.destroy())

    def idle_step(self) -> bool:
        """Count one step of the idle sweep; True once the client has been silent for the
        whole idle_timeout (the caller then calls :meth:`close_idle`)."""
        self.silent_steps += 1
        return self.silent_steps > _IDLE_STEPS

    def close_idle(self, timeout: float) -> None:
        """Close a client that sent nothing for ``timeout`` seconds."""
        connection = self.connection
        if self._watched is not None:
            self._watched.discard(self)  # closing: the next sweeps leave it alone
        if connection is not None and not connection.destroyed:
            log.info("closing %s: no byte received for %g s (idle_timeout)", connection.id, timeout)
            self.api.spawn(connection.destroy())

    async def process(self, count: int, request: LineEvent) -> None:
        assert self.connection is not None
        await self._handle(self.connection, count, request)

    async def _handle(self, connection: SocketConnection, count: int, event: LineEvent) -> None:
        if isinstance(event, Interrupt):
            await connection.destroy()
            return
        if isinstance(event, TooLong):
            error = replies.too_long_error(event.received, event.limit)
            await connection.send_message(replies.request_error(error, count))
            return
        if isinstance(event, NotUtf8):
            await connection.send_message(
                replies.request_error("request is not valid UTF-8", count)
            )
            return
        assert isinstance(event, Line)
        request = parse_line(event.text)
        if request is None:
            return
        if isinstance(request, QuitRequest):
            await connection.settle(self.api.config.shutdown_timeout)  # answer what was asked
            await connection.destroy()
        elif isinstance(request, FileRequest):
            self._send_file(connection, request.path)
        elif isinstance(request, ActionRequest):
            connection.run_in_background(self._answer_action(connection, request, count))
        else:
            await connection.send_message(await answer(connection, request, count))

    async def _answer_action(
        self, connection: SocketConnection, request: ActionRequest, count: int
    ) -> None:
        await connection.send_message(await answer(connection, request, count))

    def _send_file(self, connection: SocketConnection, path: str) -> None:
        try:
            content, _ = read_public_file(self.api, path)
        except PublicFileNotFound:
            connection.write_raw(jsonwire.dumps(replies.file_not_found(path)) + b"\r\n")
            return
        connection.write_raw(content)


class TcpServer:
    """Listens for socket clients (TLS when a certificate and key are configured)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._server: asyncio.Server | None = None
        self.port: int | None = None
        idle_timeout = api.config.limits.idle_timeout
        #: Every client, for the idle sweep (None when idle_timeout is off).
        self._watched: set[SocketProtocol] | None = set() if idle_timeout else None
        self._idle_sweep: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = self.api.config
        context = self.api.tls
        loop = asyncio.get_running_loop()
        watched = self._watched
        self._server = await loop.create_server(
            lambda: SocketProtocol(self.api, watched),
            config.bind,
            config.socket_port,
            ssl=context,
            backlog=4096,
            reuse_port=config.workers > 1,  # workers share the port; the kernel spreads clients
            # only given with TLS (asyncio refuses it without); None: the default 60 s
            ssl_handshake_timeout=(config.limits.handshake_timeout or None) if context else None,
        )
        limit_kernel_send_buffer(self._server, config.socket.send_buffer_limit)
        self.port = self._server.sockets[0].getsockname()[1]
        if watched is not None:
            self._idle_sweep = asyncio.create_task(
                self._close_idle_clients(watched, config.limits.idle_timeout)
            )
        log.info(
            "socket server listening on %s:%s%s",
            config.bind,
            self.port,
            " (TLS)" if context else "",
        )

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _close_idle_clients(self, watched: set[SocketProtocol], timeout: float) -> None:
        """One timer for every client (no timer per connection): each step counts one
        more silent step for every client and closes those silent for ``timeout``."""
        while True:
            await asyncio.sleep(timeout / _IDLE_STEPS)
            idle = [protocol for protocol in watched if protocol.idle_step()]
            for index, protocol in enumerate(idle):
                if index and not index % _CLOSES_PER_TICK:
                    await asyncio.sleep(0)  # thousands closed at once would stall the loop
                protocol.close_idle(timeout)

    async def stop(self) -> None:
        if self._idle_sweep is not None:
            self._idle_sweep.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
