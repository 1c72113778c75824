"""Chat middleware: order, replacement, refusal and payload changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from roomcast import Api, ChatMiddleware, Connection
from roomcast.dispatch import answer
from roomcast.protocol.requests import VerbRequest
from roomcast.testing import TestConnection, TestNode


@pytest.fixture
async def node() -> AsyncIterator[TestNode]:
    async with TestNode() as running:
        await running.api.chat_room.add("lobby")
        yield running


async def joined(node: TestNode, room: str = "lobby") -> TestConnection:
    connection = await node.connect()
    await node.api.chat_room.add_member(connection.id, room)
    return connection


Payload = dict[str, Any]


class Refused(Exception):
    pass


# order and registration -----------------------------------------------------------------


async def test_lower_priority_runs_first(node: TestNode) -> None:
    calls: list[str] = []
    chat = node.api.chat_room
    for name, priority in (("late", 200), ("early", 10), ("mid", 100)):
        chat.add_middleware(
            ChatMiddleware(name, priority=priority, join=lambda c, r, name=name: calls.append(name))
        )
    await joined(node)
    assert calls == ["early", "mid", "late"]


async def test_equal_priorities_keep_insertion_order(node: TestNode) -> None:
    calls: list[str] = []
    chat = node.api.chat_room
    for name in ("first", "second", "third"):
        chat.add_middleware(
            ChatMiddleware(name, priority=50, join=lambda c, r, name=name: calls.append(name))
        )
    await joined(node)
    assert calls == ["first", "second", "third"]


async def test_re_adding_a_name_replaces_the_middleware(node: TestNode) -> None:
    calls: list[str] = []
    chat = node.api.chat_room
    chat.add_middleware(ChatMiddleware("guard", join=lambda c, r: calls.append("old")))
    chat.add_middleware(ChatMiddleware("guard", join=lambda c, r: calls.append("new")))
    await joined(node)
    assert calls == ["new"]


async def test_re_adding_a_name_takes_the_new_priority(node: TestNode) -> None:
    calls: list[str] = []
    chat = node.api.chat_room
    chat.add_middleware(ChatMiddleware("a", priority=1, join=lambda c, r: calls.append("a")))
    chat.add_middleware(ChatMiddleware("b", priority=5, join=lambda c, r: calls.append("b")))
    chat.add_middleware(ChatMiddleware("a", priority=9, join=lambda c, r: calls.append("a")))
    await joined(node)
    assert calls == ["b", "a"]


async def test_remove_middleware_takes_one_out(node: TestNode) -> None:
    calls: list[str] = []
    chat = node.api.chat_room
    chat.add_middleware(ChatMiddleware("keep", join=lambda c, r: calls.append("keep")))
    chat.add_middleware(ChatMiddleware("drop", join=lambda c, r: calls.append("drop")))
    chat.remove_middleware("drop")
    await joined(node)
    assert calls == ["keep"]


async def test_remove_middleware_of_an_unknown_name_is_harmless(node: TestNode) -> None:
    node.api.chat_room.remove_middleware("never-added")
    assert (await joined(node)).rooms == ["lobby"]


async def test_middleware_with_no_hooks_changes_nothing(node: TestNode) -> None:
    node.api.chat_room.add_middleware(ChatMiddleware("empty"))
    alice = await joined(node)
    await node.api.chat_room.broadcast(alice, "lobby", "hi")
    assert alice.chat_messages()[-1]["message"] == "hi"


# join / leave ---------------------------------------------------------------------------


async def test_join_hook_receives_the_connection_and_room(node: TestNode) -> None:
    seen = []
    node.api.chat_room.add_middleware(ChatMiddleware("spy", join=lambda c, r: seen.append((c, r))))
    alice = await joined(node)
    assert seen == [(alice, "lobby")]


async def test_join_refused_by_raising_raises_that_error_to_the_caller(node: TestNode) -> None:
    def join(connection: Connection, room: str) -> None:
        raise Refused("members only")

    node.api.chat_room.add_middleware(ChatMiddleware("bouncer", join=join))
    connection = await node.connect()
    with pytest.raises(Refused, match=r"^members only$"):
        await node.api.chat_room.add_member(connection.id, "lobby")
    assert connection.rooms == []
    assert (await node.api.chat_room.room_status("lobby"))["membersCount"] == 0


async def test_join_refusal_text_is_the_roomadd_wire_status(node: TestNode) -> None:
    async def join(connection: Connection, room: str) -> None:
        raise Refused("members only")

    node.api.chat_room.add_middleware(ChatMiddleware("bouncer", join=join))
    connection = await node.connect()
    reply = await answer(connection, VerbRequest("roomAdd", {"room": "lobby"}), 7)
    assert reply == {
        "status": "members only",
        "context": "response",
        "data": False,
        "messageCount": 7,
    }


async def test_join_refusal_stops_later_join_hooks(node: TestNode) -> None:
    calls: list[str] = []

    def refuse(connection: Connection, room: str) -> None:
        raise Refused("no")

    chat = node.api.chat_room
    chat.add_middleware(ChatMiddleware("refuse", priority=1, join=refuse))
    chat.add_middleware(ChatMiddleware("later", priority=2, join=lambda c, r: calls.append("x")))
    connection = await node.connect()
    with pytest.raises(Refused):
        await chat.add_member(connection.id, "lobby")
    assert calls == []


async def test_leave_refused_by_raising_keeps_the_member(node: TestNode) -> None:
    async def leave(connection: Connection, room: str) -> None:
        raise Refused("you may not leave")

    alice = await joined(node)
    node.api.chat_room.add_middleware(ChatMiddleware("jailer", leave=leave))
    with pytest.raises(Refused, match=r"^you may not leave$"):
        await node.api.chat_room.remove_member(alice.id, "lobby")
    assert alice.rooms == ["lobby"]
    assert (await node.api.chat_room.room_status("lobby"))["membersCount"] == 1


async def test_leave_refusal_text_is_the_roomleave_wire_status(node: TestNode) -> None:
    def leave(connection: Connection, room: str) -> None:
        raise Refused("you may not leave")

    alice = await joined(node)
    node.api.chat_room.add_middleware(ChatMiddleware("jailer", leave=leave))
    reply = await answer(alice, VerbRequest("roomLeave", {"room": "lobby"}), 3)
    assert reply == {
        "status": "you may not leave",
        "context": "response",
        "data": False,
        "messageCount": 3,
    }


async def test_leave_hook_runs_when_a_connection_closes_but_cannot_keep_it(node: TestNode) -> None:
    seen = []

    def leave(connection: Connection, room: str) -> None:
        seen.append(room)
        raise Refused("stay")

    alice = await joined(node)
    node.api.chat_room.add_middleware(ChatMiddleware("jailer", leave=leave))
    await alice.destroy()
    assert seen == ["lobby"]
    assert (await node.api.chat_room.room_status("lobby"))["membersCount"] == 0


# on_say_receive -------------------------------------------------------------------------


async def test_on_say_receive_returning_a_new_payload_changes_what_everyone_gets(
    node: TestNode,
) -> None:
    def censor(connection: Connection, room: str, payload: Payload) -> Payload:
        return {**payload, "message": payload["message"].replace("darn", "****")}

    node.api.chat_room.add_middleware(ChatMiddleware("censor", on_say_receive=censor))
    alice = await joined(node)
    bob = await joined(node)
    await node.api.chat_room.broadcast(alice, "lobby", "oh darn")
    assert alice.chat_messages()[-1]["message"] == "oh ****"
    assert bob.chat_messages()[-1]["message"] == "oh ****"


async def test_on_say_receive_returning_none_keeps_its_mutations(node: TestNode) -> None:
    def stamp(connection: Connection, room: str, payload: Payload) -> None:
        payload["stamped"] = True

    node.api.chat_room.add_middleware(ChatMiddleware("stamp", on_say_receive=stamp))
    alice = await joined(node)
    bob = await joined(node)
    await node.api.chat_room.broadcast(alice, "lobby", "hi")
    assert bob.chat_messages()[-1]["stamped"] is True
    assert bob.chat_messages()[-1]["message"] == "hi"


async def test_on_say_receive_raising_stops_the_broadcast_and_the_sender_gets_the_error(
    node: TestNode,
) -> None:
    async def gag(connection: Connection, room: str, payload: Payload) -> None:
        raise Refused("you are muted")

    node.api.chat_room.add_middleware(ChatMiddleware("gag", on_say_receive=gag))
    alice = await joined(node)
    bob = await joined(node)
    with pytest.raises(Refused, match=r"^you are muted$"):
        await node.api.chat_room.broadcast(alice, "lobby", "hi")
    assert alice.chat_messages() == []
    assert bob.chat_messages() == []


async def test_on_say_receive_error_is_the_say_wire_status(node: TestNode) -> None:
    def gag(connection: Connection, room: str, payload: Payload) -> None:
        raise Refused("you are muted")

    node.api.chat_room.add_middleware(ChatMiddleware("gag", on_say_receive=gag))
    alice = await joined(node)
    reply = await answer(alice, VerbRequest("say", {"room": "lobby", "message": "hi"}), 4)
    assert reply == {
        "status": "you are muted",
        "context": "response",
        "data": False,
        "messageCount": 4,
    }


async def test_on_say_receive_runs_once_per_message_with_the_sender(node: TestNode) -> None:
    seen = []
    node.api.chat_room.add_middleware(
        ChatMiddleware("spy", on_say_receive=lambda c, r, p: seen.append((c, r, p["message"])))
    )
    alice = await joined(node)
    await joined(node)
    await joined(node)
    await node.api.chat_room.broadcast(alice, "lobby", "hi")
    assert seen == [(alice, "lobby", "hi")]


async def test_on_say_receive_hooks_chain_in_priority_order(node: TestNode) -> None:
    chat = node.api.chat_room
    chat.add_middleware(
        ChatMiddleware(
            "second",
            priority=2,
            on_say_receive=lambda c, r, p: {**p, "message": p["message"] + "2"},
        )
    )
    chat.add_middleware(
        ChatMiddleware(
            "first", priority=1, on_say_receive=lambda c, r, p: {**p, "message": p["message"] + "1"}
        )
    )
    alice = await joined(node)
    await chat.broadcast(alice, "lobby", "x")
    assert alice.chat_messages()[-1]["message"] == "x12"


# say (per recipient) --------------------------------------------------------------------


async def test_say_runs_once_per_recipient_with_that_recipient(node: TestNode) -> None:
    seen = []
    node.api.chat_room.add_middleware(ChatMiddleware("spy", say=lambda c, r, p: seen.append(c.id)))
    alice = await joined(node)
    bob = await joined(node)
    await node.api.chat_room.broadcast(alice, "lobby", "hi")
    assert sorted(seen) == sorted([alice.id, bob.id])


async def test_say_raising_skips_only_that_recipient(node: TestNode) -> None:
    alice = await joined(node)
    bob = await joined(node)

    def block_bob(connection: Connection, room: str, payload: Payload) -> None:
        if connection is bob:
            raise Refused("bob is deaf")

    node.api.chat_room.add_middleware(ChatMiddleware("deaf", say=block_bob))
    await node.api.chat_room.broadcast(alice, "lobby", "hi")
    assert [m["message"] for m in alice.chat_messages()] == ["hi"]
    assert bob.chat_messages() == []


async def test_say_returning_false_skips_only_that_recipient(node: TestNode) -> None:
    alice = await joined(node)
    bob = await joined(node)
    node.api.chat_room.add_middleware(
        ChatMiddleware("mute-self", say=lambda c, r, p: False if c.id == p["from"] else None)
    )
    await node.api.chat_room.broadcast(alice, "lobby", "hi")
    assert alice.chat_messages() == []
    assert [m["message"] for m in bob.chat_messages()] == ["hi"]


async def test_say_returning_a_new_payload_changes_only_that_recipient_s_copy(
    node: TestNode,
) -> None:
    alice = await joined(node)
    bob = await joined(node)

    async def personalise(connection: Connection, room: str, payload: Payload) -> Payload | None:
        if connection is bob:
            return {**payload, "message": "psst bob: " + payload["message"]}
        return None

    node.api.chat_room.add_middleware(ChatMiddleware("personal", say=personalise))
    await node.api.chat_room.broadcast(alice, "lobby", "hi")
    assert alice.chat_messages()[-1]["message"] == "hi"
    assert bob.chat_messages()[-1]["message"] == "psst bob: hi"


async def test_say_mutating_the_payload_in_place_changes_only_that_recipient_s_copy(
    node: TestNode,
) -> None:
    alice = await joined(node)
    bob = await joined(node)

    def tag(connection: Connection, room: str, payload: Payload) -> None:
        if connection is alice:
            payload["note"] = "for alice"

    node.api.chat_room.add_middleware(ChatMiddleware("tag", say=tag))
    await node.api.chat_room.broadcast(alice, "lobby", "hi")
    assert alice.chat_messages()[-1]["note"] == "for alice"
    assert "note" not in bob.chat_messages()[-1]


async def test_say_hooks_see_earlier_hooks_changes_for_the_same_recipient(node: TestNode) -> None:
    chat = node.api.chat_room
    chat.add_middleware(
        ChatMiddleware("b", priority=2, say=lambda c, r, p: {**p, "message": p["message"] + "b"})
    )
    chat.add_middleware(
        ChatMiddleware("a", priority=1, say=lambda c, r, p: {**p, "message": p["message"] + "a"})
    )
    alice = await joined(node)
    await chat.broadcast(alice, "lobby", "x")
    assert alice.chat_messages()[-1]["message"] == "xab"


async def test_say_applies_to_mock_broadcasts_too(node: TestNode) -> None:
    alice = await joined(node)
    node.api.chat_room.add_middleware(ChatMiddleware("drop-all", say=lambda c, r, p: False))
    await node.api.chat_room.broadcast({}, "lobby", "hi")
    assert alice.chat_messages() == []


# sync and async hooks -------------------------------------------------------------------


async def test_async_and_sync_hooks_of_all_four_kinds_work_together(node: TestNode) -> None:
    calls: list[str] = []

    async def join(connection: Connection, room: str) -> None:
        calls.append("join")

    def leave(connection: Connection, room: str) -> None:
        calls.append("leave")

    async def on_say_receive(connection: Connection, room: str, payload: Payload) -> Payload:
        calls.append("on_say_receive")
        return {**payload, "message": "[" + payload["message"] + "]"}

    def say(connection: Connection, room: str, payload: Payload) -> None:
        calls.append("say")

    node.api.chat_room.add_middleware(
        ChatMiddleware("all", join=join, leave=leave, say=say, on_say_receive=on_say_receive)
    )
    alice = await joined(node)
    await node.api.chat_room.broadcast(alice, "lobby", "hi")
    await node.api.chat_room.remove_member(alice.id, "lobby")
    assert calls == ["join", "on_say_receive", "say", "leave"]
    assert alice.chat_messages()[-1]["message"] == "[hi]"


# encoding once per message --------------------------------------------------------------


class FrameRecorder(TestConnection):
    """Keeps the frame objects it is handed, to see whether members share one."""

    def __init__(self, api: Api, **kwargs: Any) -> None:
        super().__init__(api, **kwargs)
        self.frames: list[object] = []

    def write_frame(self, frame: Any) -> None:
        self.frames.append(frame)
        super().write_frame(frame)


async def recorders(node: TestNode, count: int) -> list[FrameRecorder]:
    members = []
    for _ in range(count):
        connection = FrameRecorder(node.api)
        await node.api.connections.register(connection)
        await node.api.chat_room.add_member(connection.id, "lobby")
        members.append(connection)
    return members


async def test_without_say_middleware_every_member_gets_the_same_encoded_frame(
    node: TestNode,
) -> None:
    members = await recorders(node, 3)
    await node.api.chat_room.broadcast({}, "lobby", "hi")
    assert members[0].frames[0] is members[1].frames[0] is members[2].frames[0]


async def test_say_middleware_that_changes_nothing_keeps_one_shared_frame(node: TestNode) -> None:
    node.api.chat_room.add_middleware(ChatMiddleware("noop", say=lambda c, r, p: None))
    members = await recorders(node, 3)
    await node.api.chat_room.broadcast({}, "lobby", "hi")
    assert members[0].frames[0] is members[1].frames[0] is members[2].frames[0]
