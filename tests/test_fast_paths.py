"""The cheap paths of joins and fan-out: batched store writes, per-tick coalescing, ids."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
from fake_transport import FakeTransport, stream
from redis.exceptions import ResponseError

from roomcast.cluster.keys import Keys
from roomcast.cluster.store import Store, connect
from roomcast.connection import ConnectionMiddleware, new_id
from roomcast.testing import TestConnection, TestNode


@pytest.fixture
async def node() -> AsyncIterator[TestNode]:
    async with TestNode() as running:
        yield running


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    embedded = connect(None)
    yield Store(embedded, Keys("t:"))
    await embedded.aclose()


# ids ----------------------------------------------------------------------------------------


def test_new_ids_are_distinct_uuid4_strings() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


# registration without a task ----------------------------------------------------------------


async def test_register_now_tracks_a_connection_when_no_create_middleware_runs(
    node: TestNode,
) -> None:
    connection = TestConnection(node.api)
    assert node.api.connections.register_now(connection) is True
    assert node.api.connections.get(connection.id) is connection


async def test_register_now_leaves_create_middleware_to_register(node: TestNode) -> None:
    node.api.connections.add_middleware(ConnectionMiddleware("m", create=lambda c: None))
    connection = TestConnection(node.api)
    assert node.api.connections.register_now(connection) is False
    assert connection.id not in node.api.connections


# batched membership writes ------------------------------------------------------------------


async def test_joins_and_leaves_of_one_tick_are_stored_in_their_order(store: Store) -> None:
    await asyncio.gather(
        store.add_member("r", "a", "n1", {"id": "a"}),
        store.add_member("r", "b", "n1", {"id": "b"}),
        store.remove_member("r", "a", "n1"),
        store.add_member("r", "a", "n1", {"id": "a", "again": True}),
        store.add_member("other", "b", "n1", {"id": "b"}),
        store.remove_member("r", "b", "n1"),
    )
    assert await store.room_members("r") == {"a": {"id": "a", "again": True}}
    assert await store.room_members("other") == {"b": {"id": "b"}}
    assert await store.node_memberships("n1") == {("a", "r"), ("b", "other")}


async def test_an_error_reply_reaches_every_writer_of_its_batch_and_later_batches_work(
    store: Store,
) -> None:
    await store.redis.set(store.keys.members("broken"), "not a hash")
    results = await asyncio.gather(
        store.add_member("broken", "a", "n1", {"id": "a"}),
        store.add_member("fine", "b", "n1", {"id": "b"}),
        return_exceptions=True,
    )
    assert all(isinstance(result, ResponseError) for result in results)
    await store.add_member("fine", "c", "n1", {"id": "c"})
    assert await store.room_members("fine") == {"b": {"id": "b"}, "c": {"id": "c"}}


async def test_a_cancelled_writer_does_not_cancel_the_others_of_its_batch(store: Store) -> None:
    cancelled = asyncio.ensure_future(store.add_member("r", "a", "n1", {"id": "a"}))
    kept = asyncio.ensure_future(store.add_member("r", "b", "n1", {"id": "b"}))
    await asyncio.sleep(0)
    cancelled.cancel()
    await kept
    assert "b" in await store.room_members("r")


async def test_a_burst_of_joins_is_visible_to_room_status_as_each_join_returns(
    node: TestNode,
) -> None:
    connections = [await node.connect() for _ in range(50)]

    async def join_then_look(connection: TestConnection) -> set[str]:
        await node.api.chat_room.add_member(connection.id, "defaultRoom")
        status = await node.api.chat_room.room_status("defaultRoom")
        return set(status["members"])

    seen = await asyncio.gather(*(join_then_look(c) for c in connections))
    for connection, members in zip(connections, seen, strict=True):
        assert connection.id in members


# per-tick coalescing ------------------------------------------------------------------------


async def test_frames_of_one_tick_leave_in_one_write_in_order(node: TestNode) -> None:
    transport = FakeTransport()
    connection = stream(node, transport)
    for text in (b"a", b"b", b"c"):
        connection.write_frame(connection.frame(text))
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"a\nb\nc\n"]
    connection.write_raw(b"d")
    await asyncio.sleep(0)
    assert transport.writes == [b"a\nb\nc\n", b"d"]


async def test_a_flush_within_the_tick_writes_at_once_and_later_frames_follow(
    node: TestNode,
) -> None:
    transport = FakeTransport()
    connection = stream(node, transport)
    connection.write_frame(b"1")
    connection.write_frame(b"2")
    connection.flush()
    connection.write_frame(b"3")
    assert transport.writes == [b"12"]
    await asyncio.sleep(0)
    assert transport.writes == [b"12", b"3"]


async def test_nothing_is_written_to_a_closing_transport(node: TestNode) -> None:
    transport = FakeTransport(closing=True)
    connection = stream(node, transport)
    connection.write_frame(b"x")
    await asyncio.sleep(0)
    assert transport.writes == []


async def test_a_client_over_its_send_limit_is_aborted_with_a_warning(
    node: TestNode, caplog: pytest.LogCaptureFixture
) -> None:
    transport = FakeTransport(unsent=5000)
    connection = stream(node, transport, limit=4096)
    with caplog.at_level(logging.WARNING, logger="roomcast.servers"):
        connection.write_frame(b"x")
        await asyncio.sleep(0)
    assert transport.aborted
    assert f"disconnecting {connection.id}" in caplog.text


async def test_one_tick_of_many_members_writes_each_member_once(node: TestNode) -> None:
    transports = [FakeTransport() for _ in range(5)]
    members = [stream(node, t) for t in transports]
    for member in members:
        member.write_frame(b"m1")
    for member in members:
        member.write_frame(b"m2")
    await asyncio.sleep(0)
    assert all(t.writes == [b"m1m2"] for t in transports)


# no self-talk on the embedded store ---------------------------------------------------------


async def test_a_say_on_the_embedded_store_is_delivered_without_publishing(node: TestNode) -> None:
    api = node.api
    room = "quiet-room"
    await api.chat_room.add(room)
    async with api.redis.pubsub() as listener:
        await listener.subscribe(api.cluster.keys.room_channel(room))
        await listener.get_message(timeout=1.0)  # the subscribe confirmation
        member = await node.connect()
        await api.chat_room.add_member(member.id, room)
        await api.chat_room.broadcast({}, room, "hello")
        said = await member.wait_for(lambda m: isinstance(m, dict) and m.get("message") == "hello")
        assert said["room"] == room
        assert await listener.get_message(timeout=0.3) is None  # nothing went to the channel


# no node index on the embedded store --------------------------------------------------------


async def test_the_embedded_store_keeps_members_but_no_index_of_the_node_s_memberships(
    node: TestNode,
) -> None:
    api = node.api
    keys = api.cluster.keys
    members = [await node.connect() for _ in range(3)]
    for member in members:
        await api.chat_room.add_member(member.id, "defaultRoom")
    await api.chat_room.remove_member(members[0].id, "defaultRoom")
    stored = await api.cluster.store.room_members("defaultRoom")
    assert set(stored) == {members[1].id, members[2].id}
    assert await api.redis.exists(keys.node_members(api.id)) == 0
    await members[1].destroy()
    assert set(await api.cluster.store.room_members("defaultRoom")) == {members[2].id}


async def test_a_store_without_the_node_index_joins_leaves_and_reconciles() -> None:
    embedded = connect(None)
    store = Store(embedded, Keys("t:"), node_index=False)
    try:
        await asyncio.gather(
            store.add_member("r", "a", "n1", {"id": "a"}),
            store.add_member("r", "b", "n1", {"id": "b"}),
            store.add_member("other", "b", "n1", {"id": "b"}),
            store.remove_member("r", "a", "n1"),
        )
        await store.remove_memberships("b", "n1", ["other"])
        assert await store.room_members("r") == {"b": {"id": "b"}}
        assert await store.room_members("other") == {}
        assert await store.node_memberships("n1") == set()
        await embedded.flushall()  # an outage that lost everything: written back whole
        assert await store.reconcile_node("n1", {"r"}, {("b", "r"): {"id": "b"}}) == 0
        assert await store.room_members("r") == {"b": {"id": "b"}}
        assert await store.node_memberships("n1") == set()
    finally:
        await embedded.aclose()
