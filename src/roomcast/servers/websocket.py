"""WebSocket clients on the web port: the asyncio layer around the sans-I/O protocol.

A WebSocket client stays for hours, so it costs as little as it can: one
:class:`WebSocketProtocol` (bytes in, requests answered in order) around one
:class:`~roomcast.protocol.websocket.ServerProtocol` (the frames), one
:class:`WebSocketConnection` (pre-built frames out), and no task while it is idle.

Two ways in, one path after the handshake:

- the connection's first request (:class:`FirstRequest` reads its head): an upgrade
  to ``/ws`` is answered here, and the transport switches to :class:`WebSocketProtocol`;
  any other request, with every byte read so far, goes to aiohttp;
- a later request on a kept-alive connection reaches aiohttp's ``/ws`` route, which
  calls :func:`serve_upgrade`: aiohttp writes the 101 and then feeds every byte it
  reads to the same :class:`WebSocketProtocol`.

The path of a client's frame: ``data_received`` -> ``ServerProtocol.receive_data`` ->
its events -> the ordered queue -> ``WebServer.handle_text``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.http import HttpRequestParser

from roomcast import jsonwire
from roomcast.auth import INVALID_TOKEN, token_in_query
from roomcast.chat.room import DISPLAY_NAME_MAX
from roomcast.protocol import replies, websocket_frames, websocket_handshake
from roomcast.protocol.forwarded import HEADER as FORWARDED_FOR
from roomcast.protocol.forwarded import client_address
from roomcast.protocol.websocket import (
    OPEN,
    BinaryMessage,
    CloseCode,
    ServerProtocol,
    TextMessage,
)
from roomcast.protocol.websocket_handshake import DeflateParameters
from roomcast.servers.ordered import LARGE_READ, OrderedRequests
from roomcast.servers.stream_connection import StreamConnection

if TYPE_CHECKING:
    from roomcast.api import Api
    from roomcast.servers.web import WebServer

log = logging.getLogger("roomcast.web")

SESSION_COOKIE = "sessionID"
_MAX_HEAD = 64 * 1024  # a first request head longer than this goes to aiohttp (which refuses it)
_BINARY_REFUSED = "binary frames are not supported: send JSON text frames"
# One framing name per window size (interned once): members sharing it share a frame.
_DEFLATE_FRAMINGS = {bits: f"ws-deflate-{bits}" for bits in range(9, 16)}


class WebSocketConnection(StreamConnection):
    """A WebSocket client; messages are pre-framed text frames written to its transport."""

    __slots__ = ("_protocol", "said_goodbye")
    type = "websocket"
    framing = "ws-text"
    window_bits = 0  # messages go out uncompressed

    def __init__(
        self,
        api: Api,
        protocol: WebSocketProtocol,
        transport: asyncio.Transport,
        remote_ip: str,
        remote_port: int,
        fingerprint: str | None,
    ) -> None:
        super().__init__(
            api,
            transport,
            remote_ip,
            remote_port,
            api.config.web.send_buffer_limit,
            fingerprint,
            api.web_outbox,
        )
        self._protocol = protocol
        self.said_goodbye = False

    def frame(self, data: bytes) -> bytes:
        return websocket_frames.text_frame(data)

    def close_transport(self) -> None:
        # 1001 "going away": clients reconnect; after a quit they were told "Bye!".
        self._protocol.close(CloseCode.NORMAL if self.said_goodbye else CloseCode.GOING_AWAY)

    def refuse(self, reason: str) -> None:
        # 1008 "policy violation": refused on purpose, so a client should not just retry.
        self.write_frame(self.frame(jsonwire.dumps(replies.refused(reason))))
        self._protocol.close(CloseCode.POLICY_VIOLATION, reason)


class DeflateWebSocketConnection(WebSocketConnection):
    """A client that agreed on permessage-deflate: every message goes out compressed.

    The server compresses each message on its own, so the frame depends only on the
    message and the window size: ``framing`` names that size, and members sharing it
    share one compressed frame per message.
    """

    __slots__ = ("framing", "window_bits")

    def __init__(
        self,
        api: Api,
        protocol: WebSocketProtocol,
        transport: asyncio.Transport,
        remote_ip: str,
        remote_port: int,
        fingerprint: str | None,
        window_bits: int,
    ) -> None:
        super().__init__(api, protocol, transport, remote_ip, remote_port, fingerprint)
        self.window_bits = window_bits
        self.framing = _DEFLATE_FRAMINGS[window_bits]

    def frame(self, data: bytes) -> bytes:
        return websocket_frames.deflate_text_frame(data, self.window_bits)


@functools.lru_cache(maxsize=16)
def _welcome_frame(text: str, window_bits: int) -> bytes:
    """The welcome frame (the same for every client of a node with that compression)."""
    data = jsonwire.dumps(replies.welcome(text))
    if window_bits:
        return websocket_frames.deflate_text_frame(data, window_bits)
    return websocket_frames.text_frame(data)


class WebSocketProtocol(OrderedRequests):
    """One WebSocket client after the handshake: frames in, requests answered in order.

    It is the transport's protocol after a first-request upgrade; after a later one,
    aiohttp's request handler stays the transport's protocol and passes it every byte
    (:func:`serve_upgrade`). Either way its transport is written to directly.
    """

    __slots__ = ("_counted", "_heard", "_transport", "api", "connection", "server", "websocket")

    def __init__(
        self,
        server: WebServer,
        transport: asyncio.Transport,
        fingerprint: str | None,
        deflate: DeflateParameters | None,
        handshake: bytes = b"",
        forwarded_for: Sequence[str] = (),
        token: str | None = None,
        name: str | None = None,
    ) -> None:
        """Take over a client whose upgrade was accepted and admitted (counted by
        ``api.admission``, released here when the connection is lost); ``handshake``
        (the 101, when the caller has not written it) leaves together with the welcome;
        ``forwarded_for`` holds the upgrade's ``X-Forwarded-For`` values. ``token`` (the
        URL's ``?token=``) is checked first: a bad one is refused with 1008. ``name`` (the
        URL's ``?name=``) is the client's display name, kept as its ``name`` param."""
        super().__init__()
        self.server = server
        self.api = api = server.api
        self._transport: asyncio.Transport = transport
        self.websocket = ServerProtocol(api.config.web.max_message_size, deflate)
        peer = transport.get_extra_info("peername") or ("", 0)
        remote_port = int(peer[1])
        remote_ip = client_address(str(peer[0]), forwarded_for, api.config.web.trusted_proxies)
        self.connection: WebSocketConnection = (
            WebSocketConnection(api, self, transport, remote_ip, remote_port, fingerprint)
            if deflate is None
            else DeflateWebSocketConnection(
                api,
                self,
                transport,
                remote_ip,
                remote_port,
                fingerprint,
                deflate.server_max_window_bits,
            )
        )
        if name:
            self.connection.params["name"] = name[:DISPLAY_NAME_MAX]
        self._heard = True  # a frame arrived since the last heartbeat ping
        self._counted = True  # by the admission, until the connection is lost
        server.remember_socket(self)  # forgotten in connection_lost
        if handshake:
            self.connection.write_raw(handshake)  # leaves with the welcome, in one write
        # A token on the URL: a bad one refuses the client (told why, closed with 1008).
        if token is not None and not api.auth.authenticate_on_connect(self.connection, token):
            api.connections.refuse(self.connection, INVALID_TOKEN)
            return
        self.register(self.connection)

    def registered(self) -> None:
        connection = self.connection
        connection.write_raw(_welcome_frame(self.api.config.socket.welcome, connection.window_bits))

    # frames in ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection.destroyed:
            return
        self._heard = True
        if len(data) > LARGE_READ:
            self.large_read()
        websocket = self.websocket
        websocket.receive_data(data)
        for event in websocket.events_received():
            if type(event) is TextMessage or type(event) is BinaryMessage:
                connection.message_count += 1
                self.accept(connection.message_count, event)
            # the pong to a ping is in data_to_send; a pong only proves the client is
            # alive, which _heard records; a close leaves the state not OPEN
        if websocket.state is OPEN:
            output = websocket.data_to_send()
            if output:
                connection.write_raw(output)
            return
        if websocket.close_rcvd is None and websocket.close_sent is not None:
            log.info("closing %s: %s", connection.id, websocket.close_sent.reason)
        self._send_and_close()

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame (unless one was sent or received), then close the transport
        once what is queued for the client has been written."""
        self.websocket.send_close(code, reason)
        self._send_and_close()

    def _send_and_close(self) -> None:
        output = self.websocket.data_to_send()
        connection = self.connection
        if output:
            connection.write_raw(output)
        connection.flush()  # frames still queued, then the close frame, in one write
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.websocket.receive_eof()
        self.server.forget_socket(self)
        if self._counted:
            self._counted = False
            self.api.admission.release(self.connection.remote_ip)
        if not self.connection.destroyed:
            self.api.spawn(self.connection.destroy())

    async def process(self, count: int, request: Any) -> None:
        connection = self.connection
        if type(request) is TextMessage:
            if not await self.server.handle_text(connection, request.text, count):
                await connection.destroy()
        else:
            await connection.send_message(replies.request_error(_BINARY_REFUSED, count))

    # liveness ----------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Ping the client; close it if nothing came back since the previous ping."""
        if self.websocket.state is not OPEN:
            return
        if not self._heard:
            log.info("closing %s: no answer to a ping", self.connection.id)
            # 1006 may not appear on the wire: "going away" instead.
            self.close(CloseCode.GOING_AWAY, "no answer to ping")
            return
        self._heard = False
        self.connection.write_raw(websocket_frames.PING)


class _UpgradedRequest:
    """What aiohttp's request handler feeds the bytes after an upgrade it answered."""

    __slots__ = ("_protocol", "finished")

    def __init__(self, protocol: WebSocketProtocol, finished: asyncio.Future[None]) -> None:
        self._protocol = protocol
        self.finished = finished

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._protocol.data_received(data)
        return False, b""  # never "end of payload": the connection is the client's

    def feed_eof(self) -> None:
        self._protocol.connection_lost(None)
        if not self.finished.done():
            self.finished.set_result(None)


async def serve_upgrade(server: WebServer, request: web.Request) -> web.StreamResponse:
    """Serve ``/ws`` requested on a kept-alive connection, until the client is gone.

    aiohttp writes the 101 (roomcast's handshake headers); every later byte goes to a
    :class:`WebSocketProtocol`. A request that is no valid upgrade gets a 400, one from
    an origin not allowed a 403, one the node cannot admit a 503.
    """
    upgrade = websocket_handshake.accept_upgrade(
        request.method, request.path, request.headers, compress=server.api.config.web.compress
    )
    if upgrade is None:
        return web.Response(status=400, text="not a valid WebSocket upgrade")
    transport = request.transport
    if transport is None:  # the client left before its request was answered
        return web.Response(status=400)
    if not server.origins.allows(request.headers.get("Origin")):
        return _refused(403, websocket_handshake.ORIGIN_REFUSED)
    peer = transport.get_extra_info("peername") or ("", 0)
    refusal = server.api.admission.refusal(str(peer[0]))
    if refusal is not None:  # before any connection, id or store write exists
        log.debug("refused the upgrade of %s:%s: %s", peer[0], peer[1], refusal)
        return _refused(503, replies.BUSY)
    response = web.StreamResponse(status=101, headers=upgrade.headers())
    response.force_close()
    await response.prepare(request)
    protocol = WebSocketProtocol(
        server,
        transport,
        request.cookies.get(SESSION_COOKIE),
        upgrade.deflate,
        forwarded_for=request.headers.getall(FORWARDED_FOR, ()),
        token=request.query.get("token"),
        name=request.query.get("name"),
    )
    reader = _UpgradedRequest(protocol, asyncio.get_running_loop().create_future())
    # set_parser is typed for aiohttp's own reader; it calls only feed_data and feed_eof.
    request.protocol.set_parser(reader)  # type: ignore[arg-type]
    request.protocol.keep_alive(False)
    try:
        await reader.finished
    finally:
        if protocol.websocket.state is OPEN:  # cancelled: the node is stopping
            protocol.close(CloseCode.GOING_AWAY)
    return response


def _refused(status: int, text: str) -> web.Response:
    response = web.Response(status=status, text=text)
    response.force_close()
    return response


def _head_ended(received: bytearray, start: int) -> bool:
    """Whether the blank line ending a request head is in ``received`` (new bytes from
    ``start``; the scan starts a little before, where the blank line may begin)."""
    start = max(0, start - 3)
    return received.find(b"\r\n\r\n", start) >= 0 or received.find(b"\n\n", start) >= 0


class FirstRequest(asyncio.Protocol):
    """The web port's protocol until a connection's first request head is read.

    An upgrade to ``/ws`` switches the connection to :class:`WebSocketProtocol`; anything
    else (or a head that does not parse) is handed to aiohttp with the bytes read so far,
    once its head is complete. A connection whose head does not arrive within the
    handshake timeout is closed by the server's sweep (:meth:`too_slow`).
    """

    __slots__ = ("_done", "_parser", "_received", "_transport", "server")

    def __init__(self, server: WebServer) -> None:
        self.server = server
        self._received = bytearray()
        self._parser: HttpRequestParser | None = None
        self._transport: asyncio.Transport | None = None
        self._done = False  # refused, timed out, or handed on: read nothing more

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = self._transport = cast(asyncio.Transport, transport)
        refusal = self.server.api.admission.http_refusal()
        if refusal is not None:
            self._close(websocket_handshake.refusal(503, replies.BUSY))
            return
        self.server.waiting_for_head(self)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        received = self._received
        start = len(received)
        received += data
        prefix = websocket_handshake.PREFIX
        if self._parser is None:
            if len(received) < len(prefix) and prefix.startswith(received):
                return  # too short to tell yet
            if not received.startswith(prefix):
                # aiohttp gets the request once its head is whole (or too long to be one).
                if _head_ended(received, start) or len(received) > _MAX_HEAD:
                    self._hand_to_aiohttp()
                return
            self._parser = HttpRequestParser(
                self,  # type: ignore[arg-type]
                asyncio.get_running_loop(),
                _MAX_HEAD,
                max_line_size=8190,
                max_field_size=8190,
            )
            data = bytes(received)
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
        path, _, query = message.path.partition("?")
        server = self.server
        upgrade = websocket_handshake.accept_upgrade(
            message.method, path, message.headers, compress=server.api.config.web.compress
        )
        if upgrade is None:
            self._hand_to_aiohttp()
            return
        if not server.origins.allows(message.headers.get("Origin")):
            self._close(websocket_handshake.refusal(403, websocket_handshake.ORIGIN_REFUSED))
            return
        transport = self._transport
        assert transport is not None
        peer = transport.get_extra_info("peername") or ("", 0)
        refusal = server.api.admission.refusal(str(peer[0]))
        if refusal is not None:  # before any connection, id or store write exists
            log.debug("refused the upgrade of %s:%s: %s", peer[0], peer[1], refusal)
            self._close(websocket_handshake.refusal(503, replies.BUSY))
            return
        self._finish()
        fingerprint = websocket_handshake.cookie(message.headers, SESSION_COOKIE)
        protocol = WebSocketProtocol(
            server,
            transport,
            fingerprint,
            upgrade.deflate,
            upgrade.response(),
            message.headers.getall(FORWARDED_FOR, ()),
            token_in_query(query) if query else None,
            websocket_handshake.query_value(query, "name") if query else None,
        )
        transport.set_protocol(protocol)
        if tail:
            protocol.data_received(bytes(tail))

    def too_slow(self) -> None:
        """Close the connection: its first request head did not come in time (the
        server's sweep calls this, having already forgotten it)."""
        if not self._done:
            self._close(websocket_handshake.refusal(408, websocket_handshake.TOO_SLOW))

    def _close(self, response: bytes) -> None:
        self._finish()
        transport = self._transport
        assert transport is not None
        transport.write(response)
        transport.close()

    def _finish(self) -> bytearray:
        """Stop reading as the first request: forget the deadline, return what was read."""
        self._done = True
        self.server.head_received(self)
        received, self._received, self._parser = self._received, bytearray(), None
        return received

    def _hand_to_aiohttp(self) -> None:
        transport = self._transport
        assert transport is not None
        received = self._finish()
        handler = self.server.aiohttp_protocol()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(bytes(received))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done:
            self._finish()

    # HttpRequestParser calls these on its protocol for request bodies; a GET has none.
    _reading_paused = False

    def pause_reading(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()
