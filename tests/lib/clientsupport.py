"""Helpers for the client tests: nodes with history, the history probe, scripted servers.

Tests that need the server's history, recovery and presence events are marked
``needs_history``; :func:`needs_history_gate` (autouse, import it into the test module)
skips them, with the reason, when a probe node does not answer ``roomAdd <room> <since>
<epoch>`` with a ``recovered`` field.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from roomcast import jsonwire
from support import LOOPBACK, LineClient, NodeProcess, start_node

HISTORY_SETTINGS = "[chat]\nhistory_size = 100\npresence_events = true\n"


@functools.cache
def history_config() -> Path:
    """A TOML config turning on history (every room) and presence events."""
    path = Path(tempfile.mkdtemp(prefix="roomcast-history-")) / "history.toml"
    path.write_text(HISTORY_SETTINGS)
    return path


def start_history_node(*extra: str, **kwargs: Any) -> NodeProcess:
    """A node keeping history in every room and sending presence events."""
    return start_node("--config", str(history_config()), *extra, **kwargs)


@functools.cache
def history_probe() -> str | None:
    """None when the server keeps history and recovers on join; else why not."""
    try:
        node = start_history_node()
    except AssertionError as error:
        last = str(error).strip().splitlines()[-1:] or [""]
        return f"a node with [chat] history_size and presence_events does not start ({last[0]})"
    client: LineClient | None = None
    try:
        client = LineClient(node.socket_port)
        client.read()  # the welcome
        reply = client.request("roomAdd defaultRoom 0 probe-epoch")
        data = reply.get("data") if isinstance(reply, dict) else None
        if not (isinstance(data, dict) and "recovered" in data):
            return f"roomAdd with since and epoch answered {reply!r}, without a recovered field"
        return None
    finally:
        if client is not None:
            client.close()
        node.stop()


@pytest.fixture(autouse=True)
def needs_history_gate(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("needs_history") is None:
        return
    reason = history_probe()
    if reason is not None:
        pytest.skip(f"needs the server's history and recovery: {reason}")


# A scripted server -------------------------------------------------------------------------


class ScriptedPeer:
    """One connection to :class:`ScriptedServer`, from the server's side."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.count = 0  # lines received, numbered like the real server numbers them

    async def send(self, message: dict[str, Any]) -> None:
        self.writer.write(jsonwire.dumps(message) + b"\r\n")
        await self.writer.drain()

    async def line(self, timeout: float = 5.0) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        if not raw:
            raise ConnectionError("the client closed the connection")
        self.count += 1
        return raw.decode().strip()

    async def reply(self, data: Any = True, status: str = "OK") -> None:
        await self.send(
            {"status": status, "context": "response", "data": data, "messageCount": self.count}
        )

    def close(self) -> None:
        self.writer.close()


Script = Callable[[ScriptedPeer, int], Awaitable[None]]


class ScriptedServer:
    """A loopback TCP server playing the server's side of the line protocol from a script.

    ``script(peer, index)`` runs for each connection (index 0, 1, …); the connection is
    closed when it returns. Failures inside a script are kept in ``errors``.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.errors: list[BaseException] = []
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        peer = ScriptedPeer(reader, writer)
        try:
            await self.script(peer, index)
        except Exception as error:
            self.errors.append(error)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, script: Script) -> AsyncIterator[ScriptedServer]:
        server = cls(script)
        server._server = await asyncio.start_server(server._serve, LOOPBACK, 0)
        try:
            yield server
        finally:
            server._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server._server.wait_closed(), 5)


class ScriptedWebSocketPeer:
    """One WebSocket connection to :class:`ScriptedWebSocketServer`, from the server's side."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(jsonwire.dumps(message).decode())

    async def requests(self) -> AsyncIterator[dict[str, Any]]:
        """Each request the client sends, until it quits or the connection ends."""
        async for frame in self.ws:
            if frame.type is not WSMsgType.TEXT:
                continue
            request = jsonwire.loads(frame.data)
            if request.get("event") == "quit":
                return
            yield request

    async def reply(self, request: dict[str, Any], data: Any = True) -> None:
        await self.send(
            {
                "status": "OK",
                "context": "response",
                "data": data,
                "messageId": request.get("messageId"),
            }
        )


WebSocketScript = Callable[[ScriptedWebSocketPeer, int], Awaitable[None]]


class ScriptedWebSocketServer:
    """A loopback WebSocket server at ``/ws`` playing the server's side from a script.

    ``script(peer, index)`` runs for each connection (index 0, 1, …); the connection is
    closed (code 1001, as a node going away) when it returns. ``files`` maps URL paths to
    files served as they are (the chat page and roomcast.js).
    """

    def __init__(self, script: WebSocketScript) -> None:
        self.script = script
        self.errors: list[BaseException] = []
        self.connections = 0
        self.port = 0

    async def _serve(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        index = self.connections
        self.connections += 1
        try:
            await self.script(ScriptedWebSocketPeer(ws), index)
        except Exception as error:
            self.errors.append(error)
        finally:
            await ws.close(code=1001)
        return ws

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/ws"

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, script: WebSocketScript, files: dict[str, Path] | None = None
    ) -> AsyncIterator[ScriptedWebSocketServer]:
        server = cls(script)
        app = web.Application()
        app.router.add_get("/ws", server._serve)
        for route, path in (files or {}).items():
            app.router.add_get(route, functools.partial(_file, path))
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        server.port = int(runner.addresses[0][1])
        try:
            yield server
        finally:
            await runner.cleanup()


async def _file(path: Path, request: web.Request) -> web.FileResponse:
    return web.FileResponse(path)
