"""The Python client API (SPEC §7), over both the socket and the WebSocket protocol."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websupport import WELCOME, now_ms, unique_room, wait_for

from roomcast.client import ClientError, SocketClient, WebSocketClient
from support import LOOPBACK, NodeProcess, start_node

Client = SocketClient | WebSocketClient
MakeClient = Callable[..., Awaitable[Client]]


def new_client(kind: str, node: NodeProcess, timeout: float = 5.0) -> Client:
    if kind == "socket":
        return SocketClient(LOOPBACK, node.socket_port, timeout=timeout)
    return WebSocketClient(f"ws://{LOOPBACK}:{node.web_port}/ws", timeout=timeout)


@pytest.fixture(params=["socket", "websocket"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_client(kind: str, web_node: NodeProcess) -> AsyncIterator[MakeClient]:
    """``await make_client()`` gives a connected client of this test's kind."""
    clients: list[Client] = []

    async def make(connect: bool = True) -> Client:
        client = new_client(kind, web_node)
        clients.append(client)
        if connect:
            await client.connect()
        return client

    yield make
    for client in clients:
        await client.disconnect()


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client()


# connect and welcome ---------------------------------------------------------------------


async def test_connect_returns_the_welcome(make_client: MakeClient) -> None:
    client = await make_client(connect=False)
    assert await client.connect() == WELCOME
    assert client.welcome == WELCOME


async def test_welcome_handlers_registered_before_connect_are_called(
    make_client: MakeClient,
) -> None:
    client = await make_client(connect=False)
    seen: list[dict[str, Any]] = []
    assert client.on_welcome(seen.append) is not None
    await client.connect()
    assert seen == [WELCOME]


async def test_the_client_works_as_an_async_context_manager(
    kind: str, web_node: NodeProcess
) -> None:
    async with new_client(kind, web_node) as client:
        assert client.welcome == WELCOME
        assert (await client.details_view())["id"]
    assert client.closed.is_set()


# rooms -----------------------------------------------------------------------------------


async def test_room_add_and_room_leave_return_true(client: Client, room: str) -> None:
    assert await client.room_add(room) is True
    assert (await client.details_view())["rooms"] == [room]
    assert await client.room_leave(room) is True
    assert (await client.details_view())["rooms"] == []


async def test_room_add_twice_raises_client_error(client: Client, room: str) -> None:
    await client.room_add(room)
    with pytest.raises(ClientError) as caught:
        await client.room_add(room)
    assert str(caught.value) == f"connection already in this room ({room})"
    assert caught.value.reply["status"] == f"connection already in this room ({room})"
    assert caught.value.reply["data"] is False


async def test_room_add_of_a_missing_room_raises_client_error(client: Client) -> None:
    with pytest.raises(ClientError, match=r"^room does not exist$"):
        await client.room_add(unique_room("missing"))


async def test_room_leave_of_a_room_not_joined_raises_client_error(
    client: Client, room: str
) -> None:
    with pytest.raises(ClientError) as caught:
        await client.room_leave(room)
    assert str(caught.value) == f"connection not in this room ({room})"


async def test_room_view_returns_the_room_status(make_client: MakeClient, room: str) -> None:
    alice, bob = await make_client(), await make_client()
    await alice.room_add(room)
    await bob.room_add(room)
    view = await alice.room_view(room)
    alice_id = (await alice.details_view())["id"]
    bob_id = (await bob.details_view())["id"]
    assert view["room"] == room
    assert view["membersCount"] == 2
    assert set(view["members"]) == {alice_id, bob_id}
    assert view["members"][alice_id]["id"] == alice_id


async def test_room_view_of_a_room_not_joined_raises_client_error(
    client: Client, room: str
) -> None:
    with pytest.raises(ClientError) as caught:
        await client.room_view(room)
    assert str(caught.value) == f"not member of room {room}"


# say and the say handlers ----------------------------------------------------------------


async def test_say_calls_sync_and_async_handlers_of_every_member(
    make_client: MakeClient, room: str
) -> None:
    alice, bob = await make_client(), await make_client()
    alice_id = (await alice.details_view())["id"]
    sync_seen: list[dict[str, Any]] = []
    async_seen: list[dict[str, Any]] = []

    async def remember(message: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        async_seen.append(message)

    bob.on_say(sync_seen.append)
    bob.on_say(remember)
    await alice.room_add(room)
    await bob.room_add(room)
    before = now_ms()
    await alice.say(room, "hi bob")

    await wait_for(lambda: sync_seen and async_seen, 5, message="bob's handlers")
    (message,) = sync_seen
    assert message == {
        "message": "hi bob",
        "room": room,
        "from": alice_id,
        "context": "user",
        "sentAt": message["sentAt"],
    }
    assert before - 1000 <= message["sentAt"] <= now_ms() + 1000
    assert async_seen == [message]
    # The sender hears itself too, through the queue every client keeps.
    own = await asyncio.wait_for(alice.chat_messages.get(), 5)
    assert own["message"] == "hi bob" and own["from"] == alice_id


async def test_on_say_works_as_a_decorator(client: Client, room: str) -> None:
    seen: list[str] = []

    @client.on_say
    def remember(message: dict[str, Any]) -> None:
        seen.append(message["message"])

    await client.room_add(room)
    await client.say(room, "decorated")
    await wait_for(lambda: seen == ["decorated"], 5, message="the decorated handler")
    assert callable(remember)


async def test_a_failing_handler_does_not_stop_the_client(client: Client, room: str) -> None:
    def broken(message: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    client.on_say(broken)
    await client.room_add(room)
    await client.say(room, "first")
    await client.say(room, "second")
    assert (await asyncio.wait_for(client.chat_messages.get(), 5))["message"] == "first"
    assert (await asyncio.wait_for(client.chat_messages.get(), 5))["message"] == "second"


async def test_say_to_a_room_not_joined_raises_client_error(client: Client, room: str) -> None:
    with pytest.raises(ClientError) as caught:
        await client.say(room, "nobody hears this")
    assert str(caught.value) == f"connection not in this room ({room})"


# actions and details ---------------------------------------------------------------------


async def test_action_returns_the_response(client: Client, web_node: NodeProcess) -> None:
    reply = await client.action("status")
    assert reply["id"] == web_node.node_id
    assert reply["context"] == "response"


async def test_action_params_as_dict_or_keywords(client: Client) -> None:
    first, second = unique_room("dict"), unique_room("kw")
    assert (await client.action("createChatRoom", {"name": first}))["didCreate"] is True
    assert (await client.action("createChatRoom", name=second))["didCreate"] is True
    await client.room_add(first)
    await client.room_add(second)


async def test_action_errors_raise_client_error(client: Client) -> None:
    name = unique_room("exists")
    await client.action("createChatRoom", name=name)
    with pytest.raises(ClientError, match=r"^room exists$") as caught:
        await client.action("createChatRoom", name=name)
    assert caught.value.reply["error"] == "room exists"
    with pytest.raises(ClientError, match=r"^unknown action or invalid apiVersion$"):
        await client.action("noSuchAction")
    with pytest.raises(ClientError, match=r"^name is a required parameter for this action$"):
        await client.action("createChatRoom")


async def test_details_view_describes_the_connection(client: Client, room: str) -> None:
    await client.room_add(room)
    details = await client.details_view()
    assert details["remoteIP"] == "127.0.0.1"
    assert details["fingerprint"] == details["id"]
    assert details["rooms"] == [room]


async def test_concurrent_requests_each_get_their_own_reply(
    client: Client, room: str, web_node: NodeProcess
) -> None:
    other = unique_room("concurrent")
    results = await asyncio.gather(
        client.action("status"),
        client.room_add(room),
        client.action("createChatRoom", name=other),
        client.details_view(),
        client.action("status"),
        client.room_view(unique_room("not-joined")),
        return_exceptions=True,
    )
    status, joined, created, details, status_again, refused = results
    assert status["id"] == status_again["id"] == web_node.node_id
    assert joined is True
    assert created["didCreate"] is True
    assert "id" in details and "fingerprint" in details
    assert isinstance(refused, ClientError)
    assert str(refused).startswith("not member of room")


# disconnect ------------------------------------------------------------------------------


async def test_disconnect_leaves_the_rooms(make_client: MakeClient, room: str) -> None:
    observer, leaver = await make_client(), await make_client()
    await observer.room_add(room)
    await leaver.room_add(room)
    leaver_id = (await leaver.details_view())["id"]
    assert leaver_id in (await observer.room_view(room))["members"]
    await leaver.disconnect()
    assert leaver.closed.is_set()

    async def gone() -> bool:
        return leaver_id not in (await observer.room_view(room))["members"]

    await wait_for(gone, 5, message="the disconnected client to leave the room")


async def test_a_request_in_flight_fails_when_the_server_goes_away(kind: str) -> None:
    node = start_node()
    client = new_client(kind, node, timeout=30.0)
    try:
        await client.connect()
        os.kill(node.pid, signal.SIGSTOP)  # the request below stays unanswered
        request = asyncio.create_task(client.details_view())
        answered, _ = await asyncio.wait({request}, timeout=0.2)
        assert not answered  # written at once, and the stopped node does not answer
        node.kill()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(request, 5)
        assert client.closed.is_set()
    finally:
        await client.disconnect()
        node.stop()


async def test_requests_after_the_server_went_away_fail_at_once(kind: str) -> None:
    node = start_node()
    client = new_client(kind, node, timeout=30.0)
    try:
        await client.connect()
        node.kill()
        await asyncio.wait_for(client.closed.wait(), 5)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(client.details_view(), 2)
    finally:
        await client.disconnect()
        node.stop()
