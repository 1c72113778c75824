"""A connection's life: connecting -> open -> closing -> closed, and what each state allows."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roomcast import ConnectionMiddleware, ConnectionNotFound, ConnectionRefused, ConnectionState
from roomcast.chat.middleware import ChatMiddleware
from roomcast.testing import TestConnection, TestNode
from support import LineClient, running_node


@pytest.fixture
async def node() -> AsyncIterator[TestNode]:
    async with TestNode() as running:
        yield running


async def test_a_new_connection_is_connecting_until_registered(node: TestNode) -> None:
    connection = TestConnection(node.api)
    assert connection.state is ConnectionState.CONNECTING
    assert connection.id not in node.api.connections
    await node.api.connections.register(connection)
    assert connection.state is ConnectionState.OPEN
    assert node.api.connections.get(connection.id) is connection


async def test_a_destroyed_connection_is_closed_and_forgotten(node: TestNode) -> None:
    connection = await node.connect()
    await connection.destroy()
    assert connection.state is ConnectionState.CLOSED
    assert connection.destroyed
    assert connection.id not in node.api.connections


async def test_a_join_in_flight_when_its_connection_is_destroyed_leaves_no_member(
    node: TestNode,
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow_join(connection: object, room: str) -> None:
        entered.set()
        await release.wait()

    node.api.chat_room.add_middleware(ChatMiddleware(name="slow", join=slow_join))
    connection = await node.connect()
    join = asyncio.ensure_future(node.api.chat_room.add_member(connection.id, "defaultRoom"))
    await asyncio.wait_for(entered.wait(), 5)
    await connection.destroy()  # leaves its rooms while the join still waits
    release.set()
    with pytest.raises(ConnectionNotFound):
        await join
    status = await node.api.chat_room.room_status("defaultRoom")
    assert status["members"] == {}
    assert node.api.chat_room.index.members("defaultRoom") == []
    assert connection.rooms == []


async def test_create_middleware_runs_before_the_connection_is_registered(
    node: TestNode,
) -> None:
    seen: list[bool] = []

    def create(connection: TestConnection) -> None:
        seen.append(connection.id in node.api.connections)

    node.api.connections.add_middleware(ConnectionMiddleware("probe", create=create))
    connection = await node.connect()
    assert seen == [False]
    assert connection.id in node.api.connections


async def test_a_connection_refused_by_create_middleware_is_never_registered(
    node: TestNode,
) -> None:
    def create(connection: TestConnection) -> None:
        raise PermissionError("no entry")

    node.api.connections.add_middleware(ConnectionMiddleware("bouncer", create=create))
    connection = TestConnection(node.api)
    with pytest.raises(ConnectionRefused, match=r"^no entry$"):
        await node.api.connections.register(connection)
    assert connection.state is ConnectionState.CLOSED
    assert connection.id not in node.api.connections
    assert len(node.api.connections) == 0


async def test_a_client_gone_during_create_middleware_runs_destroy_and_is_not_registered(
    node: TestNode,
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    destroyed: list[str] = []

    async def create(connection: TestConnection) -> None:
        entered.set()
        await release.wait()

    node.api.connections.add_middleware(
        ConnectionMiddleware("slow", create=create, destroy=lambda c: destroyed.append(c.id))
    )
    connection = TestConnection(node.api)
    registering = asyncio.ensure_future(node.api.connections.register(connection))
    await asyncio.wait_for(entered.wait(), 5)
    await connection.destroy()  # the transport went away meanwhile
    release.set()
    with pytest.raises(ConnectionRefused):
        await registering
    assert destroyed == [connection.id]
    assert connection.id not in node.api.connections
    assert connection.state is ConnectionState.CLOSED


REFUSING_MIDDLEWARE = """
from roomcast import Api, ConnectionMiddleware


def initialize(api: Api) -> None:
    def create(connection):
        if connection.type == "socket":
            raise PermissionError("sockets are not welcome here")

    api.connections.add_middleware(ConnectionMiddleware("no-sockets", create=create))
"""


def test_a_tcp_client_refused_by_create_middleware_gets_only_the_refusal(
    tmp_path: Path,
) -> None:
    actions = tmp_path / "actions"
    actions.mkdir()
    (actions / "refuse.py").write_text(textwrap.dedent(REFUSING_MIDDLEWARE))
    with running_node("--actions", str(actions)) as node:
        client = LineClient(node.socket_port)
        try:
            client.send_line("status")  # sent at once: it must never be answered
            client.send_line("roomAdd defaultRoom")
            assert client.read() == {
                "status": "error",
                "error": "sockets are not welcome here",
                "context": "api",
            }
            assert client.is_closed()
            assert client._buffer == b""  # nothing else was written before the close
        finally:
            client.close()
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{node.web_port}/api/status") as reply:
            status = json.loads(reply.read())
        assert status["connections"] == 1  # only this HTTP request itself


REFUSING_WEBSOCKETS = REFUSING_MIDDLEWARE.replace('"socket"', '"websocket"').replace(
    "sockets are not welcome here", "websockets are not welcome here"
)


async def test_a_websocket_client_refused_by_create_middleware_is_told_why_and_closed_1008(
    tmp_path: Path,
) -> None:
    import aiohttp

    actions = tmp_path / "actions"
    actions.mkdir()
    (actions / "refuse.py").write_text(textwrap.dedent(REFUSING_WEBSOCKETS))
    with running_node("--actions", str(actions)) as node:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"ws://127.0.0.1:{node.web_port}/ws") as ws,
        ):
            await ws.send_str('{"event":"detailsView"}')  # never answered
            first = await ws.receive(timeout=5)
            assert first.type is aiohttp.WSMsgType.TEXT
            assert json.loads(first.data) == {
                "status": "error",
                "error": "websockets are not welcome here",
                "context": "api",
            }
            closing = await ws.receive(timeout=5)
            assert closing.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1008
