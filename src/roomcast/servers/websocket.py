"""WebSocket clients on the web port, served without aiohttp's per-request machinery.

A WebSocket client stays for hours; aiohttp would keep its request, response, parser
and handler task alive all that time. Instead, the web port's protocol
(:class:`FirstRequest`) reads a connection's first request head: an upgrade to ``/ws``
is answered here and the connection switches to :class:`WebSocketProtocol`, a small
protocol object that parses frames with aiohttp's frame reader and writes pre-built
frames. Every other request, and every byte already read, is handed to aiohttp.

The path of a client's frame: ``data_received`` -> aiohttp's ``WebSocketReader`` ->
:class:`_Inbox` -> ``_on_message`` -> the ordered queue -> ``WebServer.handle_text``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import WSCloseCode, WSMsgType
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.http import HttpRequestParser
from aiohttp.http_websocket import WebSocketError

from roomcast import jsonwire
from roomcast.protocol import replies, websocket_frames, websocket_handshake
from roomcast.servers.ordered import OrderedRequests
from roomcast.servers.stream_connection import StreamConnection

if TYPE_CHECKING:
    from roomcast.api import Api
    from roomcast.servers.web import WebServer

log = logging.getLogger("roomcast.web")

SESSION_COOKIE = "sessionID"
_MAX_HEAD = 64 * 1024  # a first request head longer than this goes to aiohttp (which refuses it)
_TEXT, _BINARY, _PING, _CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.CLOSE


class WebSocketConnection(StreamConnection):
    """A WebSocket client; messages are pre-framed text frames written to its transport.

    ``ws`` is aiohttp's response when aiohttp serves the connection (a later request on
    a kept-alive connection, or permessage-deflate enabled); None when
    :class:`WebSocketProtocol` does.
    """

    __slots__ = ("_close_sent", "said_goodbye", "ws")
    type = "websocket"
    framing = "ws-text"

    def __init__(
        self,
        api: Api,
        transport: asyncio.Transport,
        remote_ip: str,
        remote_port: int,
        fingerprint: str | None,
        ws: Any = None,
    ) -> None:
        super().__init__(
            api, transport, remote_ip, remote_port, api.config.web.send_buffer_limit, fingerprint
        )
        self.ws = ws
        self.said_goodbye = False
        self._close_sent = False

    def frame(self, data: bytes) -> bytes:
        return websocket_frames.text_frame(data)

    def send_close(self, code: int, reason: str = "") -> None:
        """Write a close frame (once) and close the transport after what is queued."""
        self.flush()
        if not self._close_sent:
            self._close_sent = True
            if not self._transport.is_closing():
                self._transport.write(websocket_frames.close_frame(code, reason))
        self._transport.close()

    def close_transport(self) -> None:
        # 1001 "going away": clients reconnect; after a quit they were told "Bye!".
        code = 1000 if self.said_goodbye else 1001
        if self.ws is None:
            self.send_close(code)
            return
        self.flush()
        if not self.ws.closed:
            self.api.spawn(self.ws.close(code=code))


@functools.lru_cache(maxsize=8)
def _welcome_frame(text: str) -> bytes:
    """The welcome frame (the same for every client of a node)."""
    return websocket_frames.text_frame(jsonwire.dumps(replies.welcome(text)))


class _Inbox(WebSocketDataQueue):
    """Where aiohttp's frame reader puts each complete message: straight to the protocol."""

    __slots__ = ("on_message",)

    def __init__(self, on_message: Callable[[Any], None]) -> None:
        # No protocol or loop: messages never wait here, so it never pauses or awaits.
        super().__init__(None, 1 << 16, loop=None)  # type: ignore[arg-type]
        self.on_message = on_message

    def feed_data(self, data: Any, size: int) -> None:
        self.on_message(data)


def _check_reader() -> None:
    """Raise if aiohttp's frame reader no longer hands messages over as expected."""
    got: list[Any] = []
    reader = WebSocketReader(_Inbox(got.append), 1024, compress=False, decode_text=True)
    reader.feed_data(b"\x81\x82\x00\x00\x00\x00hi")  # "hi", masked with zeros
    if [(m.type, m.data) for m in got] != [(_TEXT, "hi")]:
        raise RuntimeError(f"unexpected WebSocket messages from aiohttp's reader: {got!r}")


_check_reader()


class WebSocketProtocol(OrderedRequests):
    """One WebSocket client after the handshake: frames in, requests answered in order."""

    __slots__ = ("_heard", "_inbox", "_reader", "_transport", "api", "connection", "server")

    def __init__(
        self,
        server: WebServer,
        transport: asyncio.Transport,
        fingerprint: str | None,
        handshake: bytes,
    ) -> None:
        super().__init__()
        self.server = server
        self.api = api = server.api
        self._transport: asyncio.Transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        self.connection = WebSocketConnection(
            api, transport, str(peer[0]), int(peer[1]), fingerprint
        )
        self._inbox = _Inbox(self._on_message)
        self._reader = WebSocketReader(
            self._inbox, api.config.web.max_message_size, compress=False, decode_text=True
        )
        self._heard = True  # a frame arrived since the last heartbeat ping
        server.remember_socket(self)  # forgotten in connection_lost
        self.connection.write_raw(handshake)  # leaves with the welcome, in one write
        self.register(self.connection)

    def registered(self) -> None:
        self.connection.write_raw(_welcome_frame(self.api.config.socket.welcome))

    # frames in ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.connection.destroyed:
            return
        self._heard = True
        failed, _ = self._reader.feed_data(data)
        if failed:
            error = self._inbox.exception()
            code = error.code if isinstance(error, WebSocketError) else 1002
            log.info("closing %s: %s", self.connection.id, error)
            self.connection.send_close(code, str(error))

    def _on_message(self, message: Any) -> None:
        if self._transport.is_closing():  # frames after a close are not answered
            return
        kind = message.type
        if kind is _TEXT or kind is _BINARY:
            self.connection.message_count += 1
            self.accept(self.connection.message_count, message)
        elif kind is _PING:
            self.connection.write_raw(websocket_frames.pong_frame(message.data))
        elif kind is _CLOSE:  # the client's closing handshake: echo its code and hang up
            code = message.data
            self.connection.send_close(
                code if isinstance(code, int) and 1000 <= code < 5000 else WSCloseCode.OK
            )  # an empty close has code 0
        # a pong only proves the client is alive, which _heard already records

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget_socket(self)
        if not self.connection.destroyed:
            self.api.spawn(self.connection.destroy())

    async def process(self, count: int, request: Any) -> None:
        connection = self.connection
        if request.type is _TEXT:
            if not await self.server.handle_text(connection, request.data, count):
                await connection.destroy()
        else:
            await connection.send_message(
                replies.request_error(
                    "binary frames are not supported: send JSON text frames", count
                )
            )

    # liveness ----------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Ping the client; close it if nothing came back since the previous ping."""
        if not self._heard:
            log.info("closing %s: no answer to a ping", self.connection.id)
            # 1006 may not appear on the wire (RFC 6455 §7.4.1): "going away" instead.
            self.connection.send_close(WSCloseCode.GOING_AWAY, "no answer to ping")
            return
        self._heard = False
        self.connection.write_raw(websocket_frames.PING)


class FirstRequest(asyncio.Protocol):
    """The web port's protocol until a connection's first request head is read.

    An upgrade to ``/ws`` switches the connection to :class:`WebSocketProtocol`; anything
    else (or a head that does not parse) is handed to aiohttp with the bytes read so far.
    """

    __slots__ = ("_parser", "_received", "_transport", "server")

    def __init__(self, server: WebServer) -> None:
        self.server = server
        self._received = b""
        self._parser: HttpRequestParser | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        received = self._received = self._received + data
        prefix = websocket_handshake.PREFIX
        if self._parser is None:
            if len(received) < len(prefix) and prefix.startswith(received):
                return  # too short to tell yet
            if not received.startswith(prefix) or self.server.api.config.web.compress:
                self._hand_to_aiohttp()  # (aiohttp negotiates permessage-deflate)
                return
            self._parser = HttpRequestParser(
                self,  # type: ignore[arg-type]
                asyncio.get_running_loop(),
                _MAX_HEAD,
                max_line_size=8190,
                max_field_size=8190,
            )
            data = received
        try:
            messages, _, tail = self._parser.feed_data(data)
        except Exception:  # a malformed head: aiohttp answers it
            self._hand_to_aiohttp()
            return
        if not messages:
            if len(received) > _MAX_HEAD:
                self._hand_to_aiohttp()
            return
        message = messages[0][0]
        path = message.path.partition("?")[0]
        response = websocket_handshake.upgrade_response(message.method, path, message.headers)
        if response is None:
            self._hand_to_aiohttp()
            return
        transport = self._transport
        assert transport is not None
        fingerprint = websocket_handshake.cookie(message.headers, SESSION_COOKIE)
        protocol = WebSocketProtocol(self.server, transport, fingerprint, response)
        transport.set_protocol(protocol)
        self._parser = None
        self._received = b""
        if tail:
            protocol.data_received(bytes(tail))

    def _hand_to_aiohttp(self) -> None:
        transport = self._transport
        assert transport is not None
        handler = self.server.aiohttp_protocol()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        received, self._received, self._parser = self._received, b"", None
        handler.data_received(received)

    def connection_lost(self, exc: Exception | None) -> None:
        self._parser = None

    # HttpRequestParser calls these on its protocol for request bodies; a GET has none.
    _reading_paused = False

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()
