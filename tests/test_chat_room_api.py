"""The chat-room API (``api.chat_room``), case by case, on an in-process node."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from roomcast import (
    AlreadyInRoom,
    ChatError,
    Connection,
    ConnectionMiddleware,
    ConnectionNotFound,
    NotInRoom,
    RoomAndMessageRequired,
    RoomNotFound,
    RoomRequired,
)
from roomcast.testing import TestConnection, TestNode


@pytest.fixture
async def node() -> AsyncIterator[TestNode]:
    async with TestNode() as running:
        yield running


async def member_of(node: TestNode, room: str) -> TestConnection:
    """A new test connection that has joined ``room`` (created if needed)."""
    await node.api.chat_room.add(room)
    connection = await node.connect()
    await node.api.chat_room.add_member(connection.id, room)
    return connection


def without_sent_at(message: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(message["sentAt"], int)
    return {k: v for k, v in message.items() if k != "sentAt"}


# broadcast ------------------------------------------------------------------------------


async def test_broadcast_from_a_member_reaches_every_member_including_the_sender(
    node: TestNode,
) -> None:
    alice = await member_of(node, "lobby")
    bob = await member_of(node, "lobby")
    await node.api.chat_room.broadcast(alice, "lobby", "hello")
    expected = {"message": "hello", "room": "lobby", "from": alice.id, "context": "user"}
    assert [without_sent_at(m) for m in alice.chat_messages()] == [expected]
    assert [without_sent_at(m) for m in bob.chat_messages()] == [expected]


async def test_broadcast_payload_keys_are_in_the_documented_order(node: TestNode) -> None:
    alice = await member_of(node, "lobby")
    await node.api.chat_room.broadcast(alice, "lobby", "hi")
    assert list(alice.messages[-1]) == ["message", "room", "from", "context", "sentAt"]


async def test_broadcast_does_not_reach_connections_outside_the_room(node: TestNode) -> None:
    alice = await member_of(node, "lobby")
    outsider = await member_of(node, "elsewhere")
    await node.api.chat_room.broadcast(alice, "lobby", "hello")
    assert outsider.chat_messages() == []


async def test_broadcast_from_a_mock_mapping_without_id_is_from_0(node: TestNode) -> None:
    bob = await member_of(node, "lobby")
    await node.api.chat_room.broadcast({"room": "someOtherRoom"}, "lobby", "from the server")
    assert without_sent_at(bob.messages[-1]) == {
        "message": "from the server",
        "room": "lobby",
        "from": 0,
        "context": "user",
    }


async def test_broadcast_from_a_mock_object_without_id_is_from_0(node: TestNode) -> None:
    bob = await member_of(node, "lobby")
    await node.api.chat_room.broadcast(SimpleNamespace(), "lobby", "hi")
    assert bob.messages[-1]["from"] == 0


async def test_broadcast_from_a_mock_with_an_id_keeps_that_id(node: TestNode) -> None:
    bob = await member_of(node, "lobby")
    await node.api.chat_room.broadcast({"id": "system"}, "lobby", "hi")
    assert bob.messages[-1]["from"] == "system"


async def test_broadcast_context_is_always_user(node: TestNode) -> None:
    bob = await member_of(node, "lobby")
    await node.api.chat_room.broadcast({"context": "api"}, "lobby", "hi")
    assert bob.messages[-1]["context"] == "user"


async def test_broadcast_carries_any_json_message(node: TestNode) -> None:
    bob = await member_of(node, "lobby")
    await node.api.chat_room.broadcast({}, "lobby", {"move": [1, 2]})
    assert bob.messages[-1]["message"] == {"move": [1, 2]}


async def test_broadcast_without_room_is_refused(node: TestNode) -> None:
    with pytest.raises(RoomAndMessageRequired, match=r"^both room and message are required$"):
        await node.api.chat_room.broadcast({}, "", "hi")


async def test_broadcast_without_message_is_refused(node: TestNode) -> None:
    with pytest.raises(RoomAndMessageRequired, match=r"^both room and message are required$"):
        await node.api.chat_room.broadcast({}, "lobby", None)
    with pytest.raises(RoomAndMessageRequired):
        await node.api.chat_room.broadcast({}, "lobby", "")


async def test_broadcast_from_a_connection_not_in_the_room_is_refused(node: TestNode) -> None:
    await node.api.chat_room.add("lobby")
    stranger = await node.connect()
    with pytest.raises(NotInRoom) as caught:
        await node.api.chat_room.broadcast(stranger, "lobby", "hi")
    assert str(caught.value) == "connection not in this room (lobby)"


async def test_broadcast_from_a_mock_whose_rooms_lack_the_room_is_refused(node: TestNode) -> None:
    with pytest.raises(NotInRoom, match=r"^connection not in this room \(lobby\)$"):
        await node.api.chat_room.broadcast({"rooms": ["other"]}, "lobby", "hi")


# list / add / exists / destroy ----------------------------------------------------------


async def test_starting_room_exists_after_start(node: TestNode) -> None:
    assert await node.api.chat_room.exists("defaultRoom") is True


async def test_list_returns_every_room(node: TestNode) -> None:
    await node.api.chat_room.add("b-room")
    await node.api.chat_room.add("a-room")
    assert sorted(await node.api.chat_room.list()) == ["a-room", "b-room", "defaultRoom"]


async def test_add_returns_1_when_created_then_0_when_it_existed(node: TestNode) -> None:
    assert await node.api.chat_room.add("fresh") == 1
    assert await node.api.chat_room.add("fresh") == 0


async def test_add_without_a_room_is_refused(node: TestNode) -> None:
    with pytest.raises(RoomRequired, match=r"^a room is required$"):
        await node.api.chat_room.add("")


async def test_exists_is_false_for_an_unknown_room(node: TestNode) -> None:
    assert await node.api.chat_room.exists("never-made") is False


async def test_destroy_tells_members_from_0_then_removes_them(node: TestNode) -> None:
    alice = await member_of(node, "doomed")
    bob = await member_of(node, "doomed")
    await node.api.chat_room.destroy("doomed")
    for member in (alice, bob):
        assert [without_sent_at(m) for m in member.chat_messages()] == [
            {
                "message": "this room has been deleted",
                "room": "doomed",
                "from": 0,
                "context": "user",
            }
        ]
        assert member.rooms == []


async def test_destroy_deletes_the_room(node: TestNode) -> None:
    await node.api.chat_room.add("doomed")
    await node.api.chat_room.destroy("doomed")
    assert await node.api.chat_room.exists("doomed") is False
    assert "doomed" not in await node.api.chat_room.list()


async def test_destroy_leaves_members_free_to_rejoin_a_recreated_room(node: TestNode) -> None:
    alice = await member_of(node, "phoenix")
    await node.api.chat_room.destroy("phoenix")
    await node.api.chat_room.add("phoenix")
    assert await node.api.chat_room.add_member(alice.id, "phoenix") is True


async def test_destroy_of_an_unknown_room_is_refused(node: TestNode) -> None:
    with pytest.raises(RoomNotFound, match=r"^room does not exist$"):
        await node.api.chat_room.destroy("never-made")


# room_status ----------------------------------------------------------------------------


async def test_room_status_counts_and_lists_sanitized_members_with_id(node: TestNode) -> None:
    alice = await member_of(node, "lobby")
    bob = await member_of(node, "lobby")
    status = await node.api.chat_room.room_status("lobby")
    assert status["room"] == "lobby"
    assert status["membersCount"] == 2
    assert set(status["members"]) == {alice.id, bob.id}
    for member_id, shown in status["members"].items():
        assert set(shown) == {"joinedAt", "id"}
        assert shown["id"] == member_id
        assert isinstance(shown["joinedAt"], int)


async def test_room_status_of_an_empty_room(node: TestNode) -> None:
    await node.api.chat_room.add("empty")
    assert await node.api.chat_room.room_status("empty") == {
        "room": "empty",
        "membersCount": 0,
        "members": {},
    }


async def test_room_status_without_a_room_is_refused(node: TestNode) -> None:
    with pytest.raises(RoomRequired, match=r"^a room is required$"):
        await node.api.chat_room.room_status("")


async def test_room_status_of_an_unknown_room_is_refused(node: TestNode) -> None:
    with pytest.raises(RoomNotFound, match=r"^room does not exist$"):
        await node.api.chat_room.room_status("never-made")


# add_member / remove_member -------------------------------------------------------------


async def test_add_member_returns_true_and_records_rooms_in_join_order(node: TestNode) -> None:
    await node.api.chat_room.add("second")
    connection = await node.connect()
    assert await node.api.chat_room.add_member(connection.id, "second") is True
    assert await node.api.chat_room.add_member(connection.id, "defaultRoom") is True
    assert connection.rooms == ["second", "defaultRoom"]


async def test_add_member_twice_is_refused(node: TestNode) -> None:
    alice = await member_of(node, "lobby")
    with pytest.raises(AlreadyInRoom, match=r"^connection already in this room \(lobby\)$"):
        await node.api.chat_room.add_member(alice.id, "lobby")


async def test_add_member_to_an_unknown_room_is_refused(node: TestNode) -> None:
    connection = await node.connect()
    with pytest.raises(RoomNotFound, match=r"^room does not exist$"):
        await node.api.chat_room.add_member(connection.id, "never-made")
    assert connection.rooms == []


async def test_add_member_of_an_unknown_connection_is_refused(node: TestNode) -> None:
    with pytest.raises(ConnectionNotFound, match=r"^connection not found$"):
        await node.api.chat_room.add_member("no-such-connection", "defaultRoom")


async def test_remove_member_returns_true_and_takes_the_member_out(node: TestNode) -> None:
    alice = await member_of(node, "lobby")
    assert await node.api.chat_room.remove_member(alice.id, "lobby") is True
    assert alice.rooms == []
    assert (await node.api.chat_room.room_status("lobby"))["membersCount"] == 0


async def test_remove_member_not_in_the_room_is_refused(node: TestNode) -> None:
    await node.api.chat_room.add("lobby")
    connection = await node.connect()
    with pytest.raises(NotInRoom, match=r"^connection not in this room \(lobby\)$"):
        await node.api.chat_room.remove_member(connection.id, "lobby")


async def test_remove_member_of_a_room_that_vanished_is_refused(node: TestNode) -> None:
    alice = await member_of(node, "vanishing")
    await node.api.cluster.store.remove_room("vanishing")  # deleted behind this node's back
    with pytest.raises(RoomNotFound, match=r"^room does not exist$"):
        await node.api.chat_room.remove_member(alice.id, "vanishing")


async def test_remove_member_of_an_unknown_connection_is_refused(node: TestNode) -> None:
    with pytest.raises(ConnectionNotFound, match=r"^connection not found$"):
        await node.api.chat_room.remove_member("no-such-connection", "defaultRoom")


async def test_removed_member_no_longer_receives_the_room_s_messages(node: TestNode) -> None:
    alice = await member_of(node, "lobby")
    bob = await member_of(node, "lobby")
    await node.api.chat_room.remove_member(bob.id, "lobby")
    await node.api.chat_room.broadcast(alice, "lobby", "anyone?")
    assert bob.chat_messages() == []


async def test_destroyed_connection_leaves_every_room(node: TestNode) -> None:
    alice = await member_of(node, "lobby")
    await node.api.chat_room.add_member(alice.id, "defaultRoom")
    await alice.destroy()
    assert alice.closed is True
    assert (await node.api.chat_room.room_status("lobby"))["membersCount"] == 0
    assert (await node.api.chat_room.room_status("defaultRoom"))["membersCount"] == 0


async def test_every_chat_error_is_a_chat_error() -> None:
    for error in (
        RoomAndMessageRequired(),
        RoomRequired(),
        RoomNotFound(),
        AlreadyInRoom("r"),
        NotInRoom("r"),
        ConnectionNotFound(),
    ):
        assert isinstance(error, ChatError)


# overridable hooks ----------------------------------------------------------------------


async def test_generate_member_details_replaced_by_assignment_is_stored(node: TestNode) -> None:
    chat = node.api.chat_room
    # The hooks are plain methods replaced by assignment, which mypy calls method-assign.
    chat.generate_member_details = lambda connection: {  # type: ignore[method-assign]
        "id": connection.id,
        "joinedAt": 1,
        "nick": connection.params.get("nick"),
    }
    chat.sanitize_member_details = lambda data: {"nick": data["nick"]}  # type: ignore[method-assign]
    await chat.add("club")
    alice = await node.connect()
    alice.params["nick"] = "alice"
    await chat.add_member(alice.id, "club")
    assert (await chat.room_status("club"))["members"] == {
        alice.id: {"nick": "alice", "id": alice.id}
    }


async def test_default_member_details_store_id_joined_at_and_host(node: TestNode) -> None:
    alice = await member_of(node, "lobby")
    stored = await node.api.cluster.store.room_members("lobby")
    assert set(stored[alice.id]) == {"id", "joinedAt", "host"}
    assert stored[alice.id]["host"] == node.api.id


async def test_sanitize_member_details_result_always_gets_the_id(node: TestNode) -> None:
    node.api.chat_room.sanitize_member_details = lambda data: {}  # type: ignore[method-assign]
    alice = await member_of(node, "lobby")
    assert (await node.api.chat_room.room_status("lobby"))["members"] == {
        alice.id: {"id": alice.id}
    }


async def test_generate_message_payload_replaced_by_assignment_shapes_what_clients_get(
    node: TestNode,
) -> None:
    def payload(message: dict[str, Any]) -> dict[str, Any]:
        return {
            "text": message["message"].upper(),
            "by": message["connection"]["id"],
            "room": message["connection"]["room"],
            "context": "user",
        }

    node.api.chat_room.generate_message_payload = payload  # type: ignore[method-assign]
    alice = await member_of(node, "lobby")
    await node.api.chat_room.broadcast(alice, "lobby", "shout")
    assert alice.messages[-1] == {
        "text": "SHOUT",
        "by": alice.id,
        "room": "lobby",
        "context": "user",
    }


# send_message ---------------------------------------------------------------------------


async def test_send_message_pushes_any_json_to_one_connection(node: TestNode) -> None:
    alice = await node.connect()
    bob = await node.connect()
    await alice.send_message({"context": "alert", "text": "just you"})
    assert alice.messages == [{"context": "alert", "text": "just you"}]
    assert bob.messages == []


# connections and nodes ------------------------------------------------------------------


async def test_connection_middleware_create_and_destroy_run_for_every_connection(
    node: TestNode,
) -> None:
    seen: list[tuple[str, str]] = []

    async def create(connection: Connection) -> None:
        seen.append(("create", connection.id))

    node.api.connections.add_middleware(
        ConnectionMiddleware("spy", create=create, destroy=lambda c: seen.append(("destroy", c.id)))
    )
    alice = await node.connect()
    bob = await node.connect()
    await alice.destroy()
    assert seen == [("create", alice.id), ("create", bob.id), ("destroy", alice.id)]


async def test_test_connection_has_type_test_and_a_uuid4_id(node: TestNode) -> None:
    alice = await node.connect()
    assert alice.type == "test"
    assert uuid.UUID(alice.id).version == 4
    assert alice.fingerprint == alice.id


async def test_two_nodes_in_one_process_keep_their_own_rooms() -> None:
    async with TestNode() as first, TestNode() as second:
        assert first.api.id != second.api.id
        await first.api.chat_room.add("only-on-first")
        assert await second.api.chat_room.exists("only-on-first") is False
        alice = await first.connect()
        with pytest.raises(ConnectionNotFound):
            await second.api.chat_room.add_member(alice.id, "defaultRoom")


async def test_a_name_param_is_kept_in_the_member_details_and_shown(node: TestNode) -> None:
    alice = await node.connect()
    await alice.verb("paramAdd", key="name", value="Alice")
    await alice.verb("roomAdd", room="defaultRoom")
    status = await node.api.chat_room.room_status("defaultRoom")
    assert status["members"][alice.id] == {
        "joinedAt": status["members"][alice.id]["joinedAt"],
        "name": "Alice",
        "id": alice.id,
    }


async def test_without_a_name_param_member_details_keep_their_default_keys(node: TestNode) -> None:
    bob = await node.connect()
    await bob.verb("roomAdd", room="defaultRoom")
    status = await node.api.chat_room.room_status("defaultRoom")
    assert set(status["members"][bob.id]) == {"joinedAt", "id"}
