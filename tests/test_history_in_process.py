"""History, recovery and presence events with chat middleware, on an in-process node
(``roomcast.testing``, the embedded store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from roomcast import ChatMiddleware
from roomcast.chat.history import NotObject
from roomcast.config import ChatSettings, Config
from roomcast.testing import TestConnection, TestNode

ROOM = "lobby"


@pytest.fixture
async def node() -> AsyncIterator[TestNode]:
    config = Config(id="history-node", chat=ChatSettings(history_size=10, presence_events=True))
    async with TestNode(config, socket_port=0, web_port=0) as running:
        await running.api.chat_room.add(ROOM)
        yield running


async def joined(node: TestNode) -> TestConnection:
    connection = await node.connect()
    await connection.verb("roomAdd", room=ROOM)
    return connection


async def say(connection: TestConnection, text: str) -> dict[str, Any]:
    await connection.verb("say", room=ROOM, message=text)
    said: dict[str, Any] = await connection.wait_for(lambda m: m.get("message") == text)
    return said


async def test_presence_events_skip_say_middleware(node: TestNode) -> None:
    node.api.chat_room.add_middleware(ChatMiddleware("mute", say=lambda c, r, p: False))
    watcher = await joined(node)
    newcomer = await joined(node)
    event = await watcher.wait_for(
        lambda m: m.get("context") == "presence" and m.get("id") == newcomer.id
    )
    assert event["event"] == "join"
    assert watcher.chat_messages() == []


async def test_say_middleware_runs_on_replayed_messages(node: TestNode) -> None:
    sender = await joined(node)
    first = await say(sender, "keep")
    await say(sender, "hide")
    await say(sender, "show")
    node.api.chat_room.add_middleware(
        ChatMiddleware("hide", say=lambda c, r, p: False if p.get("message") == "hide" else None)
    )
    back = await node.connect()
    reply = await back.verb("roomAdd", room=ROOM, since=first["offset"], epoch=first["epoch"])
    assert reply["recovered"] is True
    await back.wait_for(lambda m: m.get("message") == "show")
    assert [m["message"] for m in back.chat_messages(ROOM)] == ["show"]


async def test_say_middleware_runs_on_room_history(node: TestNode) -> None:
    sender = await joined(node)
    await say(sender, "hide")
    await say(sender, "show")
    node.api.chat_room.add_middleware(
        ChatMiddleware("hide", say=lambda c, r, p: False if p.get("message") == "hide" else None)
    )
    data = await sender.verb("roomHistory", room=ROOM)
    assert [m["message"] for m in data["messages"]] == ["show"]


async def test_a_recovering_connection_enters_the_room_index_after_its_reply(
    node: TestNode,
) -> None:
    sender = await joined(node)
    first = await say(sender, "one")
    back = await node.connect()
    await back.verb("roomAdd", room=ROOM, since=first["offset"], epoch=first["epoch"])
    index = node.api.chat_room.index
    assert back not in index.members(ROOM)
    await asyncio.sleep(0)  # the replay runs in the next step
    assert back in index.members(ROOM)


async def test_a_message_that_is_not_an_object_is_refused_in_a_history_room(
    node: TestNode,
) -> None:
    node.api.chat_room.add_middleware(
        ChatMiddleware("text", on_say_receive=lambda c, r, p: "just text")
    )
    sender = await joined(node)
    with pytest.raises(NotObject, match="a message in a room with history must be a JSON object"):
        await sender.verb("say", room=ROOM, message="hi")


async def test_a_recovering_connection_that_leaves_is_never_added_back(node: TestNode) -> None:
    sender = await joined(node)
    first = await say(sender, "one")
    back = await node.connect()
    await back.verb("roomAdd", room=ROOM, since=first["offset"], epoch=first["epoch"])
    await back.verb("roomLeave", room=ROOM)
    await asyncio.sleep(0.05)
    assert back not in node.api.chat_room.index.members(ROOM)
    history = node.api.chat_room.history
    assert history is not None and not history.recovering
