"""Fixtures of the web-server tests: one node per module, raw WebSocket clients, rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from websupport import RawWebSocket, create_room, unique_room

from support import NodeProcess, start_node


@pytest.fixture(scope="module")
def web_node() -> Iterator[NodeProcess]:
    """A ``roomcast start`` process shared by one module; tests use rooms of their own."""
    process = start_node()
    yield process
    process.stop()


@pytest.fixture
def room(web_node: NodeProcess) -> str:
    """A fresh, existing chat room on ``web_node``."""
    name = unique_room()
    create_room(web_node.web_port, name)
    return name


OpenWs = Callable[..., Awaitable[RawWebSocket]]


@pytest.fixture
async def open_ws(web_node: NodeProcess) -> AsyncIterator[OpenWs]:
    """``await open_ws()`` connects a raw WebSocket client to ``web_node`` (closed after)."""
    opened: list[RawWebSocket] = []

    async def connect(port: int | None = None, **options: Any) -> RawWebSocket:
        client = await RawWebSocket.open(port or web_node.web_port, **options)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        await client.close()
