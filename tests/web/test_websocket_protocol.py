"""The WebSocket protocol end to end against a real ``roomcast start`` process."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websupport import WELCOME, RawWebSocket, create_room, now_ms, unique_room, wait_for

import roomcast
from support import LineClient, NodeProcess, start_node, wait_until

STATIC_DIR = Path(roomcast.__file__).parent / "static"


OpenWs = Callable[..., Awaitable[RawWebSocket]]


async def welcomed(open_ws: OpenWs, **options: Any) -> RawWebSocket:
    client = await open_ws(**options)
    assert await client.receive() == WELCOME
    return client


async def join(client: RawWebSocket, room: str) -> None:
    """``roomAdd``, failing the test unless the reply says the join succeeded."""
    reply = await client.request({"event": "roomAdd", "room": room})
    assert reply["status"] == "OK" and reply["data"] is True, reply


async def own_id(client: RawWebSocket) -> str:
    reply = await client.request({"event": "detailsView"})
    return str(reply["data"]["id"])


def tcp_observer(port: int, room: str) -> LineClient:
    """A TCP client in ``room``, to watch its members with ``members_of``."""
    observer = LineClient(port)
    observer.read()  # welcome
    assert observer.request(f"roomAdd {room}")["status"] == "OK"
    return observer


def members_of(observer: LineClient, room: str) -> set[str]:
    reply = observer.request(f"roomView {room}")
    assert reply["status"] == "OK", reply
    return set(reply["data"]["members"])


# welcome ---------------------------------------------------------------------------------


async def test_the_first_frame_is_the_welcome(open_ws: OpenWs) -> None:
    client = await open_ws()
    frame = await client.ws.receive(5)
    assert frame.type == aiohttp.WSMsgType.TEXT
    assert json.loads(frame.data) == {
        "welcome": "Hello! Welcome to the roomcast api",
        "context": "api",
    }


# roomAdd / roomLeave / roomView -----------------------------------------------------------


async def test_room_add_answers_ok_with_message_count_and_message_id(
    open_ws: OpenWs, room: str
) -> None:
    client = await welcomed(open_ws)
    reply = await client.request({"event": "roomAdd", "room": room, "messageId": "join-1"})
    assert reply == {
        "status": "OK",
        "context": "response",
        "data": True,
        "messageCount": 1,
        "messageId": "join-1",
    }


async def test_room_add_twice_is_refused_with_the_chat_error(open_ws: OpenWs, room: str) -> None:
    client = await welcomed(open_ws)
    await join(client, room)
    reply = await client.request({"event": "roomAdd", "room": room, "messageId": 2})
    assert reply == {
        "status": f"connection already in this room ({room})",
        "context": "response",
        "data": False,
        "messageCount": 2,
        "messageId": 2,
    }


async def test_room_add_of_a_missing_room_is_refused(open_ws: OpenWs) -> None:
    client = await welcomed(open_ws)
    reply = await client.request({"event": "roomAdd", "room": unique_room("missing")})
    assert reply == {
        "status": "room does not exist",
        "context": "response",
        "data": False,
        "messageCount": 1,
    }


async def test_room_leave_answers_ok_then_refuses_a_second_leave(
    open_ws: OpenWs, room: str
) -> None:
    client = await welcomed(open_ws)
    await join(client, room)
    assert await client.request({"event": "roomLeave", "room": room, "messageId": "l"}) == {
        "status": "OK",
        "context": "response",
        "data": True,
        "messageCount": 2,
        "messageId": "l",
    }
    assert await client.request({"event": "roomLeave", "room": room}) == {
        "status": f"connection not in this room ({room})",
        "context": "response",
        "data": False,
        "messageCount": 3,
    }


async def test_room_view_lists_the_members(open_ws: OpenWs, room: str) -> None:
    alice = await welcomed(open_ws)
    bob = await welcomed(open_ws)
    alice_id, bob_id = await own_id(alice), await own_id(bob)
    await join(alice, room)
    await join(bob, room)
    reply = await alice.request({"event": "roomView", "room": room, "messageId": "v"})
    members = reply["data"]["members"]
    assert reply == {
        "status": "OK",
        "context": "response",
        "messageCount": 3,
        "messageId": "v",
        "data": {"room": room, "membersCount": 2, "members": members},
    }
    assert set(members) == {alice_id, bob_id}
    for member_id, details in members.items():
        assert set(details) == {"id", "joinedAt"}
        assert details["id"] == member_id
        assert abs(details["joinedAt"] - now_ms()) < 60_000


async def test_room_view_of_a_room_the_connection_is_not_in_is_refused(
    open_ws: OpenWs, room: str
) -> None:
    client = await welcomed(open_ws)
    assert await client.request({"event": "roomView", "room": room}) == {
        "status": f"not member of room {room}",
        "context": "response",
        "data": False,
        "messageCount": 1,
    }


# say ------------------------------------------------------------------------------------


async def test_say_reaches_every_member_once_including_the_sender(
    open_ws: OpenWs, room: str
) -> None:
    alice = await welcomed(open_ws)
    bob = await welcomed(open_ws)
    alice_id = await own_id(alice)
    await join(alice, room)
    await join(bob, room)

    before = now_ms()
    reply = await alice.request(
        {"event": "say", "room": room, "message": "hello, bob", "messageId": "s1"}
    )
    assert reply == {
        "status": "OK",
        "context": "response",
        "data": None,
        "messageCount": 3,
        "messageId": "s1",
    }
    for client in (alice, bob):
        message = await client.next_chat()
        assert message == {
            "message": "hello, bob",
            "room": room,
            "from": alice_id,
            "context": "user",
            "sentAt": message["sentAt"],
        }
        assert before - 1000 <= message["sentAt"] <= now_ms() + 1000

    # Exactly once: the next chat message either of them gets is the next one said.
    await bob.request({"event": "say", "room": room, "message": "second"})
    for client in (alice, bob):
        assert (await client.next_chat())["message"] == "second"


async def test_say_keeps_a_json_message_as_it_was_sent(open_ws: OpenWs, room: str) -> None:
    client = await welcomed(open_ws)
    await join(client, room)
    await client.send({"event": "say", "room": room, "message": {"text": "hi", "n": [1, 2]}})
    assert (await client.next_chat())["message"] == {"text": "hi", "n": [1, 2]}


async def test_say_to_a_room_the_connection_is_not_in_is_refused(
    open_ws: OpenWs, room: str
) -> None:
    client = await welcomed(open_ws)
    assert await client.request({"event": "say", "room": room, "message": "x"}) == {
        "status": f"connection not in this room ({room})",
        "context": "response",
        "data": False,
        "messageCount": 1,
    }


# detailsView and the fingerprint ---------------------------------------------------------


async def test_details_view_describes_the_connection(open_ws: OpenWs, room: str) -> None:
    client = await welcomed(open_ws)
    await join(client, room)
    reply = await client.request({"event": "detailsView", "messageId": "d"})
    data = reply["data"]
    assert reply == {
        "status": "OK",
        "context": "response",
        "data": data,
        "messageCount": 2,
        "messageId": "d",
    }
    assert set(data) == {
        "id",
        "fingerprint",
        "remoteIP",
        "remotePort",
        "params",
        "connectedAt",
        "rooms",
        "totalActions",
        "pendingActions",
    }
    assert data["remoteIP"] == "127.0.0.1"
    assert isinstance(data["remotePort"], int) and data["remotePort"] > 0
    assert data["params"] == {}
    assert data["rooms"] == [room]
    assert abs(data["connectedAt"] - now_ms()) < 60_000
    assert data["pendingActions"] == 0


async def test_fingerprint_equals_the_id_without_a_session_cookie(open_ws: OpenWs) -> None:
    client = await welcomed(open_ws)
    data = (await client.request({"event": "detailsView"}))["data"]
    assert data["fingerprint"] == data["id"]


async def test_fingerprint_is_the_session_cookie_sent_on_the_upgrade(open_ws: OpenWs) -> None:
    client = await welcomed(open_ws, headers={"Cookie": "sessionID=browser-session-42"})
    data = (await client.request({"event": "detailsView"}))["data"]
    assert data["fingerprint"] == "browser-session-42"
    assert data["id"] != "browser-session-42"


async def test_two_connections_of_one_browser_share_the_fingerprint(open_ws: OpenWs) -> None:
    first = await welcomed(open_ws, headers={"Cookie": "sessionID=same-browser"})
    second = await welcomed(open_ws, headers={"Cookie": "sessionID=same-browser"})
    one = (await first.request({"event": "detailsView"}))["data"]
    two = (await second.request({"event": "detailsView"}))["data"]
    assert one["fingerprint"] == two["fingerprint"] == "same-browser"
    assert one["id"] != two["id"]


# documentation ----------------------------------------------------------------------------


async def test_documentation_lists_the_actions(open_ws: OpenWs) -> None:
    client = await welcomed(open_ws)
    reply = await client.request({"event": "documentation", "messageId": "doc"})
    data = reply["data"]
    assert reply == {
        "status": "OK",
        "context": "response",
        "data": data,
        "messageCount": 1,
        "messageId": "doc",
    }
    assert {"status", "createChatRoom"} <= set(data)
    assert data["createChatRoom"]["name"] == "createChatRoom"
    assert data["createChatRoom"]["inputs"] == {"name": {"required": True}}
    assert data["status"]["description"]


# action ----------------------------------------------------------------------------------


async def test_action_answers_with_the_action_response(
    open_ws: OpenWs, web_node: NodeProcess
) -> None:
    client = await welcomed(open_ws)
    reply = await client.request(
        {"event": "action", "params": {"action": "status"}, "messageId": "a1"}
    )
    assert reply["id"] == web_node.node_id
    assert reply["context"] == "response"
    assert reply["messageCount"] == 1
    assert reply["messageId"] == "a1"
    assert "error" not in reply


async def test_action_create_chat_room_then_room_exists(open_ws: OpenWs) -> None:
    client = await welcomed(open_ws)
    name = unique_room("created")
    assert await client.request(
        {"event": "action", "messageId": 1, "params": {"action": "createChatRoom", "name": name}}
    ) == {"didCreate": True, "context": "response", "messageCount": 1, "messageId": 1}
    assert await client.request(
        {"event": "action", "messageId": 2, "params": {"action": "createChatRoom", "name": name}}
    ) == {"error": "room exists", "context": "response", "messageCount": 2, "messageId": 2}


async def test_action_errors_are_replies_with_an_error_key(open_ws: OpenWs) -> None:
    client = await welcomed(open_ws)
    assert await client.request({"event": "action", "params": {"action": "noSuchAction"}}) == {
        "error": "unknown action or invalid apiVersion",
        "context": "response",
        "messageCount": 1,
    }
    assert await client.request({"event": "action", "params": {"action": "createChatRoom"}}) == {
        "error": "name is a required parameter for this action",
        "context": "response",
        "messageCount": 2,
    }


async def test_an_action_event_without_params_action_is_told_the_shape_to_send(
    open_ws: OpenWs,
) -> None:
    client = await welcomed(open_ws)
    assert await client.request({"event": "action", "messageId": "a1"}) == {
        "status": "error",
        "error": 'action is required: send {"event":"action","params":{"action":"<name>",…}}',
        "context": "response",
        "messageCount": 1,
        "messageId": "a1",
    }


async def test_params_are_not_sticky(open_ws: OpenWs) -> None:
    client = await welcomed(open_ws)
    name = unique_room("sticky")
    first = await client.request(
        {"event": "action", "params": {"action": "createChatRoom", "name": name}}
    )
    assert first["didCreate"] is True
    # The name given to the last request is not remembered for this one.
    second = await client.request({"event": "action", "params": {"action": "createChatRoom"}})
    assert second["error"] == "name is a required parameter for this action"
    details = await client.request({"event": "detailsView"})
    assert details["data"]["params"] == {}
    assert details["data"]["totalActions"] == 2


# key order, message counts and ids -------------------------------------------------------


async def test_key_order_does_not_matter(open_ws: OpenWs, room: str) -> None:
    client = await welcomed(open_ws)
    reply = await client.request(f'{{"messageId":"k","room":"{room}","event":"roomAdd"}}')
    assert reply == {
        "status": "OK",
        "context": "response",
        "data": True,
        "messageCount": 1,
        "messageId": "k",
    }
    reply = await client.request(
        f'{{"message":"ordered","messageId":"m","room":"{room}","event":"say"}}'
    )
    assert reply["status"] == "OK" and reply["messageId"] == "m"
    assert (await client.next_chat())["message"] == "ordered"


async def test_message_id_is_echoed_as_sent_and_absent_when_not_sent(open_ws: OpenWs) -> None:
    client = await welcomed(open_ws)
    for message_id in ("text-id", 17, 2.5, {"nested": [1]}, [1, "two"]):
        reply = await client.request({"event": "detailsView", "messageId": message_id})
        assert reply["messageId"] == message_id
    reply = await client.request({"event": "detailsView"})
    assert "messageId" not in reply


async def test_pipelined_requests_get_the_message_count_of_the_request_they_answer(
    open_ws: OpenWs, room: str
) -> None:
    client = await welcomed(open_ws)
    frames: list[dict[str, Any]] = [
        {"event": "action", "params": {"action": "status"}, "messageId": "r1"},
        {"event": "roomAdd", "room": room, "messageId": "r2"},
        {"event": "action", "params": {"action": "createChatRoom"}, "messageId": "r3"},
        {"event": "say", "room": room, "message": "pipelined", "messageId": "r4"},
        {"event": "detailsView", "messageId": "r5"},
        {"event": "action", "params": {"action": "status"}, "messageId": "r6"},
    ]
    for frame in frames:
        await client.send(frame)
    replies: dict[str, dict[str, Any]] = {}
    while len(replies) < len(frames):
        reply = await client.reply()
        replies[reply["messageId"]] = reply
    assert {key: reply["messageCount"] for key, reply in replies.items()} == {
        "r1": 1,
        "r2": 2,
        "r3": 3,
        "r4": 4,
        "r5": 5,
        "r6": 6,
    }
    assert replies["r2"]["status"] == "OK"  # the join before the say succeeded


# frames that are not requests -------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["[1, 2, 3]", '"a string"', "42", "null", "not json at all", '{"event": "roomAdd"']
)
async def test_a_frame_that_is_not_a_json_object_gets_a_clear_error(
    open_ws: OpenWs, room: str, text: str
) -> None:
    client = await welcomed(open_ws)
    reply = await client.request(text)
    assert reply == {
        "status": "error",
        "error": reply["error"],
        "context": "response",
        "messageCount": 1,
    }
    assert "JSON object" in reply["error"]
    # The connection keeps working, and the bad frame was counted.
    assert await client.request({"event": "roomAdd", "room": room}) == {
        "status": "OK",
        "context": "response",
        "data": True,
        "messageCount": 2,
    }


async def test_a_binary_frame_gets_a_clear_error_and_the_connection_keeps_working(
    open_ws: OpenWs, room: str
) -> None:
    client = await welcomed(open_ws)
    reply = await client.request(b'{"event": "detailsView"}')
    assert reply == {
        "status": "error",
        "error": "binary frames are not supported: send JSON text frames",
        "context": "response",
        "messageCount": 1,
    }
    assert (await client.request({"event": "roomAdd", "room": room}))["status"] == "OK"


async def test_an_unknown_event_is_refused_with_its_message_id(open_ws: OpenWs) -> None:
    client = await welcomed(open_ws)
    assert await client.request({"event": "dance", "messageId": "x"}) == {
        "status": "error",
        "error": "unknown event (dance)",
        "context": "response",
        "messageCount": 1,
        "messageId": "x",
    }
    reply = await client.request({"room": "r"})
    assert reply["status"] == "error" and reply["error"] == "unknown event (None)"


async def test_missing_event_arguments_get_the_chat_errors(open_ws: OpenWs, room: str) -> None:
    client = await welcomed(open_ws)
    assert await client.request({"event": "roomAdd"}) == {
        "status": "a room is required",
        "context": "response",
        "data": False,
        "messageCount": 1,
    }
    await join(client, room)
    assert await client.request({"event": "say", "room": room}) == {
        "status": "both room and message are required",
        "context": "response",
        "data": False,
        "messageCount": 3,
    }


async def test_action_params_that_are_not_an_object_are_refused(open_ws: OpenWs) -> None:
    client = await welcomed(open_ws)
    assert await client.request({"event": "action", "params": ["status"], "messageId": 9}) == {
        "status": "error",
        "error": "params must be a JSON object",
        "context": "response",
        "messageCount": 1,
        "messageId": 9,
    }


async def test_a_frame_over_the_size_limit_closes_the_connection_and_leaves_rooms(
    open_ws: OpenWs, web_node: NodeProcess, room: str
) -> None:
    observer = tcp_observer(web_node.socket_port, room)
    try:
        client = await welcomed(open_ws)
        client_id = await own_id(client)
        await join(client, room)
        # The server may close (and so reset) while the client is still writing.
        with contextlib.suppress(ConnectionError):
            await client.send({"event": "say", "room": room, "message": "x" * (2 << 20)})
        closing = await client.ws.receive(5)
        assert closing.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ), closing
        if closing.type == aiohttp.WSMsgType.CLOSE:
            assert closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await asyncio.to_thread(
            wait_until,
            lambda: client_id not in members_of(observer, room),
            5,
            message="the closed connection to leave the room",
        )
    finally:
        observer.close()


# file ------------------------------------------------------------------------------------


async def test_file_returns_a_public_file(open_ws: OpenWs) -> None:
    client = await welcomed(open_ws)
    expected = (STATIC_DIR / "chat.html").read_bytes()
    reply = await client.request({"event": "file", "file": "chat.html", "messageId": "f"})
    assert reply == {
        "content": expected.decode(),
        "mime": "text/html",
        "length": len(expected),
        "context": "response",
        "messageCount": 1,
        "messageId": "f",
    }


@pytest.mark.parametrize(
    "path",
    [
        "no-such-file.txt",
        "../api.py",
        "../../roomcast/api.py",
        "/etc/passwd",
        "static/../../api.py",
        "",
    ],
)
async def test_file_outside_the_public_directory_or_missing_is_not_found(
    open_ws: OpenWs, path: str
) -> None:
    client = await welcomed(open_ws)
    reply = await client.request({"event": "file", "file": path, "messageId": "f"})
    assert reply == {
        "error": f"That file is not found ({path})",
        "context": "response",
        "messageCount": 1,
        "messageId": "f",
    }


# quit and disconnects --------------------------------------------------------------------


async def test_quit_says_goodbye_closes_normally_and_leaves_the_rooms(
    open_ws: OpenWs, web_node: NodeProcess, room: str
) -> None:
    observer = tcp_observer(web_node.socket_port, room)
    try:
        client = await welcomed(open_ws)
        client_id = await own_id(client)
        await join(client, room)
        assert client_id in members_of(observer, room)

        await client.send({"event": "quit", "messageId": "bye"})
        assert await client.receive() == {"status": "Bye!", "context": "api"}
        closing = await client.ws.receive(5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert client.ws.close_code == 1000
        await asyncio.to_thread(
            wait_until,
            lambda: client_id not in members_of(observer, room),
            5,
            message="the quitter to leave the room",
        )
    finally:
        observer.close()


async def test_a_closed_websocket_leaves_its_rooms(
    open_ws: OpenWs, web_node: NodeProcess, room: str
) -> None:
    observer = tcp_observer(web_node.socket_port, room)
    try:
        client = await welcomed(open_ws)
        client_id = await own_id(client)
        await join(client, room)
        await client.ws.close()
        await asyncio.to_thread(
            wait_until,
            lambda: client_id not in members_of(observer, room),
            5,
            message="the closed connection to leave the room",
        )
    finally:
        observer.close()


# ping/pong liveness ----------------------------------------------------------------------


async def test_a_peer_that_stops_answering_pings_is_dropped_and_leaves_its_rooms(
    tmp_path: Path,
) -> None:
    config = tmp_path / "roomcast.toml"
    config.write_text("[web]\nheartbeat = 1.0\n")
    node = start_node("--config", str(config))
    room = unique_room("heartbeat")
    dead = live = None
    observer = None
    try:
        create_room(node.web_port, room)
        observer = tcp_observer(node.socket_port, room)

        # A client that answers pings (aiohttp does while it is reading) ...
        live = await RawWebSocket.open(node.web_port)
        assert await live.receive() == WELCOME
        live_id = await own_id(live)
        assert (await live.request({"event": "roomAdd", "room": room}))["status"] == "OK"
        live_reader = asyncio.create_task(live.ws.receive(60))
        # ... and one that never reads again, so never answers one.
        dead = await RawWebSocket.open(node.web_port, autoping=False)
        assert await dead.receive() == WELCOME
        dead_id = await own_id(dead)
        assert (await dead.request({"event": "roomAdd", "room": room}))["status"] == "OK"
        assert members_of(observer, room) >= {live_id, dead_id}

        started = asyncio.get_running_loop().time()
        await wait_for(
            lambda: asyncio.to_thread(lambda: dead_id not in members_of(observer, room)),
            timeout=10,
            interval=0.2,
            message="the unresponsive peer to be dropped",
        )
        assert asyncio.get_running_loop().time() - started < 8

        # The live client outlasts several heartbeats.
        await asyncio.sleep(max(0.0, 3.0 - (asyncio.get_running_loop().time() - started)))
        assert live_id in members_of(observer, room)
        assert not live_reader.done()
        live_reader.cancel()
    finally:
        for client in (dead, live):
            if client is not None:
                await client.close()
        if observer is not None:
            observer.close()
        node.stop()


async def test_a_name_on_the_websocket_url_is_the_members_display_name(node: NodeProcess) -> None:
    import aiohttp

    url = f"ws://127.0.0.1:{node.web_port}/ws?name=Ada"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.receive_json(timeout=5)  # the welcome
        await ws.send_json({"event": "roomAdd", "room": "defaultRoom", "messageId": 1})
        assert (await ws.receive_json(timeout=5))["status"] == "OK"
        await ws.send_json({"event": "roomView", "room": "defaultRoom", "messageId": 2})
        view = await ws.receive_json(timeout=5)
        assert [m.get("name") for m in view["data"]["members"].values()] == ["Ada"]
