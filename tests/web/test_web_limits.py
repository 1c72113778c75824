"""The per-request limits of ``[limits]`` on the WebSocket and HTTP wires, end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websupport import WELCOME, RawWebSocket, http_request, unique_room

from support import NodeProcess, start_node

TOO_FAST = "you are sending too fast"


def verb_reply(status: str, count: int) -> dict[str, Any]:
    return {"status": status, "context": "response", "data": False, "messageCount": count}


@pytest.fixture(scope="module")
def tight_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with small rates and a small room limit per connection."""
    config: Path = tmp_path_factory.mktemp("tight") / "roomcast.toml"
    config.write_text("[limits]\nsay_rate = 5\naction_rate = 5\nmax_rooms_per_connection = 3\n")
    process = start_node("--config", str(config))
    yield process
    process.stop()


@pytest.fixture
async def ws() -> AsyncIterator[Any]:
    """``await ws(node)`` opens a WebSocket client that has read its welcome."""
    opened: list[RawWebSocket] = []

    async def connect(node: NodeProcess) -> RawWebSocket:
        client = await RawWebSocket.open(node.web_port)
        opened.append(client)
        assert await client.receive() == WELCOME
        return client

    yield connect
    for client in opened:
        await client.close()


# WebSocket ------------------------------------------------------------------------------


async def test_a_websocket_room_add_of_a_name_with_a_newline_is_an_invalid_room_name(
    web_node: NodeProcess, ws: Any
) -> None:
    client = await ws(web_node)
    reply = await client.request({"event": "roomAdd", "room": "two\nlines"})
    assert reply == verb_reply("invalid room name", 1)


async def test_a_websocket_room_add_past_the_rooms_per_connection_is_too_many_rooms(
    tight_node: NodeProcess, ws: Any
) -> None:
    client = await ws(tight_node)
    rooms = [unique_room() for _ in range(4)]
    for room in rooms:
        http_request(tight_node.web_port, "GET", f"/api/createChatRoom?name={room}")
    statuses = [(await client.request({"event": "roomAdd", "room": r}))["status"] for r in rooms]
    assert statuses == ["OK", "OK", "OK", "too many rooms (3 max)"]


async def test_a_websocket_say_over_the_message_limit_is_refused(
    web_node: NodeProcess, ws: Any
) -> None:
    client = await ws(web_node)
    assert (await client.request({"event": "roomAdd", "room": "defaultRoom"}))["status"] == "OK"
    reply = await client.request({"event": "say", "room": "defaultRoom", "message": "a" * 70000})
    assert reply == verb_reply("message is too long (70002 > 65536 bytes)", 2)


async def test_websocket_says_over_the_say_rate_are_answered_too_fast(
    tight_node: NodeProcess, ws: Any
) -> None:
    client = await ws(tight_node)
    assert (await client.request({"event": "roomAdd", "room": "defaultRoom"}))["status"] == "OK"
    for n in range(15):
        await client.send({"event": "say", "room": "defaultRoom", "message": "hi", "messageId": n})
    answered = [await client.reply() for _ in range(15)]
    assert [r["status"] for r in answered] == ["OK"] * 10 + [TOO_FAST] * 5
    assert answered[14] == {**verb_reply(TOO_FAST, 16), "messageId": 14}


async def test_websocket_actions_over_the_action_rate_are_answered_too_fast(
    tight_node: NodeProcess, ws: Any
) -> None:
    client = await ws(tight_node)
    status = {"event": "action", "params": {"action": "status"}}
    answered = [await client.request(status) for _ in range(15)]
    assert ["error" in r for r in answered] == [False] * 10 + [True] * 5
    assert answered[10] == {"error": TOO_FAST, "context": "response", "messageCount": 11}


async def test_a_websocket_action_with_too_many_params_is_refused(
    web_node: NodeProcess, ws: Any
) -> None:
    client = await ws(web_node)
    params = {"action": "status", **{f"p{n}": n for n in range(64)}}
    reply = await client.request({"event": "action", "params": params})
    assert reply == {"error": "too many params (64 max)", "context": "response", "messageCount": 1}


# HTTP -----------------------------------------------------------------------------------


def test_http_create_chat_room_with_an_invalid_name_is_refused(web_node: NodeProcess) -> None:
    reply = http_request(web_node.web_port, "GET", "/api/createChatRoom?name=a%01b")
    assert (reply.status, reply.json()) == (400, {"error": "invalid room name"})


def test_http_actions_are_not_held_to_the_action_rate(tight_node: NodeProcess) -> None:
    codes = [http_request(tight_node.web_port, "GET", "/api/status").status for _ in range(15)]
    assert codes == [200] * 15
