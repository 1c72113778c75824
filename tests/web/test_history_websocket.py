"""History and recovery over the WebSocket events (``roomHistory``, ``roomAdd`` with
``since`` and ``epoch``), against a real node keeping history on its embedded store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websupport import WELCOME, RawWebSocket, create_room, unique_room

from support import NodeProcess, start_node


@pytest.fixture(scope="module")
def history_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    directory: Path = tmp_path_factory.mktemp("history")
    config = directory / "history.toml"
    config.write_text("[chat]\nhistory_size = 20\n")
    node = start_node("--config", str(config), log_dir=directory)
    yield node
    node.stop()


@pytest.fixture
async def clients(history_node: NodeProcess) -> AsyncIterator[list[RawWebSocket]]:
    opened: list[RawWebSocket] = []
    for _ in range(2):
        client = await RawWebSocket.open(history_node.web_port)
        assert await client.receive() == WELCOME
        opened.append(client)
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture
def room(history_node: NodeProcess) -> str:
    name = unique_room()
    create_room(history_node.web_port, name)
    return name


async def _say_three(client: RawWebSocket, room: str) -> list[dict[str, Any]]:
    assert (await client.request({"event": "roomAdd", "room": room}))["data"] is True
    said = []
    for text in ("one", "two", "three"):
        await client.request({"event": "say", "room": room, "message": text})
        said.append(await client.next_chat())
    return said


async def test_room_history_answers_with_the_kept_messages(
    clients: list[RawWebSocket], room: str
) -> None:
    sender, _ = clients
    said = await _say_three(sender, room)
    reply = await sender.request(
        {"event": "roomHistory", "room": room, "since": 1, "limit": 1, "messageId": "h1"}
    )
    assert reply == {
        "status": "OK",
        "context": "response",
        "data": {"room": room, "epoch": said[0]["epoch"], "offset": 3, "messages": [said[1]]},
        "messageCount": reply["messageCount"],
        "messageId": "h1",
    }


async def test_room_history_of_a_stranger_has_data_false(
    clients: list[RawWebSocket], room: str
) -> None:
    _, stranger = clients
    reply = await stranger.request({"event": "roomHistory", "room": room})
    assert (reply["status"], reply["data"]) == (f"not member of room {room}", False)


async def test_room_add_with_since_and_epoch_replays_after_the_reply(
    clients: list[RawWebSocket], room: str
) -> None:
    sender, back = clients
    said = await _say_three(sender, room)
    await back.send({"event": "roomAdd", "room": room, "since": 1, "epoch": said[0]["epoch"]})
    first = await back.receive()
    assert first["context"] == "response"
    assert first["data"] == {"recovered": True, "epoch": said[0]["epoch"], "offset": 3}
    assert [await back.receive(), await back.receive()] == said[1:]
