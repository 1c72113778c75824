"""roomcast as an ASGI 3 application: ``/ws`` (the WebSocket protocol) and ``/api/<action>``.

``app = roomcast.asgi.app(config)`` serves, under any ASGI server (uvicorn, hypercorn…):

- ``/ws``: roomcast's WebSocket protocol, the one of the web port's ``/ws`` (welcome,
  events, replies, chat messages, requests answered in order, ``quit``), with
  ``?token=<jwt>`` on the URL as there;
- ``/api/<action>``: ``GET`` (query) or ``POST`` (JSON or urlencoded form) → the action's
  JSON response, ``error`` with a 4xx/5xx status on failure.

The node it runs is an :class:`~roomcast.api.Api` built from ``config``. Its own listeners
stay as configured: set ``socket_port = 0`` and ``web_port = 0`` to serve only through
the ASGI server. Run as the top-level application, the ASGI lifespan starts and stops
the node. Mounted in another application (Starlette's ``Mount`` sends it no lifespan),
it starts the node on its first request or connection; the parent may instead call
``await app.start()`` / ``await app.stop()`` from its own lifespan.

Paths are matched after the mount point (``scope["root_path"]``), so
``Mount("/realtime", app)`` serves ``/realtime/ws`` and ``/realtime/api/<action>``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from roomcast import jsonwire
from roomcast.actions.errors import ActionError
from roomcast.api import Api
from roomcast.auth import INVALID_TOKEN, token_in_query
from roomcast.config import Config
from roomcast.connection import Connection, ConnectionRefused
from roomcast.dispatch import PublicFileNotFound, answer, read_public_file
from roomcast.protocol import replies
from roomcast.protocol.requests import ActionRequest, FileRequest, QuitRequest
from roomcast.protocol.websocket import CloseCode
from roomcast.protocol.websocket_events import parse_event

__all__ = ["AsgiApp", "AsgiWebSocketConnection", "app"]

log = logging.getLogger("roomcast.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SESSION_COOKIE = "sessionID"
_BINARY_REFUSED = "binary frames are not supported: send JSON text frames"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_CLOSE = object()  # the sender's queue marker: send the close frame, then stop


def app(config: Config | None = None, **overrides: Any) -> AsgiApp:
    """An ASGI application running a roomcast node built from ``config`` (and
    ``overrides``, as for :class:`~roomcast.api.Api`). Serve it, or mount it; see
    :class:`AsgiApp` for starting and stopping the node."""
    return AsgiApp(config, **overrides)


class AsgiWebSocketConnection(Connection):
    """A WebSocket client served through ASGI.

    A chat message is decoded to text once per message (``frame``, shared by every member
    with this framing) and queued; one sender task per client hands the queue to the ASGI
    server, so the fan-out never waits on a client. A client that lets more than
    ``[web] send_buffer_limit`` characters queue up is a slow consumer: it is dropped.
    """

    __slots__ = (
        "_close_code",
        "_close_reason",
        "_closing",
        "_limit",
        "_queue",
        "_queued",
        "_send",
        "_sender",
        "_waiter",
        "said_goodbye",
    )
    type = "websocket"
    framing = "asgi-text"

    def __init__(
        self,
        api: Api,
        send: Send,
        remote_ip: str,
        remote_port: int,
        fingerprint: str | None,
    ) -> None:
        super().__init__(api, remote_ip=remote_ip, remote_port=remote_port, fingerprint=fingerprint)
        self._send = send
        self._limit = api.config.web.send_buffer_limit
        self._queue: collections.deque[Any] = collections.deque()
        self._queued = 0  # characters in _queue
        self._waiter: asyncio.Future[None] | None = None
        self._closing = False
        self._close_code: int | None = None
        self._close_reason = ""
        self.said_goodbye = False
        self._sender = asyncio.ensure_future(self._send_queued())

    def frame(self, data: bytes) -> str:
        return data.decode()

    def write_frame(self, frame: Any) -> None:
        if self._closing:
            return
        self._queue.append(frame)
        self._queued += len(frame)
        if self._queued > self._limit:
            self._drop_slow_consumer()
            return
        waiter = self._waiter
        if waiter is not None:  # the sender sleeps: wake it (once per batch, not per frame)
            self._waiter = None
            waiter.set_result(None)

    def close_with(self, code: int, reason: str = "") -> None:
        """Close with ``code`` once what is queued has been sent (nothing is queued after)."""
        if self._closing:
            return
        self._closing = True
        self._close_code = code
        self._close_reason = reason
        self._queue.append(_CLOSE)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result(None)

    def close_transport(self) -> None:
        # 1001 "going away": clients reconnect; after a quit they were told "Bye!".
        self.close_with(CloseCode.NORMAL if self.said_goodbye else CloseCode.GOING_AWAY)

    def refuse(self, reason: str) -> None:
        # 1008 "policy violation": refused on purpose, so a client should not just retry.
        self.write_frame(self.frame(jsonwire.dumps(replies.refused(reason))))
        self.close_with(CloseCode.POLICY_VIOLATION, reason)

    def _drop_slow_consumer(self) -> None:
        log.warning(
            "disconnecting %s: %d characters unsent (send limit %d)",
            self.id,
            self._queued,
            self._limit,
        )
        self.api.stats.slow_consumers_dropped += 1
        self._queue.clear()
        self._queued = 0
        self.close_with(CloseCode.GOING_AWAY, "too slow to read")
        if not self.destroyed:
            self.api.spawn(self.destroy())

    async def sent(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the close frame went out; then stop sending."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._sender), timeout)
        self._sender.cancel()

    async def _send_queued(self) -> None:
        queue = self._queue
        send = self._send
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not queue:
                    waiter = self._waiter = loop.create_future()
                    await waiter
                    continue
                item = queue.popleft()
                if item is _CLOSE:
                    await send(
                        {
                            "type": "websocket.close",
                            "code": self._close_code,
                            "reason": self._close_reason,
                        }
                    )
                    return
                self._queued -= len(item)
                await send({"type": "websocket.send", "text": item})
        except Exception as error:  # the client is gone: nothing more can reach it
            log.debug("sending to %s stopped: %r", self.id, error)
            self._closing = True
            queue.clear()


class AsgiHttpConnection(Connection):
    """One HTTP request running an action; it cannot chat."""

    type = "web"
    can_chat = False

    def write_frame(self, frame: Any) -> None:  # HTTP answers once, with the response
        pass


class AsgiApp:
    """The ASGI application (``roomcast.asgi.app(config)``) and the node it runs.

    ``api`` is the running node (None until started): a view of the parent application
    can use it, e.g. ``await realtime.api.chat_room.broadcast({}, room, message)``.
    """

    def __init__(self, config: Config | None = None, **overrides: Any) -> None:
        config = config or Config()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.api: Api | None = None
        self._lock = asyncio.Lock()

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Api:
        """Start the node unless it runs already; return it.

        Safe to call concurrently and more than once: the node starts once. Raises what
        :meth:`Api.start` raises (a :class:`~roomcast.config.ConfigError` for a bad
        setting, an ``OSError`` for a listener that cannot bind).
        """
        api = self.api
        if api is not None and api.running:
            return api
        async with self._lock:
            if self.api is None or not self.api.running:
                api = Api(self.config)
                await api.start()
                self.api = api
            return self.api

    async def stop(self) -> None:
        """Stop the node gracefully (its clients are told and closed); a later request
        or :meth:`start` starts a new one."""
        async with self._lock:
            api, self.api = self.api, None
            if api is not None:
                await api.stop()

    # ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        try:
            api = await self.start()
        except Exception as error:
            log.exception("roomcast could not start")
            if kind == "http":
                await _respond(send, 503, {"error": f"roomcast could not start: {error}"})
            elif kind == "websocket":
                await send({"type": "websocket.close", "code": 1011})
            return
        path = _route_path(scope)
        if kind == "websocket":
            if path == "/ws":
                await _serve_websocket(api, scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
        elif kind == "http":
            if path == "/api" or path.startswith("/api/"):
                await _serve_action(api, scope, receive, send, path[5:])
            else:
                await _respond(send, 404, {"error": "not found"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as error:
                    log.exception("roomcast could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.stop()
                except Exception as error:
                    log.exception("roomcast did not stop cleanly")
                    await send({"type": "lifespan.shutdown.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return


def _route_path(scope: Scope) -> str:
    """The request path below the mount point (``root_path``), as Starlette routes it."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def _peer(scope: Scope) -> tuple[str, int]:
    client = scope.get("client")
    if not client:
        return "", 0
    return str(client[0]), int(client[1])


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _session_cookie(scope: Scope) -> str | None:
    cookies = _header(scope, b"cookie")
    if not cookies:
        return None
    for part in cookies.split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value:
            return value
    return None


# WebSocket -------------------------------------------------------------------------------


async def _serve_websocket(api: Api, scope: Scope, receive: Receive, send: Send) -> None:
    """One WebSocket client, from its connect to its disconnect."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    remote_ip, remote_port = _peer(scope)
    connection = AsgiWebSocketConnection(api, send, remote_ip, remote_port, _session_cookie(scope))
    timeout = api.config.shutdown_timeout
    try:
        token = token_in_query(scope.get("query_string", b""))
        if token is not None and not api.auth.authenticate_on_connect(connection, token):
            api.connections.refuse(connection, INVALID_TOKEN)
            return
        if not api.connections.register_now(connection):
            try:
                await api.connections.register(connection)
            except ConnectionRefused as refusal:
                connection.refuse(str(refusal))
                return
        connection.write_frame(_welcome(api.config.socket.welcome))
        await _answer_until_gone(api, connection, receive)
    finally:
        if not connection.destroyed:
            await connection.destroy()
        connection.close_transport()  # when not closing yet (a refusal closed it already)
        await connection.sent(timeout)


async def _answer_until_gone(
    api: Api, connection: AsgiWebSocketConnection, receive: Receive
) -> None:
    """Answer the client's messages in order until it leaves or quits."""
    limit = api.config.web.max_message_size
    while connection.open:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            return
        if kind != "websocket.receive":
            continue
        connection.message_count += 1
        count = connection.message_count
        text = message.get("text")
        if text is None:
            await connection.send_message(replies.request_error(_BINARY_REFUSED, count))
            continue
        # len() counts characters: only a long message needs encoding to count its bytes.
        if len(text) * 4 > limit and len(text.encode()) > limit:
            connection.close_with(CloseCode.TOO_BIG, f"a message is at most {limit} bytes")
            await connection.destroy()
            return
        if not await _answer_text(api, connection, text, count):
            await connection.destroy()
            return


async def _answer_text(
    api: Api, connection: AsgiWebSocketConnection, text: str, count: int
) -> bool:
    """Answer one message; False when the client asked to quit."""
    request, message_id = parse_event(text)
    if isinstance(request, QuitRequest):
        await connection.settle(api.config.shutdown_timeout)  # answer what was asked
        await connection.send_message(replies.GOODBYE)
        connection.said_goodbye = True
        return False
    if isinstance(request, FileRequest):
        await connection.send_message(_file_reply(api, request.path, count, message_id))
    elif isinstance(request, ActionRequest):
        connection.run_in_background(_answer_action(connection, request, count, message_id))
    else:
        await connection.send_message(await answer(connection, request, count, message_id))
    return True


async def _answer_action(
    connection: Connection, request: ActionRequest, count: int, message_id: Any
) -> None:
    await connection.send_message(await answer(connection, request, count, message_id))


def _file_reply(api: Api, path: str, count: int, message_id: Any) -> dict[str, Any]:
    try:
        content, mime = read_public_file(api, path)
    except PublicFileNotFound:
        reply: dict[str, Any] = {"error": replies.file_not_found(path)}
    else:
        reply = {
            "content": content.decode("utf-8", errors="replace"),
            "mime": mime,
            "length": len(content),
        }
    return replies.action_reply(reply, count, message_id)


@functools.lru_cache(maxsize=8)
def _welcome(text: str) -> str:
    """The welcome message (encoded once per text, as every client gets the same)."""
    return jsonwire.dumps(replies.welcome(text)).decode()


# HTTP ------------------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


async def _serve_action(api: Api, scope: Scope, receive: Receive, send: Send, name: str) -> None:
    """``GET|POST /api/<name>``: run the action, answer its response as JSON."""
    if scope.get("method") not in ("GET", "POST"):
        await _respond(send, 405, {"error": "use GET or POST"})
        return
    params: dict[str, Any] = dict(
        parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    )
    if scope["method"] == "POST":
        limit = api.config.web.max_message_size
        try:
            body = await _read_body(receive, limit)
        except _BodyTooLarge:
            await _respond(send, 413, {"error": f"the request body is over {limit} bytes"})
            return
        content_type = (_header(scope, b"content-type") or "").partition(";")[0].strip().lower()
        if body and content_type == "application/json":
            try:
                value = jsonwire.loads(body)
            except ValueError:
                await _respond(send, 400, {"error": "the request body is not valid JSON"})
                return
            if not isinstance(value, dict):
                await _respond(send, 400, {"error": "the JSON body must be an object"})
                return
            params.update(value)
        elif body and content_type == "application/x-www-form-urlencoded":
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        elif body:
            error = "send the params as JSON or as a urlencoded form"
            await _respond(send, 415, {"error": error})
            return
    remote_ip, remote_port = _peer(scope)
    connection = AsgiHttpConnection(
        api, remote_ip=remote_ip, remote_port=remote_port, fingerprint=_session_cookie(scope)
    )
    try:
        await api.connections.register(connection)
    except ConnectionRefused as refusal:
        await _respond(send, 403, {"error": str(refusal)})
        return
    try:
        data = await api.actions.run_or_raise(connection, name, params)
    except ActionError as error:
        status, response = error.status, {"error": str(error)}
    except Exception as error:
        status, response = 400, {"error": str(error) or type(error).__name__}
    else:
        status, response = 200, data.response
    finally:
        await connection.destroy()
    await _respond(send, status, response)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Send, status: int, body: dict[str, Any]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": jsonwire.dumps(body)})
