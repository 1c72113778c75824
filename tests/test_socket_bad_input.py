"""Bad input on the TCP socket: each gets a clear error, and the node keeps serving.

Every test puts the misbehaving client and a bystander in one room, sends the bad input,
checks the error, then checks that chat in that room still reaches both of them.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support import LineClient, NodeProcess, start_node, wait_until

MIB = 1024 * 1024
MakePair = Callable[[str], tuple[LineClient, LineClient]]


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    process = start_node(web_port=0)  # default max_data_length: 1 MiB
    yield process
    assert process.stop() == 0


@pytest.fixture
def pair(node: NodeProcess) -> Iterator[MakePair]:
    """Make (offender, bystander), both already in ``room``."""
    opened: list[LineClient] = []

    def make(room: str) -> tuple[LineClient, LineClient]:
        clients = []
        for _ in range(2):
            client = LineClient(node.socket_port)
            client.read()  # welcome
            opened.append(client)
            clients.append(client)
        offender, bystander = clients
        offender.request(f'{{"action":"createChatRoom","params":{{"name":"{room}"}}}}')
        for client in clients:
            assert client.request(f"roomAdd {room}")["data"] is True
        return offender, bystander

    yield make
    for client in opened:
        client.close()


def is_chat(message: Any) -> bool:
    return isinstance(message, dict) and message.get("context") == "user"


def assert_room_still_chats(offender: LineClient, bystander: LineClient, room: str) -> None:
    """The bystander says something; both members receive it."""
    bystander.send_line(f"say {room} still serving")
    for client in (bystander, offender):
        assert client.read_until(is_chat)["message"] == "still serving"


def error_reply(error: str, count: int) -> dict[str, Any]:
    return {"status": "error", "error": error, "context": "response", "messageCount": count}


UNKNOWN_ACTION = "unknown action or invalid apiVersion"


# invalid UTF-8 --------------------------------------------------------------------------


def test_invalid_utf8_line_gets_an_error(pair: MakePair) -> None:
    offender, bystander = pair("bad-utf8")
    offender.send(b"say bad-utf8 \xc3\x28 broken\n")
    assert offender.read_raw_line() == (
        b'{"status":"error","error":"request is not valid UTF-8","context":"response",'
        b'"messageCount":3}'
    )
    assert_room_still_chats(offender, bystander, "bad-utf8")


def test_utf8_encoded_surrogate_is_invalid(pair: MakePair) -> None:
    offender, bystander = pair("surrogate")
    offender.send(b"say surrogate \xed\xa0\x80\n")
    assert offender.read() == error_reply("request is not valid UTF-8", 3)
    assert_room_still_chats(offender, bystander, "surrogate")


def test_invalid_utf8_is_not_relayed_to_the_room(pair: MakePair) -> None:
    offender, bystander = pair("no-relay")
    offender.send(b"say no-relay \xff\xfe\n")
    offender.read()
    assert_room_still_chats(offender, bystander, "no-relay")  # its first chat is this one


def test_non_ascii_utf8_chat_passes_through_unchanged(pair: MakePair) -> None:
    offender, bystander = pair("unicode")
    offender.send("say unicode héllo ☃ 💥\n".encode())
    assert bystander.read_until(is_chat)["message"] == "héllo ☃ 💥"


# binary garbage -------------------------------------------------------------------------


def test_binary_garbage_gets_only_errors_and_the_connection_keeps_working(pair: MakePair) -> None:
    offender, bystander = pair("garbage")
    # Deterministic noise without 0xff, so no telnet interrupt can appear in it.
    noise = random.Random(2024).randbytes(64 * 1024).replace(b"\xff", b"\xfe")
    offender.send(noise + b"\nparamAdd garbage=done\nparamView garbage\n")
    seen = []
    while True:
        reply = offender.read()
        if reply.get("data") == "done":
            break
        seen.append(reply)
    assert seen, "the garbage lines were answered"
    for reply in seen:
        if reply.get("status") == "OK":
            assert reply["data"] is None  # the paramAdd garbage=done line
        else:
            assert reply.get("error") or reply["status"] != "OK", reply
    assert_room_still_chats(offender, bystander, "garbage")


def test_nul_bytes_are_an_unknown_action(pair: MakePair) -> None:
    offender, bystander = pair("nul")
    offender.send(b"\x00\x00\x00\n")
    assert offender.read() == {"error": UNKNOWN_ACTION, "context": "response", "messageCount": 3}
    assert_room_still_chats(offender, bystander, "nul")


# endless line ---------------------------------------------------------------------------


def test_an_endless_line_gets_one_error_and_is_dropped(pair: MakePair) -> None:
    offender, bystander = pair("endless")
    offender.send(b"a" * (2 * MIB))
    reply = offender.read()
    match = re.fullmatch(r"data length is too big \((\d+) received/1048576 max\)", reply["error"])
    assert match is not None and MIB < int(match.group(1)) <= 2 * MIB
    assert reply["messageCount"] == 3
    offender.send(b"a" * MIB)  # still the same line: silently dropped
    offender.send(b"\nparamsView\n")
    assert offender.read() == {"status": "OK", "context": "response", "data": {}, "messageCount": 4}
    assert_room_still_chats(offender, bystander, "endless")


def test_a_complete_line_over_the_limit_names_its_size(pair: MakePair) -> None:
    offender, bystander = pair("long-line")
    offender.send(b"b" * (MIB + 10) + b"\n")
    assert offender.read() == error_reply(
        f"data length is too big ({MIB + 10} received/{MIB} max)", 3
    )
    assert_room_still_chats(offender, bystander, "long-line")


# JSON that is not a request -------------------------------------------------------------


@pytest.mark.parametrize(
    ("room", "line", "error"),
    [
        ("json-array", "[1,2,3]", "a JSON request must be an object"),
        ("json-string", '"just a string"', "a JSON request must be an object"),
        ("json-broken", "{broken json", "invalid JSON request"),
        ("json-action", '{"action":["status"]}', "action must be a string"),
        ("json-params", '{"action":"status","params":"x"}', "params must be a JSON object"),
    ],
)
def test_json_that_is_not_a_request_gets_an_error(
    pair: MakePair, room: str, line: str, error: str
) -> None:
    offender, bystander = pair(room)
    assert offender.request(line) == error_reply(error, 3)
    assert_room_still_chats(offender, bystander, room)


def test_a_json_object_without_an_action_is_an_unknown_action(pair: MakePair) -> None:
    offender, bystander = pair("no-action")
    assert offender.request("{}") == {
        "error": UNKNOWN_ACTION,
        "context": "response",
        "messageCount": 3,
    }
    assert_room_still_chats(offender, bystander, "no-action")


def test_a_json_number_is_an_unknown_action(pair: MakePair) -> None:
    offender, bystander = pair("number")
    assert offender.request("42") == {
        "error": UNKNOWN_ACTION,
        "context": "response",
        "messageCount": 3,
    }
    assert_room_still_chats(offender, bystander, "number")


# unknown verbs and actions --------------------------------------------------------------


def test_an_unknown_verb_is_an_unknown_action(pair: MakePair) -> None:
    offender, bystander = pair("unknown-verb")
    assert offender.request("roomJoin unknown-verb") == {
        "error": UNKNOWN_ACTION,
        "context": "response",
        "messageCount": 3,
    }
    assert_room_still_chats(offender, bystander, "unknown-verb")


def test_an_unknown_json_action_is_refused(pair: MakePair) -> None:
    offender, bystander = pair("unknown-action")
    assert offender.request('{"action":"selfDestruct","params":{}}') == {
        "error": UNKNOWN_ACTION,
        "context": "response",
        "messageCount": 3,
    }
    assert_room_still_chats(offender, bystander, "unknown-action")


# abrupt disconnects ---------------------------------------------------------------------


def test_a_client_reset_mid_line_leaves_its_room(pair: MakePair) -> None:
    offender, bystander = pair("reset")
    offender.send(b"say reset half a li")
    offender.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    offender.close()  # RST
    wait_until(
        lambda: bystander.request("roomView reset")["data"]["membersCount"] == 1,
        5,
        message="the reset client to leave the room",
    )
    bystander.send_line("say reset alone")
    assert bystander.read_until(is_chat)["message"] == "alone"


def test_a_client_that_never_reads_is_dropped_past_the_send_limit(
    pair: MakePair, node: NodeProcess
) -> None:
    offender, bystander = pair("never-reads")
    offender_id = offender.request("detailsView")["data"]["id"]
    offender.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with contextlib.suppress(OSError):  # the node may drop it while we are still sending
        offender.send(b"documentation\n" * 40_000)  # ~20 MB of replies, none read
    wait_until(
        lambda: f"disconnecting {offender_id}" in node.log,
        20,
        message="the node to drop the client that does not read",
    )
    wait_until(
        lambda: bystander.request("roomView never-reads")["data"]["membersCount"] == 1,
        5,
        message="the dropped client to leave the room",
    )
    bystander.send_line("say never-reads still here")
    assert bystander.read_until(is_chat)["message"] == "still here"


# the node afterwards --------------------------------------------------------------------


def test_node_is_alive_and_clean_after_all_the_bad_input(node: NodeProcess) -> None:
    assert node.process.poll() is None
    client = LineClient(node.socket_port)
    try:
        assert client.read() == {"welcome": "Hello! Welcome to the roomcast api", "context": "api"}
        assert client.request("status")["id"] == node.node_id
    finally:
        client.close()
    assert "Traceback" not in node.log
