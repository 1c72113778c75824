"""Presence events: with ``[chat] presence_events = true`` every member of a room, on every
node, is told when a connection joins or leaves it, however it leaves."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_support import CONFIG, PREFIX, PRESENCE_TTL, ChatClient, Cluster, wait_until

from support import start_node

ROOM = "lobby"


def configure(cluster: Cluster, **chat: Any) -> None:
    lines = [f"{key} = {json.dumps(value)}" for key, value in chat.items()]
    cluster.config_path.write_text(CONFIG + "\n[chat]\n" + "\n".join(lines) + "\n")


def presence(client: ChatClient, event: str, connection_id: str) -> list[dict[str, Any]]:
    return [
        m
        for m in client.inbox
        if isinstance(m, dict)
        and m.get("context") == "presence"
        and m.get("event") == event
        and m.get("id") == connection_id
    ]


def wait_presence(
    client: ChatClient, event: str, connection_id: str, timeout: float = 5.0
) -> dict[str, Any]:
    client._next(lambda: bool(presence(client, event, connection_id)), timeout)
    return presence(client, event, connection_id)[0]


@pytest.fixture
def two_nodes(cluster: Cluster) -> Cluster:
    configure(cluster, presence_events=True)
    cluster.start("a")
    cluster.start("b")
    return cluster


def _members(cluster: Cluster) -> tuple[ChatClient, ChatClient]:
    """One member of ``ROOM`` on each node."""
    on_a, on_b = cluster.client("a"), cluster.client("b")
    on_a.join(ROOM)
    on_b.join(ROOM)
    return on_a, on_b


def test_members_on_every_node_hear_a_join_with_its_room_status_entry(two_nodes: Cluster) -> None:
    on_a, on_b = _members(two_nodes)
    newcomer = two_nodes.client("b")
    before = int(time.time() * 1000)
    newcomer.join(ROOM)
    after = int(time.time() * 1000)
    entry = newcomer.request(f"roomView {ROOM}")["data"]["members"][newcomer.id]
    for member in (on_a, on_b):
        event = wait_presence(member, "join", newcomer.id)
        assert event == {
            "context": "presence",
            "event": "join",
            "room": ROOM,
            "id": newcomer.id,
            "details": entry,
            "at": event["at"],
        }
        assert before <= event["at"] <= after


def test_members_hear_a_room_leave(two_nodes: Cluster) -> None:
    on_a, on_b = _members(two_nodes)
    on_b.leave(ROOM)
    event = wait_presence(on_a, "leave", on_b.id)
    assert set(event) == {"context", "event", "room", "id", "at"}
    assert event["room"] == ROOM


def test_members_hear_a_disconnect_as_a_leave(two_nodes: Cluster) -> None:
    on_a, on_b = _members(two_nodes)
    on_b.quit()
    wait_presence(on_a, "leave", on_b.id)


def test_destroying_a_room_announces_a_leave_for_every_member(two_nodes: Cluster) -> None:
    on_a, on_b = _members(two_nodes)
    with two_nodes.pubsub_redis() as redis, redis.pubsub() as listener:
        listener.subscribe(f"{PREFIX}chat:{ROOM}")
        admin = two_nodes.client("a")
        assert admin.action("destroyRoom", room=ROOM).get("destroyed") is True
        left: set[str] = set()
        deadline = time.monotonic() + 5
        while left != {on_a.id, on_b.id} and time.monotonic() < deadline:
            message = listener.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is None:
                continue
            body = json.loads(message["data"].partition("\n")[2])
            if body.get("context") == "presence" and body.get("event") == "leave":
                left.add(body["id"])
    assert left == {on_a.id, on_b.id}


def test_members_hear_a_graceful_shutdown_as_leaves(two_nodes: Cluster) -> None:
    on_a, on_b = _members(two_nodes)
    assert two_nodes.nodes["b"].stop() == 0
    wait_presence(on_a, "leave", on_b.id)


def test_the_reaping_node_announces_the_leaves_of_a_dead_node(two_nodes: Cluster) -> None:
    on_a, on_b = _members(two_nodes)
    two_nodes.nodes["b"].kill()
    started = time.monotonic()
    wait_presence(on_a, "leave", on_b.id, timeout=PRESENCE_TTL * 3)
    assert time.monotonic() - started <= PRESENCE_TTL + 1.5
    assert len(presence(on_a, "leave", on_b.id)) == 1


def test_presence_events_are_off_by_default(cluster: Cluster) -> None:
    cluster.start("a")
    first, second = cluster.client("a"), cluster.client("a")
    first.join(ROOM)
    second.join(ROOM)
    second.leave(ROOM)
    first.say(ROOM, "fence")
    first.wait_chat(lambda m: m["message"] == "fence")
    assert [m for m in first.inbox if m.get("context") == "presence"] == []


def test_presence_events_reach_history_rooms_but_are_not_kept(cluster: Cluster) -> None:
    configure(cluster, presence_events=True, history_size=10)
    cluster.start("a")
    cluster.start("b")
    on_a, on_b = _members(cluster)
    wait_presence(on_a, "join", on_b.id)
    on_a.say(ROOM, "hello")
    on_b.leave(ROOM)
    wait_presence(on_a, "leave", on_b.id)
    data = on_a.request(f"roomHistory {ROOM}")["data"]
    assert [(m["offset"], m["message"]) for m in data["messages"]] == [(1, "hello")]


def test_presence_events_reach_members_on_the_embedded_store(tmp_path: Path) -> None:
    config = tmp_path / "presence.toml"
    config.write_text("[chat]\npresence_events = true\n")
    node = start_node("--config", str(config), log_dir=tmp_path)
    first = second = None
    try:
        first, second = ChatClient(node.socket_port), ChatClient(node.socket_port)
        first.join("defaultRoom", create=False)
        second.join("defaultRoom", create=False)
        wait_presence(first, "join", second.id)
        second.leave("defaultRoom")
        wait_presence(first, "leave", second.id)
    finally:
        for client in (first, second):
            if client is not None:
                client.close()
        node.stop()


def test_a_dead_nodes_leaves_come_once_from_one_reaper(cluster: Cluster) -> None:
    configure(cluster, presence_events=True)
    for node_id in ("a", "b", "c"):
        cluster.start(node_id)
    watchers = [cluster.client("a"), cluster.client("b")]
    for watcher in watchers:
        watcher.join(ROOM)
    doomed = cluster.client("c")
    doomed.join(ROOM)
    cluster.nodes["c"].kill()
    for watcher in watchers:
        wait_presence(watcher, "leave", doomed.id, timeout=PRESENCE_TTL * 3)
    for watcher in watchers:
        watcher.drain(PRESENCE_TTL)
    assert [len(presence(w, "leave", doomed.id)) for w in watchers] == [1, 1]
    wait_until(lambda: doomed.id not in cluster.members(ROOM), 1, message="reaped")
