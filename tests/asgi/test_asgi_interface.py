"""The ASGI application driven through the ASGI interface itself (scope, receive, send), as
an ASGI server drives it: what a real server cannot be made to do on cue (a client that
stops reading, a mount point given both ways)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from asgi_support import WELCOME

from roomcast import jsonwire
from roomcast.asgi import AsgiApp, app
from roomcast.config import Config, WebSettings


@pytest.fixture
async def realtime() -> AsyncIterator[AsgiApp]:
    application = app(
        Config(
            id="asgi-interface",
            socket_port=0,
            web_port=0,
            shutdown_timeout=1.0,
            web=WebSettings(send_buffer_limit=10_000),
        )
    )
    await application.start()
    yield application
    await application.stop()


async def http_get(application: AsgiApp, path: str, root_path: str = "") -> tuple[int, Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": root_path,
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 50000),
    }
    await application(scope, receive, send)
    return sent[0]["status"], jsonwire.loads(sent[1]["body"])


async def test_a_path_below_root_path_is_routed_after_the_mount_point(
    realtime: AsgiApp,
) -> None:
    status, body = await http_get(realtime, "/realtime/api/status", root_path="/realtime")
    assert (status, body["id"]) == (200, "asgi-interface")


async def test_a_path_already_stripped_of_root_path_is_routed_too(realtime: AsgiApp) -> None:
    status, body = await http_get(realtime, "/api/status", root_path="/realtime")
    assert (status, body["id"]) == (200, "asgi-interface")


async def test_a_path_that_only_starts_like_the_mount_point_is_not_found(
    realtime: AsgiApp,
) -> None:
    status, _ = await http_get(realtime, "/realtimeX/api/status", root_path="/realtime")
    assert status == 404


class StalledClient:
    """An ASGI WebSocket peer that reads the welcome and one reply, then stops reading:
    every later ``websocket.send`` waits until the client disconnects."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self.inbox.put_nowait({"type": "websocket.connect"})

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "websocket.send" and len(self.sent) >= 3:  # accept, welcome, reply
            await self.gone.wait()
            raise OSError("client disconnected")
        self.sent.append(dict(message))

    def disconnect(self) -> None:
        self.gone.set()
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})


async def test_a_client_that_stops_reading_is_dropped_as_a_slow_consumer(
    realtime: AsgiApp,
) -> None:
    api = realtime.api
    assert api is not None
    client = StalledClient()
    scope = {"type": "websocket", "path": "/ws", "query_string": b"", "headers": []}
    served = asyncio.ensure_future(realtime(scope, client.receive, client.send))
    client.inbox.put_nowait(
        {"type": "websocket.receive", "text": '{"event":"roomAdd","room":"defaultRoom"}'}
    )
    while len(client.sent) < 3:
        await asyncio.sleep(0.01)
    assert jsonwire.loads(client.sent[1]["text"]) == WELCOME
    assert jsonwire.loads(client.sent[2]["text"])["data"] is True
    for _ in range(30):  # 30 x 1,000 characters queue up behind the stalled send
        await api.chat_room.broadcast({}, "defaultRoom", "x" * 1000)
        await asyncio.sleep(0)
    for _ in range(100):
        if api.stats.slow_consumers_dropped:
            break
        await asyncio.sleep(0.01)
    assert api.stats.slow_consumers_dropped == 1
    for _ in range(100):
        if not api.connections.by_type():
            break
        await asyncio.sleep(0.01)
    assert api.connections.by_type() == {}
    assert api.chat_room.index.members("defaultRoom") == []
    client.disconnect()
    await asyncio.wait_for(served, 5)
