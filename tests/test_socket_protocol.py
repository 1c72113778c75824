"""The TCP socket protocol, end to end against a real ``roomcast start`` process.

One node serves the whole module; each test opens its own clients (so messageCounts start
at 1) and uses its own room names.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from roomcast.api import STATIC_DIR
from support import LineClient, NodeProcess, start_node, wait_until

LIMIT = 1024
Connect = Callable[[], LineClient]

ACTIONS = """
import asyncio

import roomcast


class Echo(roomcast.Action):
    name = "echo"
    description = "Returns n."
    inputs = {"n": {"required": True}}

    async def run(self, data):
        data.response["n"] = data.params["n"]


class Slow(roomcast.Action):
    name = "slow"
    description = "Sleeps."
    inputs = {"seconds": {"default": 0.3, "formatter": float}}

    async def run(self, data):
        await asyncio.sleep(data.params["seconds"])
        data.response["slept"] = data.params["seconds"]


def refuse_vault(connection, room):
    if room == "vault":
        raise PermissionError("the vault is locked")


def refuse_forbidden(connection, room, payload):
    if payload["message"] == "forbidden words":
        raise ValueError("that is not allowed")


async def initialize(api):
    await api.chat_room.add("vault")
    api.chat_room.add_middleware(roomcast.ChatMiddleware(
        "guards", join=refuse_vault, on_say_receive=refuse_forbidden))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("site")
    public = root / "public"
    (public / "sub").mkdir(parents=True)
    (public / "hello.txt").write_bytes(b"roomcast public file")
    (public / "sub" / "inner.txt").write_bytes(b"inner \x00\xff bytes")
    (root / "secret.txt").write_bytes(b"top secret")
    (root / "actions").mkdir()
    (root / "actions" / "helpers.py").write_text(textwrap.dedent(ACTIONS))
    (root / "roomcast.toml").write_text(f"[socket]\nmax_data_length = {LIMIT}\n")
    return root


@pytest.fixture(scope="module")
def node(site: Path) -> Iterator[NodeProcess]:
    process = start_node(
        "--config",
        str(site / "roomcast.toml"),
        "--public",
        str(site / "public"),
        "--actions",
        str(site / "actions"),
        web_port=0,
    )
    yield process
    assert process.stop() == 0


@pytest.fixture
def connect(node: NodeProcess) -> Iterator[Connect]:
    """Open clients that have already read their welcome line; all closed afterwards."""
    opened: list[LineClient] = []

    def open_client() -> LineClient:
        client = LineClient(node.socket_port)
        client.read()  # welcome
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def raw_reply(client: LineClient, line: str) -> bytes:
    """Send ``line`` and return the next line the node sends, without its ``\\r\\n``."""
    client.send_line(line)
    return client.read_raw_line()


def read_bytes(client: LineClient, size: int) -> bytes:
    while len(client._buffer) < size:
        chunk = client.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        client._buffer += chunk
    data, client._buffer = client._buffer[:size], client._buffer[size:]
    return data


def connection_id(client: LineClient) -> str:
    return str(client.request("detailsView")["data"]["id"])


def chat(message: Any) -> bool:
    return isinstance(message, dict) and message.get("context") == "user"


def members_count(client: LineClient, room: str) -> int:
    return int(client.request(f"roomView {room}")["data"]["membersCount"])


# welcome and framing --------------------------------------------------------------------


def test_welcome_line_is_sent_on_connect_byte_for_byte(node: NodeProcess) -> None:
    client = LineClient(node.socket_port)
    try:
        expected = b'{"welcome":"Hello! Welcome to the roomcast api","context":"api"}\r\n'
        assert read_bytes(client, len(expected)) == expected
    finally:
        client.close()


def test_replies_end_in_crlf(connect: Connect) -> None:
    client = connect()
    client.send_line("paramsView")
    expected = b'{"status":"OK","context":"response","data":{},"messageCount":1}\r\n'
    assert read_bytes(client, len(expected)) == expected


def test_carriage_return_alone_ends_a_line(connect: Connect) -> None:
    client = connect()
    client.send("paramAdd a=1\rparamView a\r")
    assert client.read()["messageCount"] == 1
    assert client.read() == {"status": "OK", "context": "response", "data": "1", "messageCount": 2}


def test_empty_lines_are_ignored(connect: Connect) -> None:
    client = connect()
    client.send("\n\n\r\nparamsView\n")
    assert client.read() == {"status": "OK", "context": "response", "data": {}, "messageCount": 1}


def test_blank_lines_are_ignored_and_take_no_message_count(connect: Connect) -> None:
    client = connect()
    client.send("   \n\t\nparamsView\n")
    assert client.read() == {"status": "OK", "context": "response", "data": {}, "messageCount": 1}


# params ---------------------------------------------------------------------------------


def test_param_add_with_equals(connect: Connect) -> None:
    assert raw_reply(connect(), "paramAdd name=alice") == (
        b'{"status":"OK","context":"response","data":null,"messageCount":1}'
    )


def test_param_add_with_a_space(connect: Connect) -> None:
    client = connect()
    client.request("paramAdd name alice")
    assert raw_reply(client, "paramView name") == (
        b'{"status":"OK","context":"response","data":"alice","messageCount":2}'
    )


def test_param_view_of_an_unset_param_is_null(connect: Connect) -> None:
    assert raw_reply(connect(), "paramView nothing") == (
        b'{"status":"OK","context":"response","data":null,"messageCount":1}'
    )


def test_param_add_without_a_key_is_refused(connect: Connect) -> None:
    assert raw_reply(connect(), "paramAdd") == (
        b'{"status":"a param key is required","context":"response","data":false,"messageCount":1}'
    )


def test_param_delete_removes_one_param(connect: Connect) -> None:
    client = connect()
    client.request("paramAdd a=1")
    client.request("paramAdd b=2")
    assert raw_reply(client, "paramDelete a") == (
        b'{"status":"OK","context":"response","data":null,"messageCount":3}'
    )
    assert raw_reply(client, "paramsView") == (
        b'{"status":"OK","context":"response","data":{"b":"2"},"messageCount":4}'
    )


def test_params_view_shows_every_param(connect: Connect) -> None:
    client = connect()
    client.request("paramAdd a=1")
    client.request("paramAdd b=two words")
    assert raw_reply(client, "paramsView") == (
        b'{"status":"OK","context":"response","data":{"a":"1","b":"two words"},"messageCount":3}'
    )


def test_params_delete_clears_every_param(connect: Connect) -> None:
    client = connect()
    client.request("paramAdd a=1")
    assert raw_reply(client, "paramsDelete") == (
        b'{"status":"OK","context":"response","data":null,"messageCount":2}'
    )
    assert raw_reply(client, "paramsView") == (
        b'{"status":"OK","context":"response","data":{},"messageCount":3}'
    )


def test_sticky_params_feed_an_action_called_by_name(connect: Connect) -> None:
    client = connect()
    client.request("paramAdd name=sticky-room")
    assert raw_reply(client, "createChatRoom") == (
        b'{"didCreate":true,"context":"response","messageCount":2}'
    )
    assert raw_reply(client, "createChatRoom") == (
        b'{"error":"room exists","context":"response","messageCount":3}'
    )


def test_sticky_params_stay_until_deleted(connect: Connect) -> None:
    client = connect()
    client.request("paramAdd n=7")
    assert client.request("echo")["n"] == "7"
    assert client.request("echo")["n"] == "7"
    client.request("paramDelete n")
    assert client.request("echo")["error"] == "n is a required parameter for this action"


# actions --------------------------------------------------------------------------------


def test_json_action_line(connect: Connect) -> None:
    assert raw_reply(connect(), '{"action":"createChatRoom","params":{"name":"json-room"}}') == (
        b'{"didCreate":true,"context":"response","messageCount":1}'
    )


def test_json_action_line_uses_its_own_params_not_the_sticky_ones(connect: Connect) -> None:
    client = connect()
    client.request("paramAdd name=never-used")
    assert raw_reply(client, '{"action":"createChatRoom","params":{}}') == (
        b'{"error":"name is a required parameter for this action","context":"response",'
        b'"messageCount":2}'
    )


def test_action_called_by_name_without_params_reports_the_missing_input(connect: Connect) -> None:
    assert raw_reply(connect(), "createChatRoom") == (
        b'{"error":"name is a required parameter for this action","context":"response",'
        b'"messageCount":1}'
    )


def test_unknown_action(connect: Connect) -> None:
    assert raw_reply(connect(), "launchRockets") == (
        b'{"error":"unknown action or invalid apiVersion","context":"response","messageCount":1}'
    )


def test_status_action(connect: Connect, node: NodeProcess) -> None:
    reply = connect().request("status")
    assert reply["id"] == node.node_id
    assert reply["messageCount"] == 1
    assert reply["connections"] >= 1


def test_detailsview_counts_actions(connect: Connect) -> None:
    client = connect()
    client.request("status")
    client.request("status")
    details = client.request("detailsView")["data"]
    assert (details["totalActions"], details["pendingActions"]) == (2, 0)


def test_too_many_pending_actions_over_the_wire(connect: Connect) -> None:
    client = connect()
    client.send('{"action":"slow","params":{"seconds":0.5}}\n' * 6)
    replies = sorted((client.read() for _ in range(6)), key=lambda r: r["messageCount"])
    assert replies[:5] == [
        {"slept": 0.5, "context": "response", "messageCount": n} for n in range(1, 6)
    ]
    assert replies[5] == {
        "error": "you have too many pending requests",
        "context": "response",
        "messageCount": 6,
    }


# messageCount ---------------------------------------------------------------------------


def test_a_slow_action_reply_keeps_its_own_message_count(connect: Connect) -> None:
    client = connect()
    client.send("slow\nparamsView\n")
    assert client.read() == {"status": "OK", "context": "response", "data": {}, "messageCount": 2}
    assert client.read() == {"slept": 0.3, "context": "response", "messageCount": 1}


def test_many_pipelined_lines_in_one_write_each_get_their_own_message_count(
    connect: Connect,
) -> None:
    total = 3000  # well past the lines a connection may queue before reading pauses
    client = connect()
    lines = []
    # One sticky param rewritten (max_params stays far away) and an action in ten lines
    # (300 actions: within action_rate's burst of 400).
    for n in range(1, total + 1):
        if n % 3 == 1:
            lines.append(f"paramAdd k=v{n}")
        elif n % 3 == 2:
            lines.append("paramView k")
        elif n % 10 == 0:
            lines.append(f'{{"action":"echo","params":{{"n":{n}}}}}')
        else:
            lines.append("paramsView")
    client.send("\n".join(lines) + "\n")
    replies = {}
    for _ in lines:
        reply = client.read()
        replies[reply["messageCount"]] = reply
    assert sorted(replies) == list(range(1, total + 1))
    for n, reply in replies.items():
        if n % 3 == 1:
            assert reply == {"status": "OK", "context": "response", "data": None, "messageCount": n}
        elif n % 3 == 2:
            assert reply == {
                "status": "OK",
                "context": "response",
                "data": f"v{n - 1}",
                "messageCount": n,
            }
        elif n % 10 == 0:
            assert reply == {"n": n, "context": "response", "messageCount": n}
        else:
            assert reply == {
                "status": "OK",
                "context": "response",
                "data": {"k": f"v{n - 2}"},
                "messageCount": n,
            }


def test_room_add_then_say_in_one_write_are_answered_in_order(connect: Connect) -> None:
    client = connect()
    client.send_line('{"action":"createChatRoom","params":{"name":"one-write"}}')
    client.read()
    client.send("roomAdd one-write\nsay one-write quick\n")
    messages = [client.read() for _ in range(3)]
    replies = [m for m in messages if m["context"] == "response"]
    assert [(r["status"], r["messageCount"]) for r in replies] == [("OK", 2), ("OK", 3)]
    assert [m["message"] for m in messages if chat(m)] == ["quick"]


# max_data_length ------------------------------------------------------------------------


def test_a_line_over_max_data_length_is_refused_and_dropped(connect: Connect) -> None:
    client = connect()
    assert raw_reply(client, "x" * 2000) == (
        b'{"status":"error","error":"data length is too big (2000 received/1024 max)",'
        b'"context":"response","messageCount":1}'
    )
    assert raw_reply(client, "paramsView") == (
        b'{"status":"OK","context":"response","data":{},"messageCount":2}'
    )


def test_a_line_of_exactly_max_data_length_is_accepted(connect: Connect) -> None:
    client = connect()
    line = "paramAdd k="
    line += "v" * (LIMIT - len(line))
    assert len(line) == LIMIT
    assert client.request(line) == {
        "status": "OK",
        "context": "response",
        "data": None,
        "messageCount": 1,
    }


def test_an_unterminated_buffer_over_max_data_length_is_refused(connect: Connect) -> None:
    client = connect()
    client.send("y" * 3000)
    reply = client.read()
    match = re.fullmatch(r"data length is too big \((\d+) received/1024 max\)", reply["error"])
    assert match is not None and 1024 < int(match.group(1)) <= 3000
    assert {k: v for k, v in reply.items() if k != "error"} == {
        "status": "error",
        "context": "response",
        "messageCount": 1,
    }
    # The rest of that line is dropped silently; the next line is answered.
    client.send("y" * 500 + "\nparamsView\n")
    assert client.read() == {"status": "OK", "context": "response", "data": {}, "messageCount": 2}


# rooms ----------------------------------------------------------------------------------


def test_room_add(connect: Connect) -> None:
    assert raw_reply(connect(), "roomAdd defaultRoom") == (
        b'{"status":"OK","context":"response","data":true,"messageCount":1}'
    )


def test_room_add_twice_is_refused(connect: Connect) -> None:
    client = connect()
    client.request("roomAdd defaultRoom")
    assert raw_reply(client, "roomAdd defaultRoom") == (
        b'{"status":"connection already in this room (defaultRoom)","context":"response",'
        b'"data":false,"messageCount":2}'
    )


def test_room_add_of_an_unknown_room_is_refused(connect: Connect) -> None:
    assert raw_reply(connect(), "roomAdd no-such-room") == (
        b'{"status":"room does not exist","context":"response","data":false,"messageCount":1}'
    )


def test_room_add_refused_by_join_middleware_carries_its_text(connect: Connect) -> None:
    assert raw_reply(connect(), "roomAdd vault") == (
        b'{"status":"the vault is locked","context":"response","data":false,"messageCount":1}'
    )


def test_room_leave(connect: Connect) -> None:
    client = connect()
    client.request("roomAdd defaultRoom")
    assert raw_reply(client, "roomLeave defaultRoom") == (
        b'{"status":"OK","context":"response","data":true,"messageCount":2}'
    )
    assert client.request("detailsView")["data"]["rooms"] == []


def test_room_leave_of_a_room_not_joined_is_refused(connect: Connect) -> None:
    assert raw_reply(connect(), "roomLeave defaultRoom") == (
        b'{"status":"connection not in this room (defaultRoom)","context":"response",'
        b'"data":false,"messageCount":1}'
    )


def test_room_view_shows_the_members(connect: Connect) -> None:
    client = connect()
    client.request('{"action":"createChatRoom","params":{"name":"view-room"}}')
    client.request("roomAdd view-room")
    me = connection_id(client)
    reply = client.request("roomView view-room")
    joined_at = reply["data"]["members"][me]["joinedAt"]
    assert isinstance(joined_at, int)
    assert reply == {
        "status": "OK",
        "context": "response",
        "messageCount": 4,
        "data": {
            "room": "view-room",
            "membersCount": 1,
            "members": {me: {"joinedAt": joined_at, "id": me}},
        },
    }


def test_room_view_of_a_room_not_joined_is_refused(connect: Connect) -> None:
    assert raw_reply(connect(), "roomView defaultRoom") == (
        b'{"status":"not member of room defaultRoom","context":"response","data":false,'
        b'"messageCount":1}'
    )


def test_details_view(connect: Connect) -> None:
    client = connect()
    client.request("paramAdd a=1")
    client.request("roomAdd defaultRoom")
    before = int(time.time() * 1000)
    details = client.request("detailsView")
    data = details["data"]
    assert list(data) == [
        "id",
        "fingerprint",
        "remoteIP",
        "remotePort",
        "params",
        "connectedAt",
        "rooms",
        "totalActions",
        "pendingActions",
    ]
    assert data["fingerprint"] == data["id"]
    assert data["remoteIP"] == "127.0.0.1"
    assert data["remotePort"] == client.sock.getsockname()[1]
    assert data["params"] == {"a": "1"}
    assert data["rooms"] == ["defaultRoom"]
    assert before - 60_000 < data["connectedAt"] <= before
    assert (details["status"], details["context"], details["messageCount"]) == ("OK", "response", 3)


def test_documentation_lists_the_actions(connect: Connect) -> None:
    reply = connect().request("documentation")
    assert (reply["status"], reply["messageCount"]) == ("OK", 1)
    assert {"status", "createChatRoom", "echo", "slow"} <= set(reply["data"])
    assert reply["data"]["createChatRoom"] == {
        "name": "createChatRoom",
        "description": "Create a chat room; fails with 'room exists' when it already does.",
        "inputs": {"name": {"required": True}},
    }
    assert reply["data"]["slow"]["inputs"] == {"seconds": {"required": False, "default": 0.3}}


# chat -----------------------------------------------------------------------------------


def test_say_reaches_every_member_including_the_sender(connect: Connect) -> None:
    clients = [connect() for _ in range(3)]
    clients[0].request('{"action":"createChatRoom","params":{"name":"chat-all"}}')
    for client in clients:
        assert client.request("roomAdd chat-all")["data"] is True
    sender = connection_id(clients[0])
    clients[0].send_line("say chat-all hello big world")
    pattern = re.compile(
        rb'\{"message":"hello big world","room":"chat-all","from":"'
        + re.escape(sender.encode())
        + rb'","context":"user","sentAt":\d{13}\}'
    )
    for client in clients:
        line = client.read_raw_line()
        while not line.startswith(b'{"message"'):
            line = client.read_raw_line()
        assert pattern.fullmatch(line), line


def test_say_is_answered_ok(connect: Connect) -> None:
    client = connect()
    client.request("roomAdd defaultRoom")
    client.send_line("say defaultRoom hi")
    reply = client.read_until(lambda m: m.get("context") == "response")
    assert reply == {"status": "OK", "context": "response", "data": None, "messageCount": 2}


def test_say_does_not_reach_other_rooms(connect: Connect) -> None:
    speaker, listener = connect(), connect()
    speaker.request('{"action":"createChatRoom","params":{"name":"chat-a"}}')
    speaker.request('{"action":"createChatRoom","params":{"name":"chat-b"}}')
    speaker.request("roomAdd chat-a")
    listener.request("roomAdd chat-b")
    speaker.request("say chat-a not for b")
    listener.send_line("say chat-b for b")
    first_chat = listener.read_until(chat)
    assert first_chat["message"] == "for b"


def test_say_in_a_room_not_joined_is_refused(connect: Connect) -> None:
    assert raw_reply(connect(), "say defaultRoom hello") == (
        b'{"status":"connection not in this room (defaultRoom)","context":"response",'
        b'"data":false,"messageCount":1}'
    )


def test_say_without_a_message_is_refused(connect: Connect) -> None:
    client = connect()
    client.request("roomAdd defaultRoom")
    assert raw_reply(client, "say defaultRoom") == (
        b'{"status":"both room and message are required","context":"response",'
        b'"data":false,"messageCount":2}'
    )


def test_say_refused_by_on_say_receive_reaches_nobody_and_tells_the_sender(
    connect: Connect,
) -> None:
    speaker, listener = connect(), connect()
    speaker.request('{"action":"createChatRoom","params":{"name":"guarded-chat"}}')
    speaker.request("roomAdd guarded-chat")
    listener.request("roomAdd guarded-chat")
    assert speaker.request("say guarded-chat forbidden words") == {
        "status": "that is not allowed",
        "context": "response",
        "data": False,
        "messageCount": 3,
    }
    speaker.request("say guarded-chat fine words")
    assert listener.read_until(chat)["message"] == "fine words"


def test_a_closed_client_leaves_its_rooms(connect: Connect) -> None:
    watcher, leaver = connect(), connect()
    watcher.request('{"action":"createChatRoom","params":{"name":"leaving"}}')
    watcher.request("roomAdd leaving")
    leaver.request("roomAdd leaving")
    assert members_count(watcher, "leaving") == 2
    leaver.close()
    wait_until(lambda: members_count(watcher, "leaving") == 1, 5, message="member removed")


# quit / exit / telnet -------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["quit", "exit"])
def test_quit_and_exit_say_bye_and_close(connect: Connect, verb: str) -> None:
    client = connect()
    assert raw_reply(client, verb) == b'{"status":"Bye!","context":"api"}'
    assert client.is_closed()


@pytest.mark.parametrize("keys", [b"\xff\xf4\xff\xfd\x06", b"\x04"], ids=["ctrl-c", "ctrl-d"])
def test_telnet_interrupt_closes_the_connection(connect: Connect, keys: bytes) -> None:
    watcher, client = connect(), connect()
    watcher.request('{"action":"createChatRoom","params":{"name":"telnet-' + keys.hex() + '"}}')
    watcher.request(f"roomAdd telnet-{keys.hex()}")
    client.request(f"roomAdd telnet-{keys.hex()}")
    client.send(keys)
    assert client.is_closed()
    wait_until(
        lambda: members_count(watcher, f"telnet-{keys.hex()}") == 1, 5, message="member removed"
    )


# file -----------------------------------------------------------------------------------


def test_file_sends_the_raw_bytes(connect: Connect) -> None:
    client = connect()
    client.send_line("file hello.txt")
    assert read_bytes(client, len(b"roomcast public file")) == b"roomcast public file"
    assert client.request("paramsView")["messageCount"] == 2


def test_file_in_a_subdirectory_with_binary_content(connect: Connect) -> None:
    client = connect()
    client.send_line("file sub/inner.txt")
    assert read_bytes(client, 14) == b"inner \x00\xff bytes"


def test_file_falls_back_to_the_built_in_public_files(connect: Connect) -> None:
    expected = (STATIC_DIR / "roomcast.js").read_bytes()
    client = connect()
    client.send_line("file roomcast.js")
    assert read_bytes(client, len(expected)) == expected


def test_file_not_found(connect: Connect) -> None:
    assert raw_reply(connect(), "file missing.txt") == b'"That file is not found (missing.txt)"'


def test_file_cannot_escape_the_public_directory(connect: Connect) -> None:
    client = connect()
    assert raw_reply(client, "file ../secret.txt") == (b'"That file is not found (../secret.txt)"')
    assert raw_reply(client, "file sub/../../secret.txt") == (
        b'"That file is not found (sub/../../secret.txt)"'
    )


def test_file_absolute_path_stays_inside_the_public_directory(connect: Connect, site: Path) -> None:
    secret = str(site / "secret.txt")
    assert raw_reply(connect(), f"file {secret}") == (
        b'"That file is not found (' + secret.encode() + b')"'
    )
