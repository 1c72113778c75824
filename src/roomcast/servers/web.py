"""The web server (aiohttp): WebSocket clients at ``/ws``, actions at ``/api/<action>``,
static files at ``/``.

aiohttp serves HTTP: fast (C parsers), maintained, one port for everything. WebSocket
clients are roomcast's own (:mod:`roomcast.servers.websocket`, around the sans-I/O
protocol of :mod:`roomcast.protocol.websocket`), whether they upgrade on a connection's
first request or on a later one. This module moves bytes; parsing and answering live in
:mod:`roomcast.protocol` and :mod:`roomcast.dispatch`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from roomcast import jsonwire
from roomcast.actions.errors import ActionError, TooManyPending
from roomcast.connection import Connection, ConnectionRefused
from roomcast.dispatch import PublicFileNotFound, answer, read_public_file
from roomcast.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from roomcast.metrics import exposition, registry_for
from roomcast.protocol import replies
from roomcast.protocol.forwarded import HEADER as FORWARDED_FOR
from roomcast.protocol.forwarded import client_address
from roomcast.protocol.origins import OriginPolicy
from roomcast.protocol.requests import ActionRequest, FileRequest, QuitRequest
from roomcast.protocol.websocket_events import parse_event
from roomcast.protocol.websocket_handshake import ORIGIN_REFUSED
from roomcast.servers.stream_connection import limit_kernel_send_buffer
from roomcast.servers.websocket import (
    SESSION_COOKIE,
    FirstRequest,
    WebSocketConnection,
    WebSocketProtocol,
    serve_upgrade,
)

if TYPE_CHECKING:
    from roomcast.api import Api

log = logging.getLogger("roomcast.web")

_API_KEY: web.AppKey[Any] = web.AppKey("roomcast_api")
#: HTTP action calls one node runs at once; more are answered 429 at once, so a flood of
#: calls cannot pile up work (each HTTP call is a connection of its own, so the
#: per-connection ``simultaneous_actions`` cannot bound them).
MAX_HTTP_ACTIONS = 64
#: How long an idle kept-alive HTTP connection stays open when handshake_timeout is off.
_KEEPALIVE_TIMEOUT = 75.0
#: Seconds between two log lines about connections closed for a slow request head.
_SLOW_HEADS_LOG_INTERVAL = 10.0
#: Slow connections closed per loop iteration: thousands at once would stall the loop.
_CLOSES_PER_TICK = 16


class WebConnection(Connection):
    """One HTTP request running an action; it cannot chat."""

    type = "web"
    can_chat = False

    def write_frame(self, frame: Any) -> None:  # HTTP answers once, with the response
        pass


class WebServer:
    """HTTP and WebSocket on one port."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._sockets: set[WebSocketProtocol] = set()  # served by servers.websocket
        self._heartbeat: asyncio.Task[None] | None = None
        self._metrics: CollectorRegistry | None = None
        self._http_actions = 0  # HTTP action calls running now, at most MAX_HTTP_ACTIONS
        #: Which browser origins may open a WebSocket or call the port.
        self.origins = OriginPolicy(api.config.web.allowed_origins)
        # Connections still sending their first request head, oldest first, with the loop
        # time they connected (None: handshake_timeout is off).
        self._heads: dict[FirstRequest, float] | None = (
            {} if api.config.limits.handshake_timeout else None
        )
        self._head_sweep: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def build_app(self) -> web.Application:
        middlewares: list[Any] = [_session_cookie]
        if self.origins.restricted:
            middlewares.insert(0, self._origin_check)
        app = web.Application(
            middlewares=middlewares, client_max_size=self.api.config.web.max_message_size
        )
        app[_API_KEY] = self.api
        app.router.add_get("/ws", self.websocket)
        for path in ("/api/{action}", "/api/", "/api"):  # no name: "unknown action", as JSON
            app.router.add_route("GET", path, self.action)
            app.router.add_route("POST", path, self.action)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/health", self.health)
        app.router.add_get("/", self.index)
        app.router.add_get("/{path:.+}", self.static)
        return app

    async def start(self) -> None:
        config = self.api.config
        handshake_timeout = config.limits.handshake_timeout
        self._runner = web.AppRunner(
            self.build_app(),
            access_log=None,
            handle_signals=False,
            # A kept-alive connection waiting for its next request is bounded like a new one.
            keepalive_timeout=handshake_timeout or _KEEPALIVE_TIMEOUT,
        )
        await self._runner.setup()
        loop = self._loop = asyncio.get_running_loop()
        context = self.api.tls
        self._server = await loop.create_server(
            lambda: FirstRequest(self),
            config.bind,
            config.web_port,
            ssl=context,
            backlog=4096,
            reuse_port=config.workers > 1,  # workers share the port; the kernel spreads clients
            # only given with TLS (asyncio refuses it without); None: the default 60 s
            ssl_handshake_timeout=(handshake_timeout or None) if context else None,
        )
        # WebSocket clients' kernel buffers are capped like TCP clients' (HTTP ones too:
        # the listener is shared, and a quarter of the send limit is plenty for a reply).
        limit_kernel_send_buffer(self._server, config.web.send_buffer_limit)
        self.port = int(self._server.sockets[0].getsockname()[1])
        if config.web.heartbeat:
            self._heartbeat = asyncio.create_task(self._ping_forever(config.web.heartbeat))
        if self._heads is not None:
            self._head_sweep = asyncio.create_task(
                self._close_slow_heads(self._heads, handshake_timeout)
            )
        scheme, ws = ("https", "wss") if context else ("http", "ws")
        log.info(
            "web server listening on %s://%s:%s (WebSocket at %s://…/ws)",
            scheme,
            config.bind,
            self.port,
            ws,
        )

    def aiohttp_protocol(self) -> asyncio.Protocol:
        """A new aiohttp request handler, for a connection :class:`FirstRequest` hands over."""
        assert self._runner is not None and self._runner.server is not None
        return self._runner.server()

    def waiting_for_head(self, protocol: FirstRequest) -> None:
        """Start the handshake timeout of a new connection (until :meth:`head_received`)."""
        if self._heads is not None and self._loop is not None:
            self._heads[protocol] = self._loop.time()

    def head_received(self, protocol: FirstRequest) -> None:
        """Stop the handshake timeout of a connection (its head came, or it is gone)."""
        if self._heads is not None:
            self._heads.pop(protocol, None)

    async def _close_slow_heads(self, heads: dict[FirstRequest, float], timeout: float) -> None:
        """One timer for every new connection (no timer per connection): close those whose
        first request head has not arrived ``timeout`` seconds after they connected."""
        loop = asyncio.get_running_loop()
        step = min(1.0, timeout / 4)
        closed = 0
        logged_at = time.monotonic()
        while True:
            await asyncio.sleep(step)
            cutoff = loop.time() - timeout
            late: list[FirstRequest] = []
            for protocol, since in heads.items():  # oldest first: stop at the first in time
                if since > cutoff:
                    break
                late.append(protocol)
            for index, protocol in enumerate(late):
                if index and not index % _CLOSES_PER_TICK:
                    await asyncio.sleep(0)  # let other clients in between batches
                if heads.pop(protocol, None) is not None:
                    protocol.too_slow()
            closed += len(late)
            now = time.monotonic()
            if closed and now - logged_at >= _SLOW_HEADS_LOG_INTERVAL:
                log.info(
                    "closed %d connections that sent no complete request head within %g s "
                    "(handshake_timeout)",
                    closed,
                    timeout,
                )
                closed, logged_at = 0, now

    def remember_socket(self, protocol: WebSocketProtocol) -> None:
        self._sockets.add(protocol)

    def forget_socket(self, protocol: WebSocketProtocol) -> None:
        self._sockets.discard(protocol)

    async def _ping_forever(self, interval: float) -> None:
        """One timer pings every WebSocket client (no timer per connection)."""
        while True:
            await asyncio.sleep(interval)
            for protocol in list(self._sockets):
                protocol.heartbeat()

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._head_sweep is not None:
            self._head_sweep.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    # WebSocket ---------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """``/ws`` requested after another request on a kept-alive connection: served by
        the same WebSocket protocol as a first-request upgrade."""
        return await serve_upgrade(self, request)

    async def handle_text(self, connection: WebSocketConnection, text: str, count: int) -> bool:
        """Answer one frame; False when the client asked to quit."""
        request, message_id = parse_event(text)
        if isinstance(request, QuitRequest):
            await connection.settle(self.api.config.shutdown_timeout)  # answer what was asked
            await connection.send_message(replies.GOODBYE)
            connection.said_goodbye = True
            return False
        if isinstance(request, FileRequest):
            await connection.send_message(self._file_reply(request.path, count, message_id))
        elif isinstance(request, ActionRequest):
            connection.run_in_background(self._answer(connection, request, count, message_id))
        else:
            await connection.send_message(await answer(connection, request, count, message_id))
        return True

    async def _answer(
        self, connection: Connection, request: ActionRequest, count: int, message_id: Any
    ) -> None:
        await connection.send_message(await answer(connection, request, count, message_id))

    def _file_reply(self, path: str, count: int, message_id: Any) -> dict[str, Any]:
        try:
            content, mime = read_public_file(self.api, path)
        except PublicFileNotFound:
            reply: dict[str, Any] = {"error": replies.file_not_found(path)}
        else:
            reply = {
                "content": content.decode("utf-8", errors="replace"),
                "mime": mime,
                "length": len(content),
            }
        return replies.action_reply(reply, count, message_id)

    # HTTP --------------------------------------------------------------------------------

    @web.middleware
    async def _origin_check(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """403 for a browser request from an origin not in ``allowed_origins`` (a request
        without an ``Origin`` header does not come from a page and is let through)."""
        if not self.origins.allows(request.headers.get("Origin")):
            return _json({"error": ORIGIN_REFUSED}, 403)
        response: web.StreamResponse = await handler(request)
        return response

    async def action(self, request: web.Request) -> web.Response:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json(loads=jsonwire.loads)
                except ValueError:
                    return _json({"error": "the request body is not valid JSON"}, 400)
                if not isinstance(body, dict):
                    return _json({"error": "the JSON body must be an object"}, 400)
                params.update(body)
            else:
                params.update(dict(await request.post()))
        # Counted from here: a client slow to send its body holds no place meanwhile.
        if self._http_actions >= MAX_HTTP_ACTIONS:
            return _json({"error": str(TooManyPending())}, TooManyPending.status)
        self._http_actions += 1
        try:
            return await self._run_action(request, params)
        finally:
            self._http_actions -= 1

    async def _run_action(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        connection = WebConnection(
            self.api,
            remote_ip=client_address(
                str(peer[0]) if peer else "",
                request.headers.getall(FORWARDED_FOR, ()),
                self.api.config.web.trusted_proxies,
            ),
            remote_port=int(peer[1]) if peer else 0,
            fingerprint=request.cookies.get(SESSION_COOKIE),
        )
        try:
            await self.api.connections.register(connection)
        except ConnectionRefused as refusal:
            return _json({"error": str(refusal)}, 403)
        try:
            data = await self.api.actions.run_or_raise(
                connection, request.match_info.get("action", ""), params
            )
        except ActionError as error:
            return _json({"error": str(error)}, error.status)
        except Exception as error:
            return _json({"error": str(error) or type(error).__name__}, 400)
        finally:
            await connection.destroy()
        return _json(data.response, 200)

    async def metrics(self, request: web.Request) -> web.Response:
        """The node's metrics in the Prometheus text format."""
        if self._metrics is None:
            self._metrics = registry_for(self.api)
        return web.Response(
            body=exposition(self._metrics), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    async def health(self, request: web.Request) -> web.Response:
        """200 ``{"status": "ok"}`` when the node is ready and its Redis answers, else 503
        with the reason."""
        problem = await self.api.health_problem()
        if problem is None:
            return _json({"status": "ok"}, 200)
        return _json({"status": "unavailable", "reason": problem}, 503)

    async def index(self, request: web.Request) -> web.StreamResponse:
        try:
            return self._file_response("index.html")
        except PublicFileNotFound:
            raise web.HTTPFound("/chat.html") from None

    async def static(self, request: web.Request) -> web.StreamResponse:
        try:
            return self._file_response(request.match_info["path"])
        except PublicFileNotFound:
            return web.Response(status=404, text=replies.file_not_found(request.match_info["path"]))

    def _file_response(self, path: str) -> web.Response:
        content, mime = read_public_file(self.api, path)
        charset = "utf-8" if mime.startswith("text/") or mime.endswith("javascript") else None
        return web.Response(body=content, content_type=mime, charset=charset)


@web.middleware
async def _session_cookie(request: web.Request, handler: Any) -> web.StreamResponse:
    """Give every browser a ``sessionID`` cookie on its first visit (the fingerprint)."""
    response: web.StreamResponse = await handler(request)
    if SESSION_COOKIE not in request.cookies and not response.prepared:
        response.set_cookie(SESSION_COOKIE, str(uuid.uuid4()), httponly=True, samesite="Lax")
    return response


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(body=jsonwire.dumps(body), status=status, content_type="application/json")
