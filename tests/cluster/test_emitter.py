"""``roomcast.emitter``: broadcasting from a process that runs no node."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from cluster_support import CONFIG, PREFIX, TOKEN, ChatClient, Cluster

from roomcast import load_config
from roomcast.cluster.keys import Keys
from roomcast.config import ChatSettings, Config
from roomcast.emitter import Emitter, SyncEmitter
from support import RedisProcess


def test_a_sync_broadcast_reaches_every_member_on_every_node_once(cluster: Cluster) -> None:
    cluster.start("emit-a")
    cluster.start("emit-b")
    alice, bob = cluster.client("emit-a"), cluster.client("emit-b")
    alice.join("orders")
    bob.join("orders", create=False)
    with SyncEmitter(cluster.redis_server.url, server_token=TOKEN, key_prefix=PREFIX) as emitter:
        emitter.broadcast("orders", {"id": 42, "status": "shipped"})
    for client in (alice, bob):
        said = client.wait_chat(lambda m: m["room"] == "orders")
        assert said["message"] == {"id": 42, "status": "shipped"} and said["from"] == 0
        client.drain(0.3)
        assert len(client.chat("orders")) == 1  # exactly once


async def test_room_status_and_rooms_read_the_cluster(cluster: Cluster) -> None:
    cluster.start("emit-a")
    alice = cluster.client("emit-a")
    alice.join("status-room")
    async with Emitter(cluster.redis_server.url, server_token=TOKEN, key_prefix=PREFIX) as emitter:
        assert "status-room" in await emitter.rooms()
        status = await emitter.room_status("status-room")
        assert status["room"] == "status-room" and status["membersCount"] == 1
        assert set(status["members"]) == {alice.id}
        assert status["members"][alice.id]["id"] == alice.id
        with pytest.raises(LookupError, match="room does not exist"):
            await emitter.room_status("no-such-room")


def test_a_broadcast_signed_with_another_token_reaches_nobody(cluster: Cluster) -> None:
    cluster.start("emit-a")
    alice = cluster.client("emit-a")
    alice.join("guarded")
    with SyncEmitter(cluster.redis_server.url, server_token="wrong", key_prefix=PREFIX) as bad:
        bad.broadcast("guarded", "forged")
    alice.drain(0.5)
    assert alice.chat("guarded") == []


# rooms with history ----------------------------------------------------------------------

KEPT = "kept-orders"


def keep_history(cluster: Cluster) -> None:
    """Nodes started after this keep 100 messages of every ``kept-*`` room."""
    cluster.config_path.write_text(
        CONFIG + '\n[chat]\nhistory_size = 100\nhistory_rooms = ["kept-*"]\n'
    )


def nodes_settings(cluster: Cluster) -> Config:
    """The settings the nodes run with, as an app that shares their file loads them."""
    flags = {"redis_url": cluster.redis_server.url}
    if cluster.pubsub_server is not None:
        flags["pubsub_url"] = cluster.pubsub_server.url
    return load_config(flags, {}, cluster.config_path)


def message_of(client: ChatClient, text: str) -> dict[str, Any]:
    return client.wait_chat(lambda m: m["room"] == KEPT and m["message"] == text)


async def test_a_broadcast_into_a_history_room_is_kept_delivered_everywhere_and_recovered(
    cluster: Cluster,
) -> None:
    keep_history(cluster)
    cluster.start("emit-a")
    cluster.start("emit-b")
    alice, bob = cluster.client("emit-a"), cluster.client("emit-b")
    alice.join(KEPT)
    bob.join(KEPT, create=False)
    alice.say(KEPT, "hello")
    before = message_of(bob, "hello")
    async with Emitter.from_config(nodes_settings(cluster)) as emitter:
        await emitter.broadcast(KEPT, {"id": 42})
        for client in (alice, bob):
            said = client.wait_chat(lambda m: m["room"] == KEPT and m["from"] == 0)
            assert said["message"] == {"id": 42} and said["context"] == "user"
            assert (said["offset"], said["epoch"]) == (before["offset"] + 1, before["epoch"])
        history = bob.request(f"roomHistory {KEPT} {before['offset']}")["data"]
        assert history["offset"] == before["offset"] + 1
        assert [(m["message"], m["from"]) for m in history["messages"]] == [({"id": 42}, 0)]
        # bob leaves after the first broadcast, misses the second and recovers it
        bob.leave(KEPT)
        await emitter.broadcast(KEPT, "missed")
        missed = message_of(alice, "missed")
    assert missed["offset"] == before["offset"] + 2
    reply = bob.request(f"roomAdd {KEPT} {before['offset'] + 1} {before['epoch']}")
    assert reply["data"] == {
        "recovered": True,
        "epoch": before["epoch"],
        "offset": before["offset"] + 2,
    }
    assert message_of(bob, "missed")["from"] == 0
    for client in (alice, bob):
        client.drain(0.3)
    assert [m["message"] for m in alice.chat(KEPT)] == ["hello", {"id": 42}, "missed"]
    assert [m["message"] for m in bob.chat(KEPT)] == ["hello", {"id": 42}, "missed"]


def test_a_sync_broadcast_into_a_history_room_takes_the_next_offset(cluster: Cluster) -> None:
    keep_history(cluster)
    cluster.start("emit-a")
    alice = cluster.client("emit-a")
    alice.join(KEPT)
    with SyncEmitter(
        cluster.redis_server.url,
        server_token=TOKEN,
        key_prefix=PREFIX,
        history_size=100,
        history_rooms=["kept-*"],
    ) as emitter:
        emitter.broadcast(KEPT, "first")
        emitter.broadcast(KEPT, "second")
    first, second = message_of(alice, "first"), message_of(alice, "second")
    assert (first["offset"], second["offset"]) == (1, 2)
    assert first["epoch"] == second["epoch"]
    history = alice.request(f"roomHistory {KEPT}")["data"]
    assert [(m["message"], m["offset"]) for m in history["messages"]] == [
        ("first", 1),
        ("second", 2),
    ]


def test_a_room_without_history_gets_the_plain_broadcast_and_no_history_key(
    cluster: Cluster,
) -> None:
    keep_history(cluster)
    cluster.start("emit-a")
    alice = cluster.client("emit-a")
    alice.join("plain-orders")
    with SyncEmitter.from_config(nodes_settings(cluster)) as emitter:
        emitter.broadcast("plain-orders", "unkept")
    said = alice.wait_chat(lambda m: m["room"] == "plain-orders")
    assert said["message"] == "unkept"
    assert set(said) == {"message", "room", "from", "context", "sentAt"}
    with cluster.redis() as redis:
        assert redis.exists(Keys(PREFIX).history("plain-orders")) == 0


def test_a_history_room_gets_the_broadcast_when_pubsub_is_another_redis(
    redis_server: RedisProcess, second_redis: RedisProcess, tmp_path: Path
) -> None:
    config = tmp_path / "roomcast.toml"
    apart = Cluster(redis_server, config, pubsub_server=second_redis)
    keep_history(apart)
    try:
        apart.start("emit-a")
        alice = apart.client("emit-a")
        alice.join(KEPT)
        alice.join("plain-orders")
        with SyncEmitter.from_config(nodes_settings(apart)) as emitter:
            emitter.broadcast(KEPT, "kept apart")
            emitter.broadcast("plain-orders", "plain apart")
        assert message_of(alice, "kept apart")["offset"] == 1
        assert alice.wait_chat(lambda m: m["room"] == "plain-orders")["message"] == "plain apart"
    finally:
        apart.close()


def test_from_config_needs_the_nodes_redis() -> None:
    with pytest.raises(ValueError, match="no redis_url"):
        SyncEmitter.from_config(Config())


def test_the_emitters_history_defaults_are_the_chat_settings_defaults() -> None:
    parameters = inspect.signature(Emitter).parameters
    chat = ChatSettings()
    for name in ("history_size", "history_ttl", "history_rooms"):
        expected = getattr(chat, name)
        default = parameters[name].default
        assert (list(default) if name == "history_rooms" else default) == expected, name
    assert inspect.signature(SyncEmitter).parameters == parameters
