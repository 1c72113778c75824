"""The Python client API over both the socket and the WebSocket protocol, and its session:
failover, reconnect with backoff, re-joining rooms and resuming their history."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from clientsupport import (
    ScriptedPeer,
    ScriptedServer,
    needs_history_gate,  # noqa: F401 (an autouse fixture)
    start_history_node,
)
from websupport import WELCOME, create_room, now_ms, unique_room, wait_for

from roomcast.client import (
    Backoff,
    ClientConnectionError,
    ClientError,
    ClientState,
    Disconnected,
    Position,
    Reconnected,
    RoomPositions,
    SocketClient,
    WebSocketClient,
)
from support import LOOPBACK, NodeProcess, RedisProcess, free_port, start_node

Client = SocketClient | WebSocketClient
MakeClient = Callable[..., Awaitable[Client]]


def new_client(kind: str, node: NodeProcess, timeout: float = 5.0, **options: Any) -> Client:
    if kind == "socket":
        return SocketClient(LOOPBACK, node.socket_port, timeout=timeout, **options)
    return WebSocketClient(ws_url(node), timeout=timeout, **options)


def ws_url(node: NodeProcess) -> str:
    return f"ws://{LOOPBACK}:{node.web_port}/ws"


def tcp_url(node: NodeProcess) -> str:
    return f"{LOOPBACK}:{node.socket_port}"


def url_of(kind: str, node: NodeProcess) -> str:
    """How ``kind``'s client names ``node`` in ``client.url``."""
    return f"tcp://{tcp_url(node)}" if kind == "socket" else ws_url(node)


def several(kind: str, nodes: Sequence[NodeProcess | int], **options: Any) -> Client:
    """A client of ``kind`` for several servers (a bare int is a port nobody listens on)."""
    ports = [
        n if isinstance(n, int) else (n.socket_port if kind == "socket" else n.web_port)
        for n in nodes
    ]
    options.setdefault("timeout", 5.0)
    if kind == "socket":
        return SocketClient([f"{LOOPBACK}:{port}" for port in ports], **options)
    return WebSocketClient([f"ws://{LOOPBACK}:{port}/ws" for port in ports], **options)


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


# the session: drops, reconnects, failover -------------------------------------------------

#: Quick retries, so the tests wait for the node rather than for the backoff.
FAST = Backoff(initial=0.05, maximum=0.3)


class Recorder:
    """Everything a client's handlers were told, in order."""

    def __init__(self, client: Client) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.said: list[dict[str, Any]] = []
        self.presence: list[dict[str, Any]] = []
        self.disconnects: list[Disconnected] = []
        self.reconnects: list[Reconnected] = []
        self.recovered: list[tuple[str, int]] = []
        self.unrecovered: list[tuple[str, int]] = []
        client.on_say(self._say)
        client.on_presence(self.presence.append)
        client.on_disconnect(self.disconnects.append)
        client.on_reconnect(self.reconnects.append)
        client.on_recovered(self._recovered)
        client.on_unrecovered(self._unrecovered)

    def _say(self, message: dict[str, Any]) -> None:
        self.said.append(message)
        self.events.append(("say", message["message"]))

    def _recovered(self, room: str, count: int) -> None:
        self.recovered.append((room, count))
        self.events.append(("recovered", room, count))

    def _unrecovered(self, room: str, count: int) -> None:
        self.unrecovered.append((room, count))
        self.events.append(("unrecovered", room, count))

    def heard(self, text: str) -> bool:
        return any(message["message"] == text for message in self.said)


async def restart(node: NodeProcess, *extra: str) -> NodeProcess:
    """Start ``node`` again on its ports (in a thread: the clients' loop keeps running)."""
    return await asyncio.to_thread(
        start_node, *extra, socket_port=node.socket_port, web_port=node.web_port
    )


async def test_a_request_in_flight_fails_when_the_server_goes_away(kind: str) -> None:
    node = start_node()
    client = new_client(kind, node, timeout=30.0, backoff=FAST)
    try:
        await client.connect()
        os.kill(node.pid, signal.SIGSTOP)  # the request below stays unanswered
        request = asyncio.create_task(client.details_view())
        await asyncio.sleep(0.2)
        assert not request.done()
        node.kill()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(request, 5)
        assert client.state is ClientState.RECONNECTING
    finally:
        await client.disconnect()
        node.stop()


async def test_without_reconnect_a_drop_closes_the_client_and_requests_fail_at_once(
    kind: str,
) -> None:
    node = start_node()
    client = new_client(kind, node, timeout=30.0, reconnect=False)
    record = Recorder(client)
    try:
        await client.connect()
        node.kill()
        await asyncio.wait_for(client.closed.wait(), 5)
        assert client.state is ClientState.CLOSED
        with pytest.raises(ConnectionError, match=r"^connection closed$"):
            await asyncio.wait_for(client.details_view(), 2)
        await wait_for(lambda: record.disconnects, 5, message="the disconnect handler")
        assert [d.will_reconnect for d in record.disconnects] == [False]
    finally:
        await client.disconnect()
        node.stop()


async def test_after_its_node_is_killed_and_restarted_the_client_reconnects_and_rejoins(
    kind: str,
) -> None:
    node = start_node()
    client = new_client(kind, node, backoff=FAST)
    record = Recorder(client)
    try:
        await client.connect()
        await client.room_add("defaultRoom")
        first_id = (await client.details_view())["id"]
        node.kill()
        await wait_for(lambda: record.disconnects, 5, message="the drop")
        assert record.disconnects[0].will_reconnect is True
        node = await restart(node)

        await wait_for(lambda: record.reconnects, 15, message="the reconnect")
        (back,) = record.reconnects
        assert (back.url, back.rooms, dict(back.failed_rooms)) == (
            url_of(kind, node),
            ("defaultRoom",),
            {},
        )
        details = await client.details_view()
        assert details["rooms"] == ["defaultRoom"]
        assert details["id"] != first_id
        assert client.state is ClientState.CONNECTED
    finally:
        await client.disconnect()
        node.stop()


async def test_after_a_graceful_server_shutdown_the_socket_client_reconnects() -> None:
    node = start_node()
    client = new_client("socket", node, backoff=FAST)
    record = Recorder(client)
    try:
        await client.connect()
        await client.room_add("defaultRoom")
        assert node.stop() == 0  # the server closes the connection (TCP says "Bye!")
        await wait_for(lambda: record.disconnects, 5, message="the drop")
        node = await restart(node)
        await wait_for(lambda: record.reconnects, 15, message="the reconnect")
        assert (await client.details_view())["rooms"] == ["defaultRoom"]
    finally:
        await client.disconnect()
        node.stop()


async def test_when_its_node_dies_the_client_fails_over_to_the_next_server_and_rejoins(
    kind: str, redis_server: RedisProcess
) -> None:
    first = start_node("--redis-url", redis_server.url)
    second = start_node("--redis-url", redis_server.url)
    room = unique_room("failover")
    create_room(first.web_port, room)
    client = several(kind, [first, second], backoff=FAST)
    record = Recorder(client)
    observer = new_client(kind, second)
    try:
        await client.connect()
        await observer.connect()
        assert client.url == url_of(kind, first)
        await client.room_add(room)
        await observer.room_add(room)

        first.kill()
        await wait_for(lambda: record.reconnects, 15, message="the failover")
        (back,) = record.reconnects
        assert (back.url, back.rooms) == (url_of(kind, second), (room,))
        new_id = (await client.details_view())["id"]

        async def rejoined() -> bool:
            return new_id in (await observer.room_view(room))["members"]

        await wait_for(rejoined, 5, message="the client to be in the room on the second node")
        await observer.say(room, "after the failover")
        await wait_for(lambda: record.heard("after the failover"), 5, message="the message")
    finally:
        await client.disconnect()
        await observer.disconnect()
        first.stop()
        second.stop()


async def test_connect_skips_a_server_that_refuses_and_uses_the_next(
    kind: str, web_node: NodeProcess
) -> None:
    client = several(kind, [free_port(), web_node])
    try:
        assert await client.connect() == WELCOME
        assert client.url == url_of(kind, web_node)
        assert client.urls[1] == url_of(kind, web_node)
    finally:
        await client.disconnect()


async def test_a_refused_connect_raises_one_clean_error_and_leaves_nothing_open(
    kind: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    ports = [free_port(), free_port()]
    client = several(kind, ports)
    with pytest.raises(ClientConnectionError) as caught:
        await client.connect()
    message = str(caught.value)
    assert message.startswith("could not connect to ")
    for url in client.urls:
        assert url in message
    assert caught.value.__context__ is None and caught.value.__cause__ is None
    assert client.state is ClientState.CLOSED and client.closed.is_set()

    # An aiohttp session left open would complain when collected.
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        del client
        gc.collect()
        await asyncio.sleep(0)
    assert [str(w.message) for w in caught_warnings] == []
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "Unclosed" not in out + err
    assert [
        r.getMessage() for r in caplog.records if r.exc_info or "Unclosed" in r.getMessage()
    ] == []


async def test_after_disconnect_the_client_does_not_reconnect(
    kind: str, web_node: NodeProcess
) -> None:
    client = new_client(kind, web_node, backoff=Backoff(initial=0.01, maximum=0.05))
    record = Recorder(client)
    await client.connect()
    await client.room_add("defaultRoom")
    await client.disconnect()
    # Many backoff periods later it is still closed and never came back.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert client.state is ClientState.CLOSED
        await asyncio.sleep(0.05)
    assert record.reconnects == []
    assert [d.will_reconnect for d in record.disconnects] == [False]
    assert client.rooms == []
    with pytest.raises(ConnectionError, match=r"^connection closed$"):
        await client.details_view()


async def test_reconnect_delays_never_exceed_the_backoff_maximum() -> None:
    # Uncapped, the attempts after the drop would come at 0.1, 0.5, 2.1 and 8.5 s.
    backoff = Backoff(initial=0.1, maximum=0.4, factor=4.0, jitter=0.0)
    node = start_node()
    client = new_client("websocket", node, backoff=backoff)
    record = Recorder(client)
    try:
        await client.connect()
        node.kill()
        await wait_for(lambda: record.disconnects, 5, message="the drop")
        await asyncio.sleep(2.5)  # down long enough for the uncapped delays to grow past 4 s
        node = await restart(node)
        ready = time.monotonic()
        await wait_for(lambda: record.reconnects, 2.0, message="a reconnect within the cap")
        assert time.monotonic() - ready < 2.0
        assert record.reconnects[0].attempt > 4  # it kept trying every 0.4 s
    finally:
        await client.disconnect()
        node.stop()


async def test_reconnecting_gives_up_after_reconnect_attempts() -> None:
    node = start_node()
    client = new_client("socket", node, backoff=FAST, reconnect_attempts=3)
    record = Recorder(client)
    try:
        await client.connect()
        node.kill()
        await asyncio.wait_for(client.closed.wait(), 10)
        assert client.state is ClientState.CLOSED
        await wait_for(lambda: len(record.disconnects) == 2, 5, message="the last handler call")
        assert [(d.will_reconnect, d.reason) for d in record.disconnects][1] == (
            False,
            "gave up after 3 reconnect attempts",
        )
        with pytest.raises(ConnectionError):
            await client.details_view()
    finally:
        await client.disconnect()
        node.stop()


async def test_a_request_made_while_reconnecting_is_sent_after_the_rooms_are_rejoined() -> None:
    node = start_node()
    client = new_client("websocket", node, timeout=20.0, backoff=FAST)
    record = Recorder(client)
    try:
        await client.connect()
        await client.room_add("defaultRoom")
        node.kill()
        await wait_for(lambda: record.disconnects, 5, message="the drop")
        request = asyncio.create_task(client.details_view())
        node = await restart(node)
        details = await asyncio.wait_for(request, 15)
        assert details["rooms"] == ["defaultRoom"]
    finally:
        await client.disconnect()
        node.stop()


async def test_a_room_that_cannot_be_rejoined_is_reported_and_forgotten() -> None:
    node = start_node()  # embedded store: a restarted node knows only defaultRoom
    room = unique_room("gone")
    create_room(node.web_port, room)
    client = new_client("socket", node, backoff=FAST)
    record = Recorder(client)
    try:
        await client.connect()
        await client.room_add(room)
        await client.room_add("defaultRoom")
        node.kill()
        node = await restart(node)
        await wait_for(lambda: record.reconnects, 15, message="the reconnect")
        (back,) = record.reconnects
        assert (back.rooms, dict(back.failed_rooms)) == (
            ("defaultRoom",),
            {room: "room does not exist"},
        )
        assert client.rooms == ["defaultRoom"]
    finally:
        await client.disconnect()
        node.stop()


# resuming history, against a scripted server ----------------------------------------------


def chat(room: str, text: str, offset: int, epoch: str) -> dict[str, Any]:
    return {
        "message": text,
        "room": room,
        "from": "someone",
        "context": "user",
        "sentAt": now_ms(),
        "offset": offset,
        "epoch": epoch,
    }


async def _hold(peer: ScriptedPeer) -> None:
    """Keep a scripted connection open until the client leaves."""
    try:
        while True:
            await peer.line(timeout=30)
    except (ConnectionError, TimeoutError):
        return


async def test_a_rejoin_resumes_from_the_last_offset_and_epoch_and_drops_duplicates() -> None:
    lines: list[str] = []

    async def script(peer: ScriptedPeer, index: int) -> None:
        await peer.send(WELCOME)
        lines.append(await peer.line())
        if index == 0:
            await peer.reply(True)
            await peer.send(chat("r", "m1", 1, "e1"))
            await peer.send(chat("r", "m2", 2, "e1"))
            return  # the server goes away
        await peer.reply({"recovered": True, "epoch": "e1", "offset": 4})
        for offset in (2, 3, 4):  # 2 again: a replayed duplicate
            await peer.send(chat("r", f"m{offset}", offset, "e1"))
        await _hold(peer)

    async with ScriptedServer.running(script) as server:
        client = SocketClient(LOOPBACK, server.port, timeout=5.0, backoff=FAST)
        record = Recorder(client)
        try:
            await client.connect()
            await client.room_add("r")
            await wait_for(lambda: record.heard("m4"), 10, message="the replayed messages")
            assert lines == ["roomAdd r", "roomAdd r 2 e1"]
            assert record.events == [
                ("say", "m1"),
                ("say", "m2"),
                ("recovered", "r", 2),
                ("say", "m3"),
                ("say", "m4"),
            ]
            assert client.position("r") == Position(4, "e1")
        finally:
            await client.disconnect()
    assert server.errors == []


async def test_a_rejoin_that_cannot_resume_reports_unrecovered_and_starts_over() -> None:
    async def script(peer: ScriptedPeer, index: int) -> None:
        await peer.send(WELCOME)
        await peer.line()
        if index == 0:
            await peer.reply(True)
            await peer.send(chat("r", "m1", 1, "e1"))
            return
        await peer.reply({"recovered": False, "epoch": "e2", "offset": 7})
        await peer.send(chat("r", "m8", 8, "e2"))
        await _hold(peer)

    async with ScriptedServer.running(script) as server:
        client = SocketClient(LOOPBACK, server.port, timeout=5.0, backoff=FAST)
        record = Recorder(client)
        try:
            await client.connect()
            await client.room_add("r")
            await wait_for(lambda: record.heard("m8"), 10, message="the new epoch's message")
            assert record.events == [("say", "m1"), ("unrecovered", "r", 0), ("say", "m8")]
            assert client.position("r") == Position(8, "e2")
        finally:
            await client.disconnect()
    assert server.errors == []


# pure parts: backoff and positions -------------------------------------------------------


def test_backoff_delays_grow_by_the_factor_up_to_the_maximum() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, factor=2.0, jitter=0.5)
    top = [backoff.delay(n, random=lambda: 1.0) for n in range(1, 10)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.delay(10_000, random=lambda: 1.0) == 30.0


def test_backoff_jitter_takes_up_to_that_share_off_each_delay() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, factor=2.0, jitter=0.25)
    assert [backoff.delay(n, random=lambda: 0.0) for n in (1, 2, 4, 5)] == [0.75, 1.5, 6.0, 6.0]


@pytest.mark.parametrize(
    "settings",
    [{"initial": -1.0}, {"initial": 2.0, "maximum": 1.0}, {"factor": 0.5}, {"jitter": 1.5}],
)
def test_backoff_rejects_settings_that_make_no_sense(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**settings)


def test_room_positions_drop_a_message_not_past_the_last_offset_of_its_epoch() -> None:
    positions = RoomPositions()
    assert positions.observe(chat("r", "a", 5, "e1")) is True
    assert positions.observe(chat("r", "b", 5, "e1")) is False
    assert positions.observe(chat("r", "c", 4, "e1")) is False
    assert positions.observe(chat("r", "d", 6, "e1")) is True
    assert positions.get("r") == Position(6, "e1")


def test_room_positions_start_a_room_over_in_a_new_epoch() -> None:
    positions = RoomPositions()
    positions.observe(chat("r", "a", 9, "e1"))
    assert positions.observe(chat("r", "b", 1, "e2")) is True
    assert positions.get("r") == Position(1, "e2")


def test_room_positions_let_messages_without_a_position_through() -> None:
    positions = RoomPositions()
    plain = {"message": "m", "room": "r", "from": 0, "context": "user", "sentAt": 1}
    assert positions.observe(plain) is True
    assert positions.observe({**plain, "offset": True, "epoch": "e"}) is True
    assert positions.get("r") is None


def test_socket_client_takes_several_servers_as_host_port_text_or_tuples() -> None:
    client = SocketClient(["a.example:5001", "b.example", ("c.example", 5003), "[::1]:5004"])
    assert client.urls == [
        "tcp://a.example:5001",
        "tcp://b.example:5000",
        "tcp://c.example:5003",
        "tcp://[::1]:5004",
    ]
    assert (client.host, client.port) == ("a.example", 5001)


# with the server's history and presence events ------------------------------------------


@pytest.mark.needs_history
async def test_rejoining_after_a_restart_recovers_the_missed_messages_in_order(
    kind: str, redis_server: RedisProcess
) -> None:
    redis = ("--redis-url", redis_server.url)
    node = start_history_node(*redis)
    other = start_history_node(*redis)
    room = unique_room("recover")
    create_room(node.web_port, room)
    client = new_client(kind, node, backoff=FAST)
    record = Recorder(client)
    talker = new_client(kind, other)
    try:
        await client.connect()
        await talker.connect()
        await client.room_add(room)
        await talker.room_add(room)
        await talker.say(room, "before")
        await wait_for(lambda: record.heard("before"), 5, message="the first message")

        node.kill()
        await wait_for(lambda: record.disconnects, 5, message="the drop")
        for text in ("missed 1", "missed 2", "missed 3"):
            await talker.say(room, text)
        node = await asyncio.to_thread(
            start_history_node, *redis, socket_port=node.socket_port, web_port=node.web_port
        )
        await wait_for(lambda: record.reconnects, 15, message="the reconnect")
        await talker.say(room, "after")
        await wait_for(lambda: record.heard("after"), 5, message="the live message")

        texts = [m["message"] for m in record.said]
        assert texts == ["before", "missed 1", "missed 2", "missed 3", "after"]
        offsets = [m["offset"] for m in record.said]
        assert offsets == list(range(offsets[0], offsets[0] + 5))
        assert record.recovered == [(room, 3)] and record.unrecovered == []
    finally:
        await client.disconnect()
        await talker.disconnect()
        node.stop()
        other.stop()


@pytest.mark.needs_history
async def test_rejoining_after_the_history_was_lost_reports_unrecovered(kind: str) -> None:
    node = start_history_node()  # embedded store: a restart loses the history
    client = new_client(kind, node, backoff=FAST)
    record = Recorder(client)
    try:
        await client.connect()
        await client.room_add("defaultRoom")
        await client.say("defaultRoom", "before")
        await wait_for(lambda: record.heard("before"), 5, message="the first message")
        before = client.position("defaultRoom")
        assert before is not None

        node.kill()
        node = await asyncio.to_thread(
            start_history_node, socket_port=node.socket_port, web_port=node.web_port
        )
        await wait_for(lambda: record.reconnects, 15, message="the reconnect")
        assert record.unrecovered == [("defaultRoom", 0)] and record.recovered == []
        await client.say("defaultRoom", "after")
        await wait_for(lambda: record.heard("after"), 5, message="the new message")
        after = client.position("defaultRoom")
        assert after is not None and after.epoch != before.epoch
    finally:
        await client.disconnect()
        node.stop()


@pytest.mark.needs_history
async def test_presence_events_reach_the_presence_handlers(kind: str) -> None:
    node = start_history_node()
    room = unique_room("presence")
    create_room(node.web_port, room)
    watcher = new_client(kind, node)
    record = Recorder(watcher)
    joiner = new_client(kind, node)
    try:
        await watcher.connect()
        await watcher.room_add(room)
        await joiner.connect()
        joiner_id = (await joiner.details_view())["id"]
        await joiner.room_add(room)
        await joiner.room_leave(room)

        def seen(event: str) -> list[dict[str, Any]]:
            return [p for p in record.presence if p["event"] == event and p["id"] == joiner_id]

        await wait_for(lambda: seen("leave"), 5, message="the leave event")
        (join,) = seen("join")
        (leave,) = seen("leave")
        assert join["context"] == "presence" and join["room"] == room
        assert join["details"]["id"] == joiner_id
        assert isinstance(join["at"], int)
        assert "details" not in leave and leave["room"] == room
        assert record.said == []
    finally:
        await watcher.disconnect()
        await joiner.disconnect()
        node.stop()
