"""The per-request limits of ``[limits]`` on the TCP wire, end to end against real
``roomcast start`` processes, and the chat-room API's side of them on an in-process node.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from roomcast import ChatMiddleware
from roomcast.chat.errors import InvalidRoomName, MessageTooLong
from roomcast.config import Config, LimitsSettings
from roomcast.testing import TestNode
from support import LineClient, NodeProcess, RedisProcess, start_node, wait_until

TOO_FAST = "you are sending too fast"


def verb_reply(status: str, count: int, data: Any = False) -> dict[str, Any]:
    return {"status": status, "context": "response", "data": data, "messageCount": count}


def node_with_limits(tmp_path: Path, limits: str, *extra: str) -> NodeProcess:
    config = tmp_path / "roomcast.toml"
    config.write_text(f"[limits]\n{limits}\n")
    return start_node("--config", str(config), *extra, web_port=0)


@pytest.fixture(scope="module")
def default_node() -> Iterator[NodeProcess]:
    """A node with every limit at its default."""
    process = start_node(web_port=0)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def tight_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node with small rates and a small room limit per connection."""
    process = node_with_limits(
        tmp_path_factory.mktemp("tight"),
        "say_rate = 5\naction_rate = 5\nmax_rooms_per_connection = 3",
    )
    yield process
    process.stop()


@pytest.fixture
def connect() -> Iterator[Callable[[NodeProcess], LineClient]]:
    """``connect(node)`` opens a client that has read its welcome; all closed afterwards."""
    opened: list[LineClient] = []

    def open_client(node: NodeProcess) -> LineClient:
        client = LineClient(node.socket_port)
        client.read()  # welcome
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def replies(client: LineClient, count: int) -> list[dict[str, Any]]:
    """The next ``count`` replies (``context: response``), chat messages stepped over."""
    return [
        client.read_until(lambda m: isinstance(m, dict) and m.get("context") == "response")
        for _ in range(count)
    ]


# room names -----------------------------------------------------------------------------


def test_room_add_of_a_name_over_255_bytes_is_an_invalid_room_name(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(default_node)
    assert client.request("roomAdd " + "é" * 128) == verb_reply("invalid room name", 1)


def test_room_add_of_a_name_with_a_control_character_is_an_invalid_room_name(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(default_node)
    assert client.request("roomAdd bad\x01name") == verb_reply("invalid room name", 1)
    assert client.request("roomAdd bad\x7fname") == verb_reply("invalid room name", 2)


def test_room_add_without_a_name_is_still_a_room_is_required(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    assert connect(default_node).request("roomAdd") == verb_reply("a room is required", 1)


def test_say_to_an_invalid_room_name_is_refused_as_invalid_not_as_not_a_member(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(default_node)
    assert client.request("say bad\x1bname hello") == verb_reply("invalid room name", 1)


def test_create_chat_room_with_an_invalid_name_is_refused(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(default_node)
    reply = client.request(json.dumps({"action": "createChatRoom", "params": {"name": "a\tb"}}))
    assert reply == {"error": "invalid room name", "context": "response", "messageCount": 1}


# rooms ----------------------------------------------------------------------------------


def test_room_add_past_100_rooms_is_refused_with_too_many_rooms(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(default_node)
    rooms = [f"hundred-{n}" for n in range(101)]
    for room in rooms:  # one at a time: pipelined actions would pass simultaneous_actions
        create = json.dumps({"action": "createChatRoom", "params": {"name": room}})
        assert client.request(create)["didCreate"] is True
    client.send("".join(f"roomAdd {room}\n" for room in rooms))
    answered = replies(client, 101)
    assert [r["status"] for r in answered] == ["OK"] * 100 + ["too many rooms (100 max)"]
    assert answered[-1] == verb_reply("too many rooms (100 max)", 202)
    assert client.request("roomLeave hundred-0")["status"] == "OK"
    assert client.request("roomAdd hundred-100")["status"] == "OK"


def test_create_chat_room_past_max_rooms_is_refused_and_an_existing_room_still_exists(
    tmp_path: Path, connect: Callable[[NodeProcess], LineClient]
) -> None:
    node = node_with_limits(tmp_path, "max_rooms = 3")  # defaultRoom is the first
    try:
        client = connect(node)

        def create(name: str) -> dict[str, Any]:
            reply: dict[str, Any] = client.request(
                json.dumps({"action": "createChatRoom", "params": {"name": name}})
            )
            return reply

        assert create("second")["didCreate"] is True
        assert create("third")["didCreate"] is True
        assert create("fourth") == {
            "error": "room limit reached (3 rooms)",
            "context": "response",
            "messageCount": 3,
        }
        assert create("third")["error"] == "room exists"
        assert client.request("status")["rooms"] == 3
    finally:
        node.stop()


# messages -------------------------------------------------------------------------------


def test_a_say_of_a_megabyte_of_control_bytes_is_refused_by_its_escaped_size(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    sender, member = connect(default_node), connect(default_node)
    for client in (sender, member):
        assert client.request("roomAdd defaultRoom")["status"] == "OK"
    # 1,000,000 bytes of \x01 encode to 6,000,000 bytes of \u0001, plus the quotes.
    reply = sender.request("say defaultRoom " + "\x01" * 1_000_000)
    assert reply == verb_reply("message is too long (6000002 > 65536 bytes)", 2)
    assert sender.request("say defaultRoom after")["status"] == "OK"
    first = member.read_until(lambda m: m.get("context") == "user")
    assert first["message"] == "after"  # the refused say reached nobody


def test_a_say_of_exactly_the_message_limit_is_delivered_and_one_byte_more_is_not(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(default_node)
    assert client.request("roomAdd defaultRoom")["status"] == "OK"
    assert client.request("say defaultRoom " + "a" * 65534)["status"] == "OK"
    assert client.request("say defaultRoom " + "a" * 65535) == verb_reply(
        "message is too long (65537 > 65536 bytes)", 3
    )


# rates ----------------------------------------------------------------------------------


def test_says_over_the_say_rate_are_answered_too_fast_and_the_connection_stays(
    tight_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(tight_node)
    assert client.request("roomAdd defaultRoom")["status"] == "OK"
    client.send("say defaultRoom hi\n" * 15)  # burst = 2 x 5/s
    answered = replies(client, 15)
    assert [r["status"] for r in answered] == ["OK"] * 10 + [TOO_FAST] * 5
    assert answered[10] == verb_reply(TOO_FAST, 12)
    time.sleep(0.25)  # one token back at 5/s
    assert client.request("say defaultRoom again")["status"] == "OK"


def test_actions_over_the_action_rate_are_answered_too_fast_in_error(
    tight_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(tight_node)
    # One at a time: pipelined actions would also meet simultaneous_actions.
    answered = [client.request("status") for _ in range(15)]
    assert ["error" in r for r in answered] == [False] * 10 + [True] * 5
    assert answered[10] == {"error": TOO_FAST, "context": "response", "messageCount": 11}
    time.sleep(0.25)
    assert "error" not in client.request("status")


def test_verbs_other_than_say_are_not_held_to_the_say_rate(
    tight_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(tight_node)
    client.send("detailsView\n" * 30)
    assert [r["status"] for r in replies(client, 30)] == ["OK"] * 30


# params ---------------------------------------------------------------------------------


def test_param_add_past_64_params_is_refused_and_an_existing_key_may_change(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(default_node)
    client.send("".join(f"paramAdd k{n}=v\n" for n in range(65)))
    answered = replies(client, 65)
    assert [r["status"] for r in answered] == ["OK"] * 64 + ["too many params (64 max)"]
    assert client.request("paramAdd k0=changed")["status"] == "OK"
    assert len(client.request("paramsView")["data"]) == 64


def test_param_add_of_a_value_over_4096_encoded_bytes_is_refused(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(default_node)
    assert client.request("paramAdd k=" + "v" * 4094)["status"] == "OK"  # 4096 with quotes
    assert client.request("paramAdd k=" + "v" * 4095) == verb_reply(
        "param is too long (4097 > 4096 bytes)", 2
    )
    assert client.request("paramView k")["data"] == "v" * 4094


def test_a_json_action_with_too_many_params_is_refused(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(default_node)
    params = {f"p{n}": n for n in range(65)}
    reply = client.request(json.dumps({"action": "status", "params": params}))
    assert reply == {"error": "too many params (64 max)", "context": "response", "messageCount": 1}


def test_a_json_action_with_a_param_too_long_is_refused(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(default_node)
    reply = client.request(json.dumps({"action": "status", "params": {"big": "\x00" * 1000}}))
    assert reply == {
        "error": "param is too long (6002 > 4096 bytes)",
        "context": "response",
        "messageCount": 1,
    }


def test_details_view_stays_small_after_param_floods(
    default_node: NodeProcess, connect: Callable[[NodeProcess], LineClient]
) -> None:
    client = connect(default_node)
    client.send("".join(f"paramAdd {n}={'x' * 5000}\n" for n in range(100)))
    client.send("".join(f"paramAdd k{n}=v\n" for n in range(100)))
    replies(client, 200)
    details = client.request("detailsView")
    assert len(json.dumps(details)) < 64 * 4096


# the chat-room API ----------------------------------------------------------------------


@pytest.fixture
async def node() -> AsyncIterator[TestNode]:
    async with TestNode() as running:
        yield running


async def test_broadcast_of_a_message_over_the_limit_runs_no_middleware(node: TestNode) -> None:
    seen: list[str] = []
    node.api.chat_room.add_middleware(
        ChatMiddleware("watch", on_say_receive=lambda c, room, payload: seen.append(room))
    )
    member = await node.connect()
    await member.verb("roomAdd", room="defaultRoom")
    with pytest.raises(MessageTooLong, match=r"^message is too long \(70002 > 65536 bytes\)$"):
        await node.api.chat_room.broadcast({}, "defaultRoom", "m" * 70000)
    assert seen == []
    assert member.chat_messages() == []


async def test_on_say_receive_middleware_that_grows_the_payload_past_the_limit_is_refused(
    node: TestNode,
) -> None:
    def grow(connection: Any, room: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "extra": "x" * 70000}

    node.api.chat_room.add_middleware(ChatMiddleware("grow", on_say_receive=grow))
    member = await node.connect()
    await member.verb("roomAdd", room="defaultRoom")
    with pytest.raises(MessageTooLong, match=r"^message is too long \(70015 > 65536 bytes\)$"):
        await node.api.chat_room.broadcast({}, "defaultRoom", "hi")
    assert member.chat_messages() == []


async def test_a_message_at_the_limit_passes_middleware_that_keeps_the_payload(
    node: TestNode,
) -> None:
    node.api.chat_room.add_middleware(
        ChatMiddleware("keep", on_say_receive=lambda c, room, payload: payload)
    )
    member = await node.connect()
    await member.verb("roomAdd", room="defaultRoom")
    await node.api.chat_room.broadcast({}, "defaultRoom", "a" * 65534)
    assert [len(m["message"]) for m in member.chat_messages()] == [65534]


async def test_broadcast_from_a_mock_to_an_invalid_room_name_is_refused(node: TestNode) -> None:
    with pytest.raises(InvalidRoomName):
        await node.api.chat_room.broadcast({"rooms": ["a\nb"]}, "a\nb", "hi")


async def test_a_closing_connection_leaves_a_thousand_rooms_in_well_under_a_second() -> None:
    config = Config(limits=LimitsSettings(max_rooms_per_connection=0))
    async with TestNode(config, id="leave-all-node") as node:
        chat = node.api.chat_room
        connection = await node.connect()
        rooms = [f"r{n}" for n in range(1000)]
        for room in rooms:
            await chat.add(room)
            await chat.add_member(connection.id, room)
        start = time.perf_counter()
        await connection.destroy()
        elapsed = time.perf_counter() - start
        assert list(connection.rooms) == []
        assert len(chat.index) == 0
        assert (await chat.room_status("r999"))["membersCount"] == 0
        assert elapsed < 0.5, elapsed


async def test_leave_middleware_runs_for_every_room_on_close_and_cannot_refuse(
    node: TestNode,
) -> None:
    left: list[str] = []

    def refuse(connection: Any, room: str) -> None:
        left.append(room)
        raise PermissionError("stay")

    node.api.chat_room.add_middleware(ChatMiddleware("refuse", leave=refuse))
    connection = await node.connect()
    for room in ("a", "b", "c"):
        await node.api.chat_room.add(room)
        await connection.verb("roomAdd", room=room)
    await connection.destroy()
    assert left == ["a", "b", "c"]
    assert (await node.api.chat_room.room_status("b"))["membersCount"] == 0


# Redis work -----------------------------------------------------------------------------


def _command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def test_invalid_room_names_cost_no_redis_command(
    redis_server: RedisProcess, tmp_path: Path, connect: Callable[[NodeProcess], LineClient]
) -> None:
    node = node_with_limits(tmp_path, "max_rooms = 100", "--redis-url", redis_server.url)
    store = redis.Redis(port=redis_server.port)
    try:
        client = connect(node)
        store.config_resetstat()
        assert client.request("roomAdd bad\x00name")["status"] == "invalid room name"
        assert client.request("say bad\x00name hi")["status"] == "invalid room name"
        create = json.dumps({"action": "createChatRoom", "params": {"name": "x" * 300}})
        assert client.request(create)["error"] == "invalid room name"
        calls = _command_calls(store)
        for command in ("sismember", "smismember", "scard", "hset", "publish", "smembers"):
            assert calls.get(command, 0) == 0, calls
    finally:
        store.close()
        node.stop()


def test_a_client_leaving_a_thousand_rooms_costs_one_batched_write(
    redis_server: RedisProcess, tmp_path: Path, connect: Callable[[NodeProcess], LineClient]
) -> None:
    node = node_with_limits(
        tmp_path, "max_rooms_per_connection = 0", "--redis-url", redis_server.url
    )
    store = redis.Redis(port=redis_server.port, decode_responses=True)
    try:
        rooms = [f"many-{n}" for n in range(1000)]
        store.sadd("roomcast:rooms", *rooms)
        client = connect(node)
        client.send("".join(f"roomAdd {room}\n" for room in rooms))
        assert {r["status"] for r in replies(client, 1000)} == {"OK"}
        owned = f"roomcast:node-members:{node.node_id}"
        assert store.scard(owned) == 1000
        store.config_resetstat()
        start = time.monotonic()
        client.send_line("quit")
        wait_until(lambda: store.scard(owned) == 0, 10, 0.01, "memberships removed")
        elapsed = time.monotonic() - start
        # The channels are unsubscribed a moment after their rooms emptied, all at once.
        wait_until(
            lambda: not store.pubsub_numsub("roomcast:chat:many-500")[0][1],
            10,
            0.05,
            "channels unsubscribed",
        )
        calls = _command_calls(store)
        # One SREM of 1000 entries and one HDEL per room hash, all in one pipelined write,
        # with no existence check per room and one UNSUBSCRIBE for every channel.
        assert calls.get("srem") == 1, calls
        assert calls.get("hdel") == 1000, calls
        assert calls.get("sismember", 0) == 0, calls
        assert calls.get("smismember", 0) == 0, calls
        assert calls.get("unsubscribe") == 1, calls
        assert store.hlen("roomcast:members:many-500") == 0
        assert elapsed < 1.0, elapsed
    finally:
        store.close()
        node.stop()


async def test_a_room_whose_name_is_now_invalid_can_still_be_destroyed(node: TestNode) -> None:
    name = "x" * 300  # stored before the name limit (written to the store directly)
    await node.api.cluster.store.add_room(name)
    await node.api.chat_room.destroy(name)
    assert not await node.api.chat_room.exists(name)
